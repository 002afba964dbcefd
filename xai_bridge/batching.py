"""Batching every model call: fixed chunks, chunk sizes tuned by measured speed, and the score tap.

:func:`batched` splits a call into chunks; :class:`BatchTuner` picks the
fastest chunk size from the first calls on the real inputs; :class:`ScoreTap`
keeps the outputs a method computes anyway for the unperturbed images, so
explicit targets need no prediction pass of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import ModelInputError, ParameterError

__all__ = ["BatchTuner", "ScoreTap", "batched"]


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
