"""Several explanations taking turns on the global random generators while they wait for remote answers.

The wrapped libraries draw from numpy's (and torch's) *global* generator in
between their model calls (shap's Partition breaks priority ties with
``np.random.randn()`` after every batch), and every seeded section holds
:data:`~xai_bridge._seeding.GLOBAL_RNG_LOCK` for its whole run. Explanations
of a remote model then run one after another even though they spend most of
their time waiting for the network.

:class:`Turns` runs each explanation in its own thread, holding the lock
while its library computes; a job that waits for the network
(:meth:`Turns.wait` on a future a remote client returned, or a blocking call
wrapped with :meth:`Turns.offload`) hands the lock and the generators over to
the next explanation and takes its own generators' states back when it
resumes. Each explanation therefore draws exactly the numbers it would draw
alone, and their requests are in flight together. Turns only decides whose
turn it is on the CPU; how many requests are in flight is the remote
client's decision (its own pool).
"""

from __future__ import annotations

import contextvars
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from ._seeding import GLOBAL_RNG_LOCK

__all__ = ["Turns"]

T = TypeVar("T")


def _rng_states() -> tuple[Any, Any]:
    """The global states: numpy's and,, when torch is loaded, torch's CPU generator state."""
    torch = sys.modules.get("torch")
    return np.random.get_state(), (torch.get_rng_state() if torch is not None else None)


def _set_rng_states(states: tuple[Any, Any]) -> None:
    np.random.set_state(states[0])
    torch = sys.modules.get("torch")
    if torch is not None and states[1] is not None:
        torch.set_rng_state(states[1])


class Turns:
    """Run jobs concurrently, one at a time on the CPU side, each with its own global random streams.

    Args:
        workers: jobs run at once (each holds its own thread).

    Example::

        turns = Turns(workers=4)
        ask = lambda batch: turns.wait(captioner.submit(batch))  # hands the turn over while waiting
        results = turns.map(lambda img: explain(model_of(img, ask), img), images)
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._cond = threading.Condition(GLOBAL_RNG_LOCK)
        self._running = False  # inside map()
        self._waiters: ThreadPoolExecutor | None = None  # runs offload()ed calls, made on first use
        self._lock = threading.Lock()
        self._local = threading.local()  # .in_turn: whether this thread is a job holding its turn

    def map(self, fn: Callable[[Any], T], items: Sequence[Any]) -> list[T]:
        """``[fn(item) for item in items]``, the calls taking turns; the first failure (in order) is raised.

        Every job starts with the global generators as they are now, and they
        are put back afterwards, so each result is the one a lone call gives.
        """
        with GLOBAL_RNG_LOCK:
            start = _rng_states()
        if len(items) <= 1 or self.workers == 1:
            return [fn(item) for item in items]

        def job(item: Any) -> T:
            with self._cond:
                _set_rng_states(start)
                self._local.in_turn = True
                try:
                    return fn(item)
                finally:
                    self._local.in_turn = False

        self._running = True
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="xai-bridge-turn") as pool:
                # each job sees the caller's context (its progress bar), in a copy of its own
                futures = [pool.submit(contextvars.copy_context().run, job, item) for item in items]
                errors = [f.exception() for f in futures]
        finally:
            self._running = False
            with self._lock:
                waiters, self._waiters = self._waiters, None
            if waiters is not None:
                waiters.shutdown(wait=True)
            with GLOBAL_RNG_LOCK:
                _set_rng_states(start)
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def offload(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` run on a helper thread while the calling job gives up its turn (outside :meth:`map`: ``fn``).

        For blocking calls that offer no future; a client that returns one
        (``submit``) is waited on with :meth:`wait` instead, with no helper thread.
        """

        def call(*args: Any, **kwargs: Any) -> T:
            if not self._in_turn():
                return fn(*args, **kwargs)
            with self._lock:
                if self._waiters is None:
                    self._waiters = ThreadPoolExecutor(self.workers, thread_name_prefix="xai-bridge-wait")
                waiters = self._waiters
            return self.wait(waiters.submit(fn, *args, **kwargs))

        return call

    def wait(self, future: Future[T]) -> T:
        """``future.result()``, the calling job giving up its turn until the future is done (outside :meth:`map`: a plain wait)."""
        if not self._in_turn():
            return future.result()
        mine = _rng_states()
        future.add_done_callback(self._wake)
        self._cond.wait_for(future.done)  # releases the lock (all levels) until the answer is in
        _set_rng_states(mine)
        return future.result()

    def _in_turn(self) -> bool:
        return self._running and getattr(self._local, "in_turn", False)

    def _wake(self, _: Future[Any]) -> None:
        with self._cond:
            self._cond.notify_all()
