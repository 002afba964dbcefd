"""Batching every model call: fixed chunks, chunk sizes tuned by measured speed, and the score tap.

:func:`batched` splits a call into chunks; :class:`BatchTuner` picks the
fastest chunk size from the first calls on the real inputs; :class:`ScoreTap`
keeps the outputs a method computes anyway for the unperturbed images, so
explicit targets need no prediction pass of their own; :func:`merged_calls`
runs several per-image explainers at once and merges their model calls into
shared forward passes.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ._seeding import GLOBAL_RNG_LOCK
from .errors import ModelInputError, ParameterError

__all__ = ["BatchTuner", "ScoreTap", "batched", "merged_calls"]

_T = TypeVar("_T")
Predict = Callable[[np.ndarray], np.ndarray]


class ScoreTap:
    """Keeps the outputs a method computes anyway for the unperturbed images.

    Most methods evaluate the image itself once (a CAM's forward pass,
    captum's Saliency, LIME's first sample, shap's full coalition). When the
    targets are given, :func:`~xai_bridge.explain` reads the target scores
    from those outputs instead of running a separate prediction pass. Rows
    are matched by a pixel sum on a grid and then by equality, so perturbed
    images never match; the first output seen for an image wins.

    Args:
        images: the uint8 ``(N, H, W, 3)`` images being explained.
    """

    #: Pixel sums are taken on this grid of rows and columns (a cheap pre-filter; equality decides).
    STRIDE = 4

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._keys = self.keys(images)
        self.outputs: dict[int, np.ndarray] = {}

    @classmethod
    def keys(cls, batch: np.ndarray) -> np.ndarray:
        """Pixel sums of uint8 NHWC images on the ``STRIDE`` grid."""
        return batch[:, :: cls.STRIDE, :: cls.STRIDE].reshape(len(batch), -1).sum(axis=1, dtype=np.int64)

    @property
    def complete(self) -> bool:
        """Whether every image's outputs were seen."""
        return len(self.outputs) == len(self.images)

    def candidates(self, keys: np.ndarray) -> list[tuple[int, int]]:
        """``(row, image)`` pairs whose pixel sums match an image not seen yet."""
        pairs = []
        for row, key in enumerate(np.asarray(keys).tolist()):
            for i in np.flatnonzero(self._keys == round(key)).tolist():
                if i not in self.outputs:
                    pairs.append((row, i))
        return pairs

    def seen(self, image: int) -> bool:
        """Whether image ``image``'s outputs were recorded."""
        return image in self.outputs

    def record(self, image: int, outputs: Any) -> None:
        """Record the outputs of image ``image`` (the first record wins)."""
        self.outputs.setdefault(image, np.array(outputs, np.float32))

    def offer(self, batch: np.ndarray, outputs: np.ndarray) -> None:
        """Record ``outputs`` rows whose uint8 NHWC ``batch`` row equals an image."""
        if self.complete or batch.shape[1:] != self.images.shape[1:] or batch.dtype != np.uint8:
            return
        for row, i in self.candidates(self.keys(batch)):
            if not self.seen(i) and np.array_equal(batch[row], self.images[i]):
                self.record(i, outputs[row])

    def scores(self, targets: np.ndarray) -> np.ndarray | None:
        """``(N, T)`` outputs at ``targets`` when every image was seen, else None."""
        if not self.complete:
            return None
        rows = np.stack([self.outputs[i] for i in range(len(self.images))])
        return np.take_along_axis(rows, targets, axis=1)


def batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int) -> np.ndarray:
    """Call ``fn`` on ``images`` in chunks of ``batch_size`` and concatenate."""
    if batch_size <= 0:
        raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
    outs = [np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return _stack_outputs(outs, len(images))


class BatchTuner:
    """Chooses the chunk size of batched model calls by measured speed, at no extra cost.

    Per image, a model is often fastest at a batch size well below the largest
    that fits (on CPUs, caches: EfficientNet-Lite0 runs ~1.3x faster per image
    at 4-8 than at 50), or at the largest (GPUs). The first calls for an input
    shape run chunks of each size (1, 2, 4, ... up to ``largest``, taking
    turns) on the real inputs, ``repeats`` full chunks each, and time them (the fastest of
    a size's chunks counts: the first call at a new size pays for memory
    allocation); from then on the size with the fastest time per image is
    used, the larger of sizes within 5% of each other. Nothing is evaluated
    twice.
    A chunk that runs out of memory lowers ``largest`` to half its size and is
    retried.

    Args:
        largest: the largest chunk (the model's ``batch_size``).
        repeats: timed chunks per size (the fastest counts).
        is_oom: whether an exception means "out of memory" (default: MemoryError,
            or a RuntimeError saying "out of memory", as torch raises).
        clock: seconds counter (tests pass a fake one).
    """

    def __init__(
        self,
        largest: int,
        repeats: int = 3,
        is_oom: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if int(largest) <= 0:
            raise ParameterError(f"largest: expected a positive integer, got {largest}")
        self.largest = int(largest)
        self.repeats = int(repeats)
        self.is_oom = is_oom or _is_oom
        self.clock = clock
        self._times: dict[tuple[int, ...], dict[int, list[float]]] = {}
        self._chosen: dict[tuple[int, ...], int] = {}

    def chosen(self, shape: Sequence[int]) -> int | None:
        """The chunk size chosen for inputs of ``shape`` (one item), None while still timing."""
        return self._chosen.get(tuple(shape))

    def _sizes(self) -> list[int]:
        sizes, b = [], 1
        while b < self.largest:
            sizes.append(b)
            b *= 2
        return [*sizes, self.largest]

    def _next(self, key: tuple[int, ...]) -> int:
        if key in self._chosen:
            return min(self._chosen[key], self.largest)
        times = self._times.setdefault(key, {})
        # round robin (1, 2, 4, ..., 1, 2, 4, ...): a drift of the machine's speed hits every size alike
        pending = [(len(times.get(size, ())), size) for size in self._sizes()]
        fewest = min(pending)
        if fewest[0] < self.repeats:
            return fewest[1]
        fastest = {size: min(ts) for size, ts in times.items() if ts and size <= self.largest}
        best = min(fastest.values())
        # ties (within 5%, below timing noise) go to the larger size: fewer calls, less per-call overhead
        chosen = max(size for size, t in fastest.items() if t <= best * 1.05)
        self._chosen[key] = chosen
        return chosen

    def __call__(self, fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
        """``fn`` over ``images`` in tuned chunks, outputs concatenated as :func:`batched` does."""
        key = tuple(images.shape[1:])
        outs: list[np.ndarray] = []
        start = 0
        while start < len(images):
            size = self._next(key)
            chunk = images[start : start + size]
            began = self.clock()
            try:
                out = np.asarray(fn(chunk))
            except Exception as exc:
                if size > 1 and self.is_oom(exc):
                    self.largest = max(1, size // 2)
                    self._chosen.pop(key, None)
                    continue
                raise
            if key not in self._chosen and len(chunk) == size:
                self._times[key].setdefault(size, []).append((self.clock() - began) / size)
            outs.append(out)
            start += len(chunk)
        return _stack_outputs(outs, len(images))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _stack_outputs(outs: list[np.ndarray], n: int) -> np.ndarray:
    out = np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != n:
        raise ModelInputError(f"model: expected outputs of shape (N={n}, outputs), got {out.shape}")
    return out.astype(np.float32, copy=False)


#: Seconds :func:`merged_calls` waits for a further call before running the calls pending without
#: the jobs still busy: a safety net for a job that stops calling for long. Not reached in normal runs,
#: and better not: a model call overlapping with the jobs' Python waits for the interpreter lock at
#: every layer (EfficientNet-Lite0 on 2 cores ran 2x slower with a 50 ms wait).
MERGE_WAIT = 0.5
#: Jobs :func:`merged_calls` runs at once (more only make one merged call larger).
MERGE_JOBS = 32


def merged_calls(
    predict: Predict,
    jobs: Sequence[Callable[[Predict], _T]],
    numpy_seeds: Sequence[int] | None = None,
    wait: float | None = None,
    max_jobs: int = MERGE_JOBS,
) -> list[_T]:
    """Run ``jobs`` concurrently, merging their ``predict`` calls into shared model calls.

    Some methods evaluate the model in rounds that depend on the previous
    round's outputs (shap's Partition explainer asks for a few images at a
    time), so one image's calls cannot be batched with each other; the calls
    of different images can. Each job runs in a thread and is handed a
    ``predict`` of its own; a call waits until every running job has a call
    pending (or no further call came for ``wait`` seconds), then the calling
    thread runs ``predict`` once on the pending images, concatenated, and
    each job gets its rows back. The model is only ever called from the
    calling thread.

    Between their calls the jobs run one at a time (they are Python code,
    serialised by the interpreter anyway), so with ``numpy_seeds`` each job
    sees numpy's global generator seeded with its seed and advanced by its own
    draws only: the same draws as a job run alone under
    :func:`~xai_bridge._seeding.numpy_seeded`. The calling thread holds
    :data:`~xai_bridge._seeding.GLOBAL_RNG_LOCK` throughout and the global
    state is restored after. So results equal those of the jobs run one after
    another, bit for bit when the model's outputs for an image do not depend on
    the other images of its batch.

    Args:
        predict: the model call, uint8 NHWC -> ``(N, outputs)``.
        jobs: callables taking their ``predict``; their results are returned in order.
        numpy_seeds: one seed per job for numpy's global generator, or None (not seeded).
        wait: seconds without a new call after which the pending calls run anyway
            (default :data:`MERGE_WAIT`).
        max_jobs: jobs running at once; the others start as running ones finish.

    Returns:
        The jobs' results, in the order of ``jobs``.
    """
    if numpy_seeds is not None and len(numpy_seeds) != len(jobs):
        raise ParameterError(f"numpy_seeds: expected {len(jobs)} seeds, one per job, got {len(numpy_seeds)}")
    with GLOBAL_RNG_LOCK:
        saved = np.random.get_state()
        try:
            patience = MERGE_WAIT if wait is None else float(wait)
            return _Merger(predict, jobs, numpy_seeds, patience, max(1, int(max_jobs))).run()
        finally:
            np.random.set_state(saved)


class _Aborted(Exception):
    """Raised inside a job's ``predict`` when another job or the model failed."""


class _Merger:
    """The state of one :func:`merged_calls` run: pending calls, their results, the baton."""

    def __init__(
        self,
        predict: Predict,
        jobs: Sequence[Callable[[Predict], Any]],
        seeds: Sequence[int] | None,
        wait: float,
        max_jobs: int,
    ) -> None:
        self.predict = predict
        self.jobs = list(jobs)
        self.seeds = seeds
        self.wait = float(wait)
        self.workers = min(len(self.jobs), max_jobs)
        self.results: list[Any] = [None] * len(self.jobs)
        self.cond = threading.Condition()  # guards everything below but the baton and rng
        self.pending: dict[int, np.ndarray] = {}
        self.answers: dict[int, np.ndarray | None] = {}  # None: the call was aborted
        self.running = 0
        self.next_job = 0
        self.failure: BaseException | None = None
        self.baton = threading.Lock()  # held by the one job running Python between its calls
        self.rng: dict[int, Any] = {}

    def run(self) -> list[Any]:
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
        self.running = len(threads)
        for thread in threads:
            thread.start()
        try:
            self._serve()
        except BaseException as exc:  # the model failed, or an interrupt: stop the jobs at their next call
            self._fail(exc)
        finally:
            for thread in threads:
                thread.join()
        if self.failure is not None:
            raise self.failure
        return self.results

    def _fail(self, exc: BaseException, calls: Sequence[int] = ()) -> None:
        """Record the first failure and abort ``calls`` and every pending call."""
        with self.cond:
            self.failure = self.failure or exc
            self.answers.update(dict.fromkeys([*calls, *self.pending]))
            self.pending.clear()
            self.cond.notify_all()

    def _serve(self) -> None:
        """The calling thread: run the pending calls as one model call until every job is done."""
        while True:
            with self.cond:
                while self.running and len(self.pending) < self.running:
                    seen = len(self.pending)
                    if not self.cond.wait(self.wait) and self.pending and len(self.pending) == seen:
                        break  # no new call within `wait`: run what is pending
                if not self.pending:
                    return  # every job is done
                calls = dict(sorted(self.pending.items()))
                self.pending.clear()
            sizes = [len(v) for v in calls.values()]
            try:
                out = np.asarray(self.predict(np.concatenate(list(calls.values()), axis=0)))
                if len(out) != sum(sizes):
                    raise ModelInputError(f"model: expected one output row per image ({sum(sizes)}), got {len(out)}")
            except BaseException as exc:
                self._fail(exc, list(calls))
                return
            rows = np.split(out, np.cumsum(sizes)[:-1])
            with self.cond:
                self.answers.update(zip(calls, rows, strict=True))
                self.cond.notify_all()

    def _work(self) -> None:
        """A worker thread: run jobs one after another, holding the baton except inside model calls."""
        try:
            while True:
                with self.cond:
                    if self.failure is not None or self.next_job >= len(self.jobs):
                        return
                    job, self.next_job = self.next_job, self.next_job + 1
                self._take(job, fresh=True)
                try:
                    self.results[job] = self.jobs[job](functools.partial(self._call, job))
                except _Aborted:
                    pass
                except BaseException as exc:
                    self._fail(exc)
                finally:
                    self._give(job)
        finally:
            with self.cond:
                self.running -= 1
                self.cond.notify_all()

    def _take(self, job: int, fresh: bool = False) -> None:
        """Take the baton and install the job's state of numpy's global generator."""
        self.baton.acquire()
        if self.seeds is not None:
            if fresh:
                np.random.seed(int(self.seeds[job]) % 2**32)
            else:
                np.random.set_state(self.rng[job])

    def _give(self, job: int) -> None:
        """Save the job's generator state and hand the baton on."""
        if self.seeds is not None:
            self.rng[job] = np.random.get_state()
        self.baton.release()

    def _call(self, job: int, images: np.ndarray) -> np.ndarray:
        """A job's model call: queue the images, wait for the merged call's rows."""
        self._give(job)
        try:
            with self.cond:
                if self.failure is not None:
                    raise _Aborted
                self.pending[job] = np.asarray(images)
                self.cond.notify_all()
                while job not in self.answers:
                    self.cond.wait()
                out = self.answers.pop(job)
            if out is None:
                raise _Aborted
            return out
        finally:
            self._take(job)
