"""Running one pytorch-grad-cam class with raw maps: the subclass keeping them, and per-class hooks.

Each class is subclassed to keep the per-layer CAM its ``get_cam_image``
returns (FullGrad: the sum of its per-layer maps); the runner applies the
library's own ReLU and upsampling and skips its min-max scaling. What differs
between classes (AblationCAM's ablation layer, FinerCAM's wrapper and call,
FullGrad's maps already at image size) is a hook in the class's record
(:class:`~xai_bridge.adapters.methods.gradcam.METHODS`), not a branch on its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from xai_bridge.contract import ExplainRequest

    from .._layers import TargetLayer

#: The target-layer params every layer method takes.
LAYER_PARAMS = {"layer": None, "reshape_transform": None}

__all__ = [
    "LAYER_PARAMS",
    "Build",
    "Explain",
    "Runner",
    "build_ablation",
    "build_finer",
    "enter",
    "finer_maps",
    "import_library",
    "upsample",
]

#: Constructs a class: ``build(name, net, layers, reshape, ctor) -> (called object, CAM object keeping raw maps)``.
Build = Callable[[str, Any, list[Any], Any, dict[str, Any]], tuple[Any, Any]]
#: Raw maps ``(n, H, W)`` of a class called its own way: ``explain(runner, x, targets)``.
Explain = Callable[["Runner", Any, np.ndarray], np.ndarray]


def raw_class(base: Any) -> type:
    """``base`` keeping the raw per-layer CAM of each call in ``raw_cams``, on float32 activations.

    A half-precision (bfloat16, float16) model's activations and gradients are
    cast to float32 before the library turns them into numpy arrays (numpy has
    no bfloat16, and the library's ``.numpy()`` raised on them).
    """
    from pytorch_grad_cam import FullGrad

    def compute_cam_per_layer(self: Any, *args: Any, **kwargs: Any) -> Any:
        hooks = self.activations_and_grads
        hooks.activations = [_float32(a) for a in hooks.activations]
        hooks.gradients = [_float32(g) for g in hooks.gradients]
        return base.compute_cam_per_layer(self, *args, **kwargs)

    if issubclass(base, FullGrad):

        def aggregate_multi_layers(self: Any, cam_per_target_layer: np.ndarray) -> np.ndarray:
            self.raw_cams.append(np.sum(cam_per_target_layer, axis=1))
            return base.aggregate_multi_layers(self, cam_per_target_layer)

        def get_bias_data(self: Any, layer: Any) -> Any:
            return _float32(base.get_bias_data(self, layer))

        methods = {
            "aggregate_multi_layers": aggregate_multi_layers,
            "compute_cam_per_layer": compute_cam_per_layer,
            "get_bias_data": get_bias_data,
        }
        return type(f"Raw{base.__name__}", (base,), methods)

    def get_cam_image(self: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        cam = base.get_cam_image(self, *args, **kwargs)
        self.raw_cams.append(np.asarray(cam, dtype=np.float32))
        return cam

    methods = {"get_cam_image": get_cam_image, "compute_cam_per_layer": compute_cam_per_layer}
    return type(f"Raw{base.__name__}", (base,), methods)


def _float32(tensor: Any) -> Any:
    """A half-precision tensor as float32 (differentiably); any other value as it is."""
    import torch

    if isinstance(tensor, torch.Tensor) and tensor.dtype in (torch.bfloat16, torch.float16):
        return tensor.float()
    return tensor


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The library's ReLU and resize without its min-max: ``(n, h, w)`` -> ``(n, H, W)``."""
    import cv2

    height, width = size
    return np.stack([cv2.resize(np.maximum(c, 0).astype(np.float32), (width, height)) for c in cam])


def build(name: str, net: Any, layers: list[Any], reshape: Any, ctor: dict[str, Any]) -> tuple[Any, Any]:
    """The default :data:`Build`: the library class of that name, keeping raw maps."""
    import pytorch_grad_cam

    obj = raw_class(getattr(pytorch_grad_cam, name))(net, layers, reshape, **ctor)
    return obj, obj


def build_ablation(name: str, net: Any, layers: list[Any], reshape: Any, ctor: dict[str, Any]) -> tuple[Any, Any]:
    """AblationCAM: the ablation layer matching the layer's shape (token grids need the ViT one)."""
    from pytorch_grad_cam import AblationLayer, AblationLayerVit

    ablation = AblationLayerVit() if reshape is not None else AblationLayer()
    return build(name, net, layers, reshape, {**ctor, "ablation_layer": ablation})


def build_finer(name: str, net: Any, layers: list[Any], reshape: Any, ctor: dict[str, Any]) -> tuple[Any, Any]:
    """FinerCAM: the library's wrapper around a raw-keeping Grad-CAM (whose maps are read)."""
    import pytorch_grad_cam

    obj = pytorch_grad_cam.FinerCAM(net, layers, reshape, base_method=raw_class(pytorch_grad_cam.GradCAM))
    return obj, obj.base_cam


class Runner:
    """One constructed library object, called per (image batch, target column).

    Args:
        name: the library's class name.
        record: the class's record (``ctor``/``attrs`` params and hooks).
        net: the pixel module.
        layer: the target layer (None for FullGrad).
        params: the checked user params.
    """

    def __init__(self, name: str, record: Any, net: Any, layer: TargetLayer | None, params: Mapping[str, Any]) -> None:
        self.name, self.spec, self.params = name, record, params
        reshape = layer.reshape_transform if layer is not None else None
        layers = [layer.module] if layer is not None else []
        ctor = {k: params[k] for k in record.ctor}
        if "kernel" in ctor:
            ctor["kernel"] = str(getattr(ctor["kernel"], "value", ctor["kernel"]))
        self.obj, self.cam = (record.build or build)(name, net, layers, reshape, ctor)
        for key in record.attrs:
            setattr(self.cam, key, params[key])

    def release(self) -> None:
        """Remove the library's hooks, even when its own cleanup raises."""
        hooks = self.cam.activations_and_grads
        try:
            hooks.release()
        except RuntimeError:
            pass  # its clear() cannot detach_() view gradients (ShapleyCAM); the hooks are removed below
        finally:
            for handle in hooks.handles:
                handle.remove()
            hooks.handles.clear()
            hooks.activations, hooks.gradients = [], []

    def __call__(self, x: Any, targets: np.ndarray) -> np.ndarray:
        """Raw maps ``(n, H, W)`` for one target per image."""
        import torch

        if self.spec.explain is not None:
            return np.asarray(self.spec.explain(self, x, targets))
        if not self.params.get("aug_smooth", False):
            return self.once(x, targets)
        total = 0.0
        transforms = list(self.cam.tta_transforms)
        for transform in transforms:
            raw = self.once(transform.augment_image(x), targets)
            total = total + transform.deaugment_mask(torch.from_numpy(raw[:, None]))[:, 0].numpy()
        return np.asarray(total, np.float32) / len(transforms)

    def once(self, x: Any, targets: np.ndarray) -> np.ndarray:
        """One library call: raw maps ``(n, H, W)``, upsampled unless the class's maps are at image size."""
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        self.cam.raw_cams = []
        eigen_smooth = bool(self.params.get("eigen_smooth", False))
        self.obj(x, [ClassifierOutputTarget(int(t)) for t in targets], eigen_smooth=eigen_smooth)
        (raw,) = self.cam.raw_cams
        size = tuple(x.shape[-2:])
        return upsample(raw, size) if self.spec.upsample else raw.astype(np.float32)


def finer_maps(runner: Runner, x: Any, targets: np.ndarray) -> np.ndarray:
    """FinerCAM's :data:`Explain`: one library call per distinct target, against its closest classes."""
    out = np.zeros((len(targets), *x.shape[-2:]), np.float32)
    for t in np.unique(targets):
        rows = np.flatnonzero(targets == t)
        runner.cam.raw_cams = []
        comparison = [int(c) for c in runner.params["comparison_categories"]]
        runner.obj(
            x[rows], None, alpha=float(runner.params["alpha"]), comparison_categories=comparison, target_idx=int(t)
        )
        (raw,) = runner.cam.raw_cams
        out[rows] = upsample(raw, tuple(x.shape[-2:]))
    return out


def import_library() -> Any:
    """``import pytorch_grad_cam`` with Python's global ``random`` state as it was.

    The first import (through the libraries it loads) draws from ``random``,
    which moved the user's random sequence; the state is put back.
    """
    import random

    state = random.getstate()
    try:
        import pytorch_grad_cam
    finally:
        random.setstate(state)
    return pytorch_grad_cam


def enter(request: ExplainRequest, model: Any, stack: ExitStack, freeze: bool = True) -> Any:
    """Guard the model (parameters frozen unless ``freeze`` is False) and enter the shared run context.

    The library is imported first, leaving the global ``random`` state as it was (:func:`import_library`).
    """
    from xai_bridge.adapters._torch import enter_run

    import_library()
    stack.enter_context(model.guard(freeze_params=freeze))
    return enter_run(stack, model, model.pixel_module(), seed=request.seed)
