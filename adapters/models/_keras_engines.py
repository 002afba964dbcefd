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

from ._keras_tf import TensorFlowRunner, flat, gradient_chunk

__all__ = ["TensorFlowEngine", "TorchEngine", "flat", "gradient_chunk"]


class _Recompute:
    """What a whole-model TensorFlow pass keeps for its backward: the inputs, not a tape.

    The backward runs the model again, one chunk at a time, each under its own
    non-persistent eager tape that is dropped before the next chunk: peak
    memory is one chunk's tape (what the Keras tutorial's own loop costs per
    chunk), whatever batch the gradient library hands over.
    """

    def __init__(self, fn: Any, x: np.ndarray) -> None:
        self.fn, self.x = fn, x


class TensorFlowEngine(TensorFlowRunner):
    """Calls and vector-Jacobian products on the TensorFlow backend (a :class:`TensorFlowRunner` with torch tensors).

    Args:
        chunk: images per gradient pass.
        compiled: compiled functions shared with the model's own runner (traced once).
    """

    device = torch.device("cpu")

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
