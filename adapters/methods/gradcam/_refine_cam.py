"""pytorch-grad-cam's RefineCAM: the product of several layers' CAMs, as the library returns it.

``RefineCAM`` (https://arxiv.org/abs/2605.14641) calls its base method
(Grad-CAM++ by default) once per layer; each call returns that layer's map
min-max scaled to [0, 1] at the input's size, and the product of the maps is
min-max scaled again. No raw map exists: the per-layer scaling is part of the
method (a product of raw maps would weigh the layers by their magnitudes), so
the library's normalised map is returned as it is (``MethodSpec.normalised``).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import numpy as np

from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.errors import ParameterError

from ._runner import enter

__all__ = ["REFINE_BASES", "refine_cam"]

#: Base methods RefineCAM accepts here: the library's single-layer gradient CAMs.
REFINE_BASES = ("GradCAMPlusPlus", "GradCAM", "HiResCAM", "XGradCAM", "LayerCAM", "GradCAMElementWise")


def refine_cam(request: ExplainRequest) -> BackendResult:
    """RefineCAM (pytorch-grad-cam): per-layer normalised CAMs multiplied, then normalised.

    Params:
        layers: two or more layers (modules or dotted names); default: the
            automatic CAM layer and the last layer of each of the two
            resolutions before it (see :mod:`~xai_bridge.adapters.methods._refine`).
        reshape_transform: callable mapping every layer's output to ``(N, C, h, w)``.
        base_method: the per-layer CAM, one of ``REFINE_BASES`` (default
            ``"GradCAMPlusPlus"``, the library's).
        eigen_smooth: first principal component of the weighted activations.

    Example:
        >>> exp = xb.explain(model, images, "gradcam.RefineCAM", layers=["layer3", "layer4"])
    """
    defaults = {"layers": None, "reshape_transform": None, "base_method": "GradCAMPlusPlus", "eigen_smooth": False}
    given = dict(request.params)
    if "target_layers" in given and "layers" not in given:  # the library's own spelling
        given["layers"] = given.pop("target_layers")
    params = check_params(request.method, given, defaults)
    if params["base_method"] not in REFINE_BASES:
        raise ParameterError(f"base_method: expected one of {list(REFINE_BASES)}, got {params['base_method']!r}")
    if not isinstance(params["eigen_smooth"], (bool, np.bool_)):
        raise ParameterError(f"eigen_smooth: expected True or False, got {params['eigen_smooth']!r}")
    model = require_differentiable(request)
    with ExitStack() as stack:
        counter = enter(request, model, stack)
        maps, names = _maps(request, model, params, stack)
    return BackendResult(
        attributions=maps,
        params={**params, "layers": names},
        backend_version=library_version("grad-cam"),
        n_model_evals=counter.count,
    )


def _maps(
    request: ExplainRequest, model: Any, params: dict[str, Any], stack: ExitStack
) -> tuple[np.ndarray, list[str]]:
    """The library's maps ``(N, T, H, W)`` and the layer names; runs inside the caller's guard."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from .._layer_run import check_outputs, crop_aligned
    from .._refine import refine_layers

    net = model.pixel_module()
    images, targets = request.images, request.targets
    x0 = model.pixel_tensor(images[:1])
    layers = refine_layers(model, net, x0, targets, params)
    check_outputs(net, x0, targets, request.n_outputs)
    base = getattr(pytorch_grad_cam, params["base_method"])
    refine = pytorch_grad_cam.RefineCAM(
        net, [layer.module for layer in layers], layers[0].reshape_transform, base_method=base
    )
    for cam in refine.base_cam_per_layer:
        stack.callback(cam.activations_and_grads.release)
    maps = np.zeros((*targets.shape, *images.shape[1:3]), np.float32)
    for start in range(0, len(images), model.batch_size):
        x = model.pixel_tensor(images[start : start + model.batch_size]).requires_grad_(True)
        for j in range(targets.shape[1]):
            wanted = [ClassifierOutputTarget(int(t)) for t in targets[start : start + len(x), j]]
            maps[start : start + len(x), j] = refine(x, wanted, eigen_smooth=bool(params["eigen_smooth"]))
    return crop_aligned(maps, getattr(model, "preprocess", None)), [layer.name for layer in layers]
