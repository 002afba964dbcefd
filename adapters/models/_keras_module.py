"""A Keras 3 model (TensorFlow or torch backend) as a torch module, gradients from the Keras backend.

Gradient methods and CAMs are written against torch modules (captum,
pytorch-grad-cam, torchcam). :class:`KerasModule` makes a Keras model one: a
torch ``autograd.Function`` whose forward calls the Keras model and whose
backward asks the Keras backend for the vector-Jacobian product
(``tf.GradientTape`` on TensorFlow, ``torch.autograd.grad`` on the model's own
graph on the torch backend). The torch libraries then run unchanged, with
every gradient computed by the framework that owns the model.

CAM layers: every top-level Keras layer with a 4-D output gets a placeholder
child module of the same name (``layer="block14_sepconv2_act"``). When such a
placeholder is hooked (a CAM library registered a hook on it), the forward
pass asks Keras for that layer's output as well, hands it (NHWC presented as
NCHW) to the placeholder, and routes the class scores through the hooked
tensor: the gradient a CAM reads there is ``d score / d layer output`` from
one Keras pass, the classic Keras Grad-CAM recipe. Unhooked placeholders cost
nothing.

TensorFlow 2.20+ wheels load with ``RTLD_GLOBAL``, and a later ``import
triton`` (which torch does lazily, e.g. through torchvision, which
pytorch-grad-cam imports) then crashes the interpreter (tensorflow#124205).
:func:`triton_before_tensorflow` loads triton first, or, when TensorFlow is
already loaded, with ``RTLD_DEEPBIND`` so that it binds its own LLVM; the
interpreter's dlopen flags are restored right after.

Nothing of the user's model is changed: no ``trainable`` flag, weight or
layer is touched, and every call runs with ``training=False``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_bridge._load_order import triton_before_tensorflow
from xai_bridge.errors import MethodNotApplicableError

from ._keras_engines import TensorFlowEngine, TorchEngine
from ._keras_tf import TensorFlowRunner, gradient_chunk, keras_backend

__all__ = ["KerasModule", "gradient_chunk", "spatial_layers", "triton_before_tensorflow"]


class _Box:
    """One Keras call shared by the two autograd functions of a forward pass."""

    def __init__(self, engine: Any, state: Any) -> None:
        self.engine, self.state = engine, state


class _Bridge(torch.autograd.Function):
    """Model inputs -> (cut layer outputs NCHW..., scores); backward: the Keras backend's VJP."""

    @staticmethod
    def forward(ctx: Any, box: _Box, x: torch.Tensor, *values: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        ctx.box, ctx.device, ctx.dtype = box, x.device, x.dtype
        ctx.set_materialize_grads(False)
        return tuple(v.clone() for v in values)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        box = ctx.box
        n = len(grads)
        if box.state is None or all(g is None for g in grads):
            return (None, None, *([None] * n))
        keras_grads = [g if i == n - 1 or g is None else g.permute(0, 2, 3, 1) for i, g in enumerate(grads)]
        (gx,) = box.engine.vjp(box.state, keras_grads, [box.engine.source(box.state, -1)])
        return (None, gx.to(ctx.device, ctx.dtype), *([None] * n))


class _Head(torch.autograd.Function):
    """(scores, hooked cut outputs...) -> scores; backward: ``d scores / d cut output`` for the hooks."""

    @staticmethod
    def forward(ctx: Any, box: _Box, scores: torch.Tensor, *cuts: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.box = box
        ctx.shapes = [(c.device, c.dtype) for c in cuts]
        ctx.set_materialize_grads(False)
        return scores.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        box = ctx.box
        if grad is None:
            return (None, None, *([None] * len(ctx.shapes)))
        wanted = [i for i, need in enumerate(ctx.needs_input_grad[2:]) if need]
        out: list[Any] = [None, grad, *([None] * len(ctx.shapes))]
        if wanted and box.state is not None:
            n = len(ctx.shapes)
            grads: list[torch.Tensor | None] = [None] * n + [grad]
            found = box.engine.vjp(box.state, grads, [box.engine.source(box.state, i) for i in wanted])
            for i, g in zip(wanted, found, strict=True):
                device, dtype = ctx.shapes[i]
                out[2 + i] = g.permute(0, 3, 1, 2).to(device, dtype)
        return tuple(out)


class _Cut(nn.Module):
    """Placeholder for one Keras layer's output (NCHW); CAM libraries hook it."""

    #: layers.py counts it as a spatial layer (it stands for a Keras conv feature map).
    spatial_layer = True

    def __init__(self, keras_name: str) -> None:
        super().__init__()
        self.keras_name = keras_name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output, unchanged (hooks see it here)."""
        return x

    def extra_repr(self) -> str:
        return repr(self.keras_name)


def _hooked(module: nn.Module) -> bool:
    hooks = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return not isinstance(module, _Cut) or any(getattr(module, h, None) for h in hooks)


def _reaches(start: Any, node: Any, limit: int = 256) -> bool:
    """Whether autograd node ``node`` is reachable from ``start`` (a small, bounded search)."""
    queue, seen = deque([start]), 0
    while queue and seen < limit:
        current = queue.popleft()
        seen += 1
        if current is node:
            return True
        if current is not None:
            queue.extend(nxt for nxt, _ in current.next_functions)
    return False


class KerasModule(nn.Module):
    """A Keras model as a torch module: its own inputs (e.g. NHWC floats) -> its outputs.

    Gradients come from the Keras backend (see the module docstring). The
    Keras model is held, not registered: torch state helpers never touch it.

    Args:
        model: a built Keras 3 model with one input and one output.
        memory_mb: memory one TensorFlow gradient pass may take (see
            :func:`gradient_chunk`); None: a quarter of the available memory, at most 512 MiB.
        runner: the model's own :class:`TensorFlowRunner`, whose chunk and
            compiled functions the gradient engine starts from (nothing traced twice).
    """

    def __init__(self, model: Any, memory_mb: float | None = None, runner: TensorFlowRunner | None = None) -> None:
        super().__init__()
        backend = keras_backend()
        triton_before_tensorflow()
        if backend == "tensorflow":
            if runner is None:
                runner = TensorFlowRunner(gradient_chunk(model, memory_mb))
            self._engine: Any = TensorFlowEngine(runner.chunk, runner.functions)
        else:
            self._engine = TorchEngine()
        self.__dict__["_keras_model"] = model
        # an empty parameter: torch libraries read a module's device from its first parameter
        self.device_anchor = nn.Parameter(torch.zeros(0, device=self._engine.device), requires_grad=False)
        self._graphs: dict[tuple[str, ...], Any] = {}
        for layer in spatial_layers(model):
            name = layer.name
            if "." not in name and name and not hasattr(self, name):
                self.add_module(name, _Cut(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        active = [(name, m) for name, m in self._modules.items() if m is not None and _hooked(m)]
        record = torch.is_grad_enabled()
        engine = self._engine
        fn = self._graph(tuple(name for name, _ in active))
        outs, state = engine.run(fn, x, record, whole=not active)
        values = [engine.to_torch(o).to(x.device) for o in outs]
        if len(values) != len(active) + 1 or values[-1].ndim != 2:
            shapes = [tuple(v.shape) for v in values[len(active) :]]
            raise MethodNotApplicableError(
                f"model: expected a Keras model with one output of shape (N, classes), got outputs {shapes}"
            )
        values[:-1] = [v.permute(0, 3, 1, 2).contiguous() for v in values[:-1]]
        box = _Box(engine, state)
        bridged = _Bridge.apply(box, x, *values)
        cuts = []
        for (name, module), raw in zip(active, bridged[:-1], strict=True):
            seen = module(raw)
            if not torch.equal(seen.detach(), raw.detach()):
                raise MethodNotApplicableError(
                    f"layer: the method changed the output of Keras layer {name!r}; xai-bridge cannot feed changed "
                    "activations back into a Keras model (use a gradient CAM such as gradcam.GradCAM)"
                )
            if seen.requires_grad and raw.requires_grad and _reaches(seen.grad_fn, raw.grad_fn):
                raise MethodNotApplicableError(
                    f"layer: gradients to the pixels through hooked Keras layer {name!r} are not supported; "
                    "gradient CAMs (which stop at the layer) and pixel-gradient methods work"
                )
            cuts.append(seen)
        return _Head.apply(box, bridged[-1], *cuts)

    @property
    def keras_model(self) -> Any:
        """The user's Keras model (held outside torch's module registry)."""
        return self.__dict__["_keras_model"]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs on a numpy batch of its inputs (no torch involved, nothing printed)."""
        return self._engine.predict(self.keras_model, x)

    def _graph(self, names: tuple[str, ...]) -> Any:
        model = self.keras_model
        if not names:
            return model
        if names not in self._graphs:
            import keras  # type: ignore[import-untyped]

            inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
            outputs = [model.get_layer(n).output for n in names] + list(model.outputs)
            self._graphs[names] = keras.Model(inputs, outputs)
        return self._graphs[names]

    @property
    def device(self) -> torch.device:
        """Where the Keras backend computes (CPU for TensorFlow here)."""
        return self._engine.device


def spatial_layers(model: Any) -> list[Any]:
    """Top-level layers of a functional model with one 4-D output (CAM layer candidates)."""
    try:
        model.inputs  # noqa: B018  subclassed models have no graph to cut
    except (AttributeError, ValueError):
        return []
    found = []
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ == "InputLayer" or len(getattr(layer, "_inbound_nodes", ())) != 1:
            continue
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            found.append(layer)
    return found
