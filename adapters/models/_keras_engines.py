"""How a Keras model is called and differentiated on each Keras backend, and how much at once.

:class:`~._keras_module.KerasModule` bridges torch autograd to one of these
engines: :class:`TensorFlowEngine` (``tf.GradientTape``) or
:class:`TorchEngine` (the model's own torch graph on Keras' torch backend).
On TensorFlow a whole-model gradient keeps no tape in the forward pass; the
backward recomputes chunk by chunk, each under its own non-persistent eager
tape (the Keras tutorial's own recipe), so memory is one chunk's tape, and
:func:`gradient_chunk` picks that chunk from a memory budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["TensorFlowEngine", "TorchEngine", "flat", "gradient_chunk"]

#: Bytes an eager tape keeps per activation element (the output and what the next op saves of it, float32).
_TAPE_BYTES_PER_VALUE = 8


class _Recompute:
    """What a whole-model TensorFlow pass keeps for its backward: the inputs, not a tape.

    The backward runs the model again, one chunk at a time, each under its own
    non-persistent eager tape that is dropped before the next chunk: peak
    memory is one chunk's tape (what the Keras tutorial's own loop costs per
    chunk), whatever batch the gradient library hands over.
    """

    def __init__(self, fn: Any, x: np.ndarray) -> None:
        self.fn, self.x = fn, x


class TensorFlowEngine:
    """Calls and vector-Jacobian products on the TensorFlow backend."""

    device = torch.device("cpu")

    def __init__(self, chunk: int) -> None:
        self._compiled: dict[tuple[Any, ...], Any] = {}
        #: Images per TensorFlow pass on the gradient path (halved on out-of-memory).
        self.chunk = chunk

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

    def run(self, fn: Any, x: torch.Tensor, record: bool, whole: bool) -> tuple[list[Any], Any]:
        import tensorflow as tf  # type: ignore[import-untyped]

        xn = x.detach().cpu().numpy()
        if whole:  # outputs without a tape, in chunks; the backward recomputes (see _Recompute)
            compiled = self.compiled(fn, tf.convert_to_tensor(xn[:1]))
            parts = self.chunked(len(xn), lambda a, b: [np.asarray(o) for o in flat(compiled(xn[a:b]))])
            outs = [np.concatenate(column) for column in zip(*parts, strict=True)]
            return outs, _Recompute(fn, xn) if record else None
        xt = tf.convert_to_tensor(xn)
        if not record:
            return flat(fn(xt, training=False)), None
        tape = tf.GradientTape(persistent=True)  # the cut layers' and the pixels' VJPs may both be asked for
        with tape:
            tape.watch(xt)
            outs = flat(fn(xt, training=False))
        return outs, (tape, xt, outs)

    def chunked(self, n: int, work: Any) -> list[Any]:
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

    def to_torch(self, value: Any) -> torch.Tensor:
        return torch.from_numpy(np.array(value, dtype=np.float32))

    def vjp(self, state: Any, grads: Sequence[torch.Tensor | None], sources: Sequence[Any]) -> list[torch.Tensor]:
        import tensorflow as tf  # type: ignore[import-untyped]

        if isinstance(state, _Recompute):
            return [self._recomputed_vjp(state, grads)]
        tape, _, outs = state
        pairs = [(o, g) for o, g in zip(outs, grads, strict=True) if g is not None]
        found = tape.gradient(
            [o for o, _ in pairs],
            list(sources),
            output_gradients=[tf.convert_to_tensor(g.detach().cpu().numpy()) for _, g in pairs],
            unconnected_gradients=tf.UnconnectedGradients.ZERO,
        )
        return [self.to_torch(f) for f in found]

    def _recomputed_vjp(self, state: _Recompute, grads: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """D outputs / d inputs, one chunk per eager non-persistent tape (released before the next)."""
        import tensorflow as tf  # type: ignore[import-untyped]

        given = [(i, g.detach().cpu().numpy()) for i, g in enumerate(grads) if g is not None]

        def chunk(a: int, b: int) -> np.ndarray:
            xt = tf.convert_to_tensor(state.x[a:b])
            with tf.GradientTape() as tape:
                tape.watch(xt)
                outs = flat(state.fn(xt, training=False))
            found = tape.gradient(
                [outs[i] for i, _ in given],
                xt,
                output_gradients=[tf.convert_to_tensor(g[a:b]) for _, g in given],
                unconnected_gradients=tf.UnconnectedGradients.ZERO,
            )
            return np.asarray(found, np.float32)

        return torch.from_numpy(np.concatenate(self.chunked(len(state.x), chunk)))

    def source(self, state: Any, index: int) -> Any:
        if isinstance(state, _Recompute):
            return None
        return state[1] if index < 0 else state[2][index]


class TorchEngine:
    """Calls and vector-Jacobian products on Keras' torch backend (the model's own autograd graph)."""

    def __init__(self) -> None:
        from keras.src.backend.torch.core import get_device  # type: ignore[import-untyped]

        self.device = torch.device(get_device())

    def predict(self, fn: Any, x: np.ndarray) -> np.ndarray:
        """Outputs of ``fn`` on a numpy batch."""
        with torch.no_grad():
            (out,) = flat(fn(torch.from_numpy(x).to(self.device), training=False))
        return out.detach().float().cpu().numpy()

    def run(self, fn: Any, x: torch.Tensor, record: bool, whole: bool) -> tuple[list[Any], Any]:
        xt = x.detach().to(self.device).clone().requires_grad_(record)
        with torch.enable_grad() if record else torch.no_grad():
            outs = flat(fn(xt, training=False))
        return outs, (xt, outs) if record else None

    def to_torch(self, value: Any) -> torch.Tensor:
        return value.detach().float()

    def vjp(self, state: Any, grads: Sequence[torch.Tensor | None], sources: Sequence[Any]) -> list[torch.Tensor]:
        _, outs = state
        pairs = [(o, g.to(o.device)) for o, g in zip(outs, grads, strict=True) if g is not None]
        found = torch.autograd.grad(
            [o for o, _ in pairs], list(sources), [g for _, g in pairs], allow_unused=True, materialize_grads=True
        )
        return [f.detach() for f in found]

    def source(self, state: Any, index: int) -> Any:
        return state[0] if index < 0 else state[1][index]


def flat(out: Any) -> list[Any]:
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
