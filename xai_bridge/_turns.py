"""Several explanations taking turns on the global random generators while they wait for remote answers.

The wrapped libraries draw from numpy's (and torch's) *global* generator in
between their model calls (shap's Partition breaks priority ties with
``np.random.randn()`` after every batch), and every seeded section holds
:data:`~xai_bridge._seeding.GLOBAL_RNG_LOCK` for its whole run. Explanations
of a remote model then run one after another even though they spend most of
their time waiting for the network.

:class:`Turns` runs each explanation in its own thread, holding the lock
while its library computes; a call that waits for the network (wrapped with
:meth:`Turns.offload`) hands the lock and the generators over to the next
explanation and takes its own generators' states back when it resumes. Each
explanation therefore draws exactly the numbers it would draw alone, and
their requests are in flight together.
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
        slow_caption = turns.offload(captioner.caption)  # hands the turn over while waiting
        results = turns.map(lambda img: explain(model_of(img, slow_caption), img), images)
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        self._cond = threading.Condition(GLOBAL_RNG_LOCK)
        self._waiters: ThreadPoolExecutor | None = None
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

        self._waiters = ThreadPoolExecutor(self.workers, thread_name_prefix="xai-bridge-wait")
        try:
            with ThreadPoolExecutor(self.workers, thread_name_prefix="xai-bridge-turn") as pool:
                # each job sees the caller's context (its progress bar), in a copy of its own
                futures = [pool.submit(contextvars.copy_context().run, job, item) for item in items]
                errors = [f.exception() for f in futures]
        finally:
            self._waiters.shutdown(wait=True)
            self._waiters = None
            with GLOBAL_RNG_LOCK:
                _set_rng_states(start)
        for error in errors:
            if error is not None:
                raise error
        return [f.result() for f in futures]

    def offload(self, fn: Callable[..., T]) -> Callable[..., T]:
        """``fn`` run on a helper thread while the calling job gives up its turn (outside :meth:`map`: ``fn``)."""

        def call(*args: Any, **kwargs: Any) -> T:
            waiters = self._waiters
            if waiters is None or not getattr(self._local, "in_turn", False):
                return fn(*args, **kwargs)
            mine = _rng_states()
            future: Future[T] = waiters.submit(fn, *args, **kwargs)
            future.add_done_callback(self._wake)
            self._cond.wait_for(future.done)  # releases the lock (all levels) until the answer is in
            _set_rng_states(mine)
            return future.result()

        return call

    def _wake(self, _: Future[Any]) -> None:
        with self._cond:
            self._cond.notify_all()
