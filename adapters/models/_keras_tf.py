"""A Keras model called on the TensorFlow backend without torch: compiled calls, chunks from a memory budget.

:class:`~.keras.KerasModel` predicts through :class:`TensorFlowRunner`, and a
Keras model's Integrated Gradients run on it in TensorFlow alone
(:mod:`xai_bridge.adapters.methods._keras_ig`), so neither imports torch
(~500 MiB of resident memory for a CUDA build, more than the gradient pass
of a large Keras model). The torch bridge
(:class:`~._keras_engines.TensorFlowEngine`) extends the same runner and
shares its compiled functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from xai_bridge.errors import MethodNotApplicableError

__all__ = ["TensorFlowRunner", "flat", "gradient_chunk", "keras_backend"]

T = TypeVar("T")

#: Bytes an eager tape keeps per activation element (the output and what the next op saves of it, float32).
_TAPE_BYTES_PER_VALUE = 8


def keras_backend() -> str:
    """Keras' backend, ``"tensorflow"`` or ``"torch"``; any other is refused in one line (gradients need one)."""
    import keras  # type: ignore[import-untyped]

    backend = str(keras.backend.backend())
    if backend not in ("tensorflow", "torch"):
        raise MethodNotApplicableError(
            f"model: gradients of Keras models need the tensorflow or torch backend, got {backend!r}; set "
            "KERAS_BACKEND=tensorflow (perturbation methods work on any backend through xai_bridge.ArrayModel)"
        )
    return backend


class TensorFlowRunner:
    """Compiled calls of Keras models on TensorFlow, and work in chunks that halve on out-of-memory.

    Args:
        chunk: images per gradient pass (see :func:`gradient_chunk`).
        compiled: a cache of compiled functions to share with another runner.
    """

    def __init__(self, chunk: int, compiled: dict[tuple[Any, ...], Any] | None = None) -> None:
        self._compiled: dict[tuple[Any, ...], Any] = {} if compiled is None else compiled
        #: Images per TensorFlow pass on the gradient path (halved on out-of-memory).
        self.chunk = chunk

    @property
    def functions(self) -> dict[tuple[Any, ...], Any]:
        """The compiled functions by model, input shape and dtype (share it: ``TensorFlowRunner(chunk, functions)``)."""
        return self._compiled

    def compiled(self, fn: Any, example: Any) -> Any:
        """``fn`` as a ``tf.function`` over any batch size (a few times faster per call than eager Keras).

        Only for calls without a tape: a tape sees a compiled call as one op
        and keeps every intermediate of it (about twice an eager tape's
        memory), and the gradient between two of its outputs (a cut layer and
        the scores) would be lost.
        """
        import tensorflow as tf  # type: ignore[import-untyped]

        key = (id(fn), tuple(example.shape[1:]), str(example.dtype))
        if key not in self._compiled:
            spec = tf.TensorSpec([None, *example.shape[1:]], tf.as_dtype(example.dtype))
            self._compiled[key] = (fn, tf.function(lambda a: fn(a, training=False), input_signature=[spec]))
        return self._compiled[key][1]

    def predict(self, fn: Any, x: np.ndarray) -> np.ndarray:
        """Outputs of ``fn`` on a numpy batch, without torch (no torch op between TensorFlow calls)."""
        import tensorflow as tf  # type: ignore[import-untyped]

        xt = tf.convert_to_tensor(x)
        (out,) = flat(self.compiled(fn, xt)(xt))
        return np.asarray(out, np.float32)

    def chunked(self, n: int, work: Callable[[int, int], T]) -> list[T]:
        """``work(start, stop)`` over ``range(n)`` in chunks of ``self.chunk``, halved on out-of-memory."""
        import tensorflow as tf  # type: ignore[import-untyped]

        parts, start = [], 0
        while start < n:
            size = self.chunk
            try:
                parts.append(work(start, min(n, start + size)))
            except (tf.errors.ResourceExhaustedError, MemoryError):
                if size == 1:
                    raise
                self.chunk = size // 2
                continue
            start += size
        return parts


def flat(out: Any) -> list[Any]:
    """A model's outputs as a list (a dict's values, a tuple's items, or the one output)."""
    if isinstance(out, dict):
        out = list(out.values())
    return list(out) if isinstance(out, (list, tuple)) else [out]


def gradient_chunk(model: Any, memory_mb: float | None = None) -> int:
    """Images per TensorFlow gradient pass so that one pass's tape fits in ``memory_mb``.

    A tape keeps every layer's activations of the chunk, so its size is
    estimated from the layers' output shapes (as ``BatchTuner`` picks chunks
    from measured time, this picks them from memory); the chunk is then
    halved whenever TensorFlow runs out of memory anyway.

    Args:
        model: the Keras model.
        memory_mb: the budget; None: a quarter of the available memory, at most 512 MiB.
    """
    budget = (memory_mb if memory_mb is not None else min(512.0, _available_mb() / 4)) * 2**20
    per_image = 0
    for layer in getattr(model, "layers", []):
        try:
            shapes = [tuple(o.shape) for o in flat(layer.output)]
        except (AttributeError, ValueError):
            return 1 if memory_mb is None else max(1, int(memory_mb // 256))  # no graph: a cautious guess
        per_image += sum(int(np.prod([d or 1 for d in s[1:]])) for s in shapes)
    return max(1, min(256, int(budget // max(1, per_image * _TAPE_BYTES_PER_VALUE))))


def _available_mb() -> float:
    """MemAvailable in MiB (4 GiB where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as lines:
            for line in lines:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 4096.0
