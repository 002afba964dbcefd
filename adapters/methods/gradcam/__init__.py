"""pytorch-grad-cam (``import pytorch_grad_cam``) on image pixels, with raw maps.

Every method runs on ``model.pixel_module()`` fed ``[0, 255]`` pixels at the
image's own resolution, so the library's upsampling already lands on image
pixels. One library call explains one target per image for a batch of images
(``model.batch_size``); the ``(N, T)`` targets are a loop over columns.

Raw maps: the library min-max scales every map to [0, 1]. Here each method
class is subclassed to keep the per-layer CAM its ``get_cam_image`` returns;
the backend applies the library's own ReLU (``np.maximum(cam, 0)``) and
upsampling (``cv2.resize``, bilinear, to the input size) and skips the
scaling. Min-max scaling a returned map gives the library's output back.
FullGrad keeps the sum of its per-layer maps (each scaled by the library, as
the method defines) before the final scaling. With ``aug_smooth`` the raw maps
of the library's test-time augmentations are de-augmented and averaged (the
library averages scaled maps).

Deep Feature Factorization (Collins et al. 2018, https://arxiv.org/abs/1806.10206)
factorises one image's layer activations into ``n_components`` concepts
(non-negative matrix factorisation, per image, deterministic). It defines its
own targets: one per concept, so ``T = n_components`` and the requested
``targets`` are not used. ``attributions[n, k]`` is concept ``k``'s raw map,
``targets[n, k]`` the concept's top class when the classifier head is applied
to the concept embedding, ``scores[n, k]`` that class's probability and
``target_names[n, k]`` reads ``"concept k: Egyptian cat:0.81, tabby:0.12"``.
``extras`` holds ``concept_labels`` / ``concept_label_scores`` ``(N, K, top_k)``
(each concept's top classes and probabilities) and ``concept_probs``
``(N, K, classes)``.

Hooks are released and swapped submodules (AblationCAM's ablation layer,
guided backprop's ReLUs) put back in ``finally``; the model guard restores
mode, ``requires_grad`` and ``.grad`` and removes any hook left behind.

Here: the CAM backend, guided backprop and Guided Grad-CAM, and the specs.
:mod:`._methods` holds one record per library class (adding a method is one
entry there), :mod:`._runner` runs one class with raw maps, :mod:`._dff` and
:mod:`._refine_cam` the two methods whose results differ in shape or scale.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.registry import MethodSpec, passes_per_target

from .._drift import LibraryClasses
from ._dff import deep_feature_factorization
from ._methods import METHODS, SMOOTHING, Kernel, check_values, defaults
from ._refine_cam import refine_cam
from ._runner import LAYER_PARAMS, Runner, enter

if TYPE_CHECKING:
    from .._layers import TargetLayer

__all__ = [
    "CLASSES",
    "METHODS",
    "Kernel",
    "cam",
    "deep_feature_factorization",
    "guided_backprop",
    "guided_gradcam",
    "refine_cam",
]


def _version() -> str:
    return library_version("grad-cam")


def _cam_maps(
    request: ExplainRequest, model: Any, name: str, params: dict[str, Any], stack: ExitStack
) -> tuple[np.ndarray, TargetLayer | None]:
    """Raw ``(N, T, H, W)`` maps of one method; runs inside the caller's guard."""
    from .._layer_run import check_outputs, crop_aligned, gradient_stop, request_layer

    net = model.pixel_module()
    images, targets = request.images, request.targets
    x0 = model.pixel_tensor(images[:1])
    layer = None
    if METHODS[name].layer:
        layer = request_layer(model, net, x0, targets, params)
    check_outputs(net, x0, targets, request.n_outputs)
    # ShapleyCAM differentiates through the parameters: no stop (and no freeze) for it
    stopped = stack.enter_context(gradient_stop(layer if METHODS[name].freeze else None))
    runner = Runner(name, METHODS[name], net, layer, params)
    stack.callback(runner.release)
    maps = np.zeros((*targets.shape, *images.shape[1:3]), np.float32)
    for start in range(0, len(images), model.batch_size):
        x = model.pixel_tensor(images[start : start + model.batch_size]).requires_grad_(not stopped)
        for j in range(targets.shape[1]):
            maps[start : start + len(x), j] = runner(x, targets[start : start + len(x), j])
    return (crop_aligned(maps, getattr(model, "preprocess", None)) if layer is not None else maps), layer


def _effective(params: dict[str, Any], layer: TargetLayer | None) -> dict[str, Any]:
    out = {**params, **(layer.describe() if layer is not None else {})}
    if "kernel" in out:
        out["kernel"] = Kernel(out["kernel"]).value
    return out


def cam(request: ExplainRequest) -> BackendResult:
    """A pytorch-grad-cam CAM method (``request.options["method"]`` is the class name).

    Methods and papers: GradCAM (https://arxiv.org/abs/1610.02391), HiResCAM
    (https://arxiv.org/abs/2011.08891), GradCAMPlusPlus (https://arxiv.org/abs/1710.11063),
    XGradCAM (https://arxiv.org/abs/2008.02312), ScoreCAM (https://arxiv.org/abs/1910.01279),
    AblationCAM (Desai & Ramaswamy, WACV 2020), EigenCAM (https://arxiv.org/abs/2008.00299), EigenGradCAM, LayerCAM
    (https://ieeexplore.ieee.org/document/9462463), FullGrad (https://arxiv.org/abs/1905.00780),
    GradCAMElementWise, KPCA_CAM (kernel-PCA Eigen-CAM, Karmani et al. 2024), ShapleyCAM
    (https://arxiv.org/abs/2501.06261), FinerCAM (https://arxiv.org/abs/2501.11309),
    FEM (https://hal.science/hal-02963298/document), SegEigenCAM
    (https://doi.org/10.3390/app15137562), RandomCAM (random weights, a sanity baseline).

    Params:
        layer: target layer, a submodule of ``model.module`` or its dotted name
            (default: automatic, see :mod:`~xai_bridge.adapters.methods._layers`).
            Not used by FullGrad (every conv / BatchNorm bias).
        reshape_transform: callable mapping the layer output to ``(N, C, h, w)``
            (default: automatic for square token grids, else none).
        aug_smooth: average over the library's test-time augmentations
            (flip, x0.9 / x1.1 brightness); not FinerCAM.
        eigen_smooth: first principal component of the weighted activations.
        batch_size: masked images per forward (ScoreCAM 16, AblationCAM 32).
        ratio_channels_to_ablate: AblationCAM's share of channels ablated.
        kernel, gamma: KPCA_CAM's kernel (:class:`Kernel`) and its coefficient.
        k: FEM's k-sigma threshold.
        alpha, comparison_categories: FinerCAM's comparison strength and the
            ranks (by closeness of score to the target) of the classes compared.
    """
    name = str(request.options["method"])
    spec = METHODS[name]
    from .._layer_run import layer_aliases

    params = check_params(request.method, layer_aliases(request.params), defaults(spec))
    check_values(params)
    model = require_differentiable(request)
    with ExitStack() as stack:
        counter = enter(request, model, stack, freeze=spec.freeze)
        maps, layer = _cam_maps(request, model, name, params, stack)
    return BackendResult(
        attributions=maps,
        params=_effective(params, layer),
        backend_version=_version(),
        n_model_evals=counter.count,
        uses_seed=spec.random,
    )


def _guided(request: ExplainRequest, model: Any) -> np.ndarray:
    """Guided backprop gradients ``(N, T, 3, H, W)``; runs inside the caller's guard."""
    from pytorch_grad_cam import GuidedBackpropReLUModel

    from .._guided import guided_relus
    from .._layer_run import check_outputs

    net = model.pixel_module()
    images, targets = request.images, request.targets
    x0 = model.pixel_tensor(images[:1])
    check_outputs(net, x0, targets, request.n_outputs)
    out = np.zeros((*targets.shape, 3, *images.shape[1:3]), np.float32)
    with guided_relus(net, x0, request.method):  # ReLU6 / Hardtanh(0, m) as nn.ReLU + clamp, put back after
        gb = GuidedBackpropReLUModel(net, device=None)
        for i in range(len(images)):
            x = model.pixel_tensor(images[i : i + 1])
            for j in range(targets.shape[1]):
                out[i, j] = np.transpose(gb(x.clone(), target_category=int(targets[i, j])), (2, 0, 1))
    return out


def guided_backprop(request: ExplainRequest) -> BackendResult:
    """Guided backpropagation (Springenberg et al. 2015, https://arxiv.org/abs/1412.6806).

    pytorch-grad-cam's ``GuidedBackpropReLUModel``: every ``nn.ReLU`` passes
    only positive gradients for positive inputs. Clamped ReLUs (``nn.ReLU6``,
    ``nn.Hardtanh(0, m)``) are rewritten as ``nn.ReLU`` + clamp for the run
    (same outputs), so the rule reaches them too; a functional ReLU or a
    model without ReLUs is refused (see :mod:`._guided`). ``raw`` holds the
    per-channel input gradient; the original modules are put back afterwards.
    No params.
    """
    params = check_params(request.method, request.params, {})
    model = require_differentiable(request)
    with ExitStack() as stack:
        counter = enter(request, model, stack)
        raw = _guided(request, model)
    return BackendResult(
        attributions=raw.sum(axis=2), raw=raw, params=params, backend_version=_version(), n_model_evals=counter.count
    )


def guided_gradcam(request: ExplainRequest) -> BackendResult:
    """Guided Grad-CAM (Selvaraju et al. 2017, https://arxiv.org/abs/1610.02391).

    The raw Grad-CAM map times guided backprop, per channel (``raw``), as in
    pytorch-grad-cam's example, without its min-max scaling of the CAM.

    Params:
        layer, reshape_transform, aug_smooth, eigen_smooth: as for Grad-CAM.
    """
    from .._layer_run import layer_aliases

    params = check_params(request.method, layer_aliases(request.params), {**LAYER_PARAMS, **SMOOTHING})
    check_values(params)
    model = require_differentiable(request)
    with ExitStack() as stack:
        counter = enter(request, model, stack)
        with ExitStack() as cam_stack:
            maps, layer = _cam_maps(request, model, "GradCAM", params, cam_stack)
        raw = _guided(request, model) * maps[:, :, None]
    return BackendResult(
        attributions=raw.sum(axis=2),
        raw=raw,
        params=_effective(params, layer),
        backend_version=_version(),
        n_model_evals=counter.count,
    )


_REQUIRES = ("pytorch_grad_cam", "torch", "cv2")

#: Methods with a backend function of their own: (name, function, family, signed, description).
_OTHERS = (
    (
        "GuidedBackprop",
        "guided_backprop",
        "gradient",
        True,
        "Guided backpropagation: input gradients through ReLUs passing positive gradients only",
    ),
    (
        "GuidedGradCAM",
        "guided_gradcam",
        "cam",
        True,
        "Guided Grad-CAM: raw Grad-CAM map times guided backprop, per channel",
    ),
    (
        "DeepFeatureFactorization",
        "deep_feature_factorization",
        "cam",
        False,
        "Deep Feature Factorization: NMF concepts of a layer, one map per concept with its top labels",
    ),
)

SPECS = (
    tuple(
        MethodSpec(
            name=f"gradcam.{name}",
            target=f"{__name__}:cam",
            requires=_REQUIRES,
            extra="gradcam",
            family="cam",
            needs_gradients=True,
            options={"method": name},
            random=spec.random,
            evaluations=None if spec.per_channel else passes_per_target,
            quick=spec.quick,
            description=f"pytorch-grad-cam {spec.description}; raw maps at image resolution.",
        )
        for name, spec in METHODS.items()
    )
    + tuple(
        MethodSpec(
            name=f"gradcam.{name}",
            target=f"{__name__}:{function}",
            requires=_REQUIRES,
            extra="gradcam",
            family=family,
            needs_gradients=True,
            signed=signed,
            evaluations=passes_per_target,
            quick={"n_components": 2} if function == "deep_feature_factorization" else {},
            own_targets=function == "deep_feature_factorization",
            description=f"pytorch-grad-cam {description}; raw maps at image resolution.",
        )
        for name, function, family, signed, description in _OTHERS
    )
    + (
        MethodSpec(
            name="gradcam.RefineCAM",
            target=f"{__name__}:refine_cam",
            requires=_REQUIRES,
            extra="gradcam",
            family="cam",
            needs_gradients=True,
            evaluations=passes_per_target,
            normalised=True,
            description="pytorch-grad-cam RefineCAM: the product of several layers' min-max scaled CAMs "
            "(Grad-CAM++ by default); the library's normalised map, no raw map.",
        ),
    )
)

#: What the drift test reads: every public class of ``pytorch_grad_cam`` is registered or excluded with a reason.
CLASSES = LibraryClasses(
    "pytorch_grad_cam",
    "gradcam",
    routed={"GuidedBackpropReLUModel": "gradcam.GuidedBackprop"},
    excluded={
        "ActivationsAndGradients": "the library's hook helper, not a method",
        "AblationLayer": "AblationCAM's ablation layer, chosen by gradcam.AblationCAM",
        "AblationLayerVit": "AblationCAM's ablation layer for token grids, chosen by gradcam.AblationCAM",
        "AblationLayerFasterRCNN": "AblationCAM's ablation layer for Faster R-CNN detections, not classifiers",
        "SESS": "scale-equivariant smoothing wraps a CAM over rescaled patches; not routed yet",
    },
)
