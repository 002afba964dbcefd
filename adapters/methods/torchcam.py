"""torchcam (``import torchcam``) CAM extractors on image pixels, with raw maps.

Every extractor hooks ``model.pixel_module()`` fed ``[0, 255]`` pixels at the
image's own resolution; one call explains one target per image for a batch of
images (torchcam's ``class_idx`` list matches the batch), and the ``(N, T)``
targets are a loop over columns, each with its own forward pass.

Raw maps: the extractor is called with ``normalized=False`` (no min-max; its
ReLU, where the method has one, is kept) and the layer-resolution map is
upsampled to the image with ``F.interpolate(mode="bilinear",
align_corners=False)``, the interpolation torchcam itself uses to resize maps
(``fuse_cams``, Score-CAM masks).

torchcam min-max scales at layer resolution, before any upsampling, so its
normalised map upsampled need not reach 0 and 1 exactly: min-max scaling a
returned map at image resolution (``xb.normalize(maps, "minmax")``) differs
from it by up to a few hundredths (0.03 on EfficientNet's 7x7 layer).
``extras["layer_range"]`` (``(N, T, 2)``: each layer-resolution map's min and
max) reproduces torchcam's own values exactly, as
:meth:`~xai_bridge.Explanation.library_view` does (bilinear upsampling is
affine, so scaling before or after it with the layer's range is the same).

Random methods (SmoothGradCAMpp, SSCAM) draw from torch's global generator,
seeded with the request's seed before each call and restored afterwards.
SmoothGradCAMpp's noise is added to the input, here pixels in [0, 255]: its
default ``std`` is torchcam's 0.3 in the model's normalised input units,
converted to pixels with the declared preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge._validate import number
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.registry import MethodSpec, passes_per_target

from ._drift import LibraryClasses

if TYPE_CHECKING:
    from ._layers import TargetLayer

__all__ = ["CLASSES", "FINER_BASES", "METHODS", "REFINE_BASES", "cam", "legrad"]


@dataclass(frozen=True)
class _Extractor:
    """How to build and call one torchcam extractor.

    Attributes:
        ctor: user params passed to the constructor, with their defaults.
        call: user params passed to the call.
        gradients: whether the extractor backpropagates (forward with grad).
        random: whether the method draws random numbers.
        prepare: completes the checked params before the run, given the model.
        describe: rewrites the params after the run, as recorded.
        per_channel: whether it runs one forward pass per feature channel of
            the layer (Score-CAM's family), so its cost is not known beforehand.
        layers: whether it takes several layers (``layers=``, RefineCAM)
            instead of one (``layer=``).
        quick: the cheapest params that still exercise it (:attr:`MethodSpec.quick`).
        description: one line for the method listing.
    """

    ctor: Mapping[str, Any] = field(default_factory=dict)
    call: Mapping[str, Any] = field(default_factory=dict)
    gradients: bool = True
    random: bool = False
    prepare: Callable[[dict[str, Any], Any], None] | None = None
    describe: Callable[[dict[str, Any], Any], None] | None = None
    per_channel: bool = False
    layers: bool = False
    quick: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


#: torchcam class name -> how to run it; each is registered as ``torchcam.<name>`` (SPECS below).
#: ``LeGrad`` (torchvision ViT attention only) has a backend of its own, :func:`legrad`.
METHODS: dict[str, _Extractor] = {
    "CAM": _Extractor(
        ctor={"fc_layer": None},
        gradients=False,
        describe=lambda params, model: _fc_name(params, model),
        description="CAM: activations weighted by the classifier's weights (needs GAP + one linear layer)",
    ),
    "ScoreCAM": _Extractor(
        ctor={"batch_size": 32},
        gradients=False,
        per_channel=True,
        description="Score-CAM: weights from scores of activation-masked images",
    ),
    "SSCAM": _Extractor(
        ctor={"batch_size": 32, "num_samples": 35, "std": 2.0},
        gradients=False,
        random=True,
        per_channel=True,
        quick={"num_samples": 2},
        description="SS-CAM: Score-CAM with noise-smoothed masks (seeded)",
    ),
    "ISCAM": _Extractor(
        ctor={"batch_size": 32, "num_samples": 10},
        gradients=False,
        per_channel=True,
        quick={"num_samples": 2},
        description="IS-CAM: Score-CAM integrated over mask intensities",
    ),
    "GradCAM": _Extractor(description="Grad-CAM: activations weighted by mean gradients"),
    "GradCAMpp": _Extractor(description="Grad-CAM++: second-order weighting of positive gradients"),
    "SmoothGradCAMpp": _Extractor(
        ctor={"num_samples": 4, "std": None},
        random=True,
        prepare=lambda params, model: _smooth_std(params, model),
        quick={"num_samples": 2},
        description="Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy inputs (seeded)",
    ),
    "XGradCAM": _Extractor(description="XGrad-CAM: gradients weighted by normalised activations"),
    "LayerCAM": _Extractor(description="LayerCAM: positive gradients x activations per position"),
    "FinerCAM": _Extractor(
        ctor={"base_method": "GradCAM", "gamma": 0.6, "num_references": 3},
        call={"comparison_idx": None},
        quick={"num_references": 2},
        description="Finer-CAM: the target score minus the scores of the closest classes",
    ),
    "RefineCAM": _Extractor(
        ctor={"base_method": "GradCAMpp"},
        layers=True,
        description="RefineCAM: the product of several layers' min-max scaled CAMs (Grad-CAM++ by default)",
    ),
}

#: Base extractors FinerCAM accepts.
FINER_BASES = ("GradCAM", "GradCAMpp", "LayerCAM")
#: Base extractors RefineCAM accepts here (gradient CAMs taking several layers).
REFINE_BASES = ("GradCAMpp", "GradCAM", "XGradCAM", "LayerCAM")

#: torchcam's SmoothGradCAMpp default noise, in normalised input units.
_SMOOTH_STD = 0.3


def _version() -> str:
    return library_version("torchcam")


def _pixel_std(model: Any, std: float) -> float:
    """``std`` in the model's normalised input units, expressed in [0, 255] pixels."""
    pre = getattr(model, "preprocess", None)
    if pre is None:
        return std * 255.0
    factor, _ = pre.scale.factor_offset
    spread = float(np.mean(pre.std)) if pre.std is not None else 1.0
    return float(std * spread / factor)


def _check(name: str, params: dict[str, Any]) -> None:
    for key in ("batch_size", "num_samples", "num_references"):
        if key in params and (
            isinstance(params[key], bool) or not isinstance(params[key], (int, np.integer)) or params[key] < 1
        ):
            raise ParameterError(f"{key}: expected a positive integer, got {params[key]!r}")
    bases = REFINE_BASES if name == "RefineCAM" else FINER_BASES
    if "base_method" in params and params["base_method"] not in bases:
        raise ParameterError(f"base_method: expected one of {list(bases)}, got {params['base_method']!r}")
    for key in ("std", "gamma"):
        if params.get(key) is not None:
            number(key, params[key], 0)


def _extractor(name: str, net: Any, model: Any, layers: list[TargetLayer], params: dict[str, Any]) -> Any:
    from torchcam import methods

    kwargs = {k: params[k] for k in METHODS[name].ctor}
    if name == "CAM":
        kwargs["fc_layer"] = _fc_layer(model.module, kwargs["fc_layer"])
    if "base_method" in kwargs:
        kwargs["base_method"] = getattr(methods, kwargs["base_method"])
    if layers[0].reshape_transform is not None:
        kwargs["reshape_transform"] = layers[0].reshape_transform
    target = [layer.module for layer in layers] if METHODS[name].layers else layers[0].module
    return getattr(methods, name)(net, target, **kwargs)


def _fc_layer(module: Any, fc: Any) -> Any:
    """CAM's classifier: the given module / dotted name, else the model's only ``nn.Linear``."""
    from torch import nn

    modules = dict(module.named_modules())
    if isinstance(fc, str):
        if fc not in modules:
            raise ParameterError(f"fc_layer: no submodule named {fc!r}; pass the classifier layer or its dotted name")
        return modules[fc]
    if fc is not None:
        if not isinstance(fc, nn.Module):
            raise ParameterError(f"fc_layer: expected None, a module or a dotted name, got {type(fc).__name__}")
        return fc
    linear = [name for name, m in modules.items() if isinstance(m, nn.Linear)]
    if len(linear) != 1:
        raise ParameterError(
            f"fc_layer: CAM needs the classifier after global pooling, and the model has "
            f"{len(linear)} nn.Linear layers {linear[:6]}; pass fc_layer=<name>"
        )
    return modules[linear[0]]


def cam(request: ExplainRequest) -> BackendResult:
    """A torchcam extractor (``request.options["method"]`` is the class name).

    Methods and papers: CAM (https://arxiv.org/abs/1512.04150), ScoreCAM
    (https://arxiv.org/abs/1910.01279), SSCAM (https://arxiv.org/abs/2006.14255),
    ISCAM (https://arxiv.org/abs/2010.03023), GradCAM (https://arxiv.org/abs/1610.02391),
    GradCAMpp (https://arxiv.org/abs/1710.11063), SmoothGradCAMpp
    (https://arxiv.org/abs/1908.01224), XGradCAM (https://arxiv.org/abs/2008.02312),
    LayerCAM (http://mmcheng.net/mftp/Papers/21TIP_LayerCAM.pdf), FinerCAM
    (https://arxiv.org/abs/2501.11309).

    Params:
        layer: target layer, a submodule of ``model.module`` or its dotted name
            (default: automatic, see :mod:`~xai_bridge.adapters.methods._layers`).
        reshape_transform: callable mapping the layer output to ``(N, C, h, w)``
            (default: automatic for square token grids, else none).
        fc_layer: CAM's classifier layer, module or dotted name (default: the
            model's only ``nn.Linear``).
        batch_size: masked images per forward (Score-CAM family, default 32).
        num_samples: noisy / integration samples (SSCAM 35, ISCAM 10, SmoothGradCAMpp 4).
        std: noise std (SSCAM 2.0 on normalised masks; SmoothGradCAMpp in
            pixels, default torchcam's 0.3 converted, see the module docstring).
        base_method, gamma, num_references, comparison_idx: FinerCAM's base
            extractor (``"GradCAM"``, ``"GradCAMpp"``, ``"LayerCAM"``), comparison
            strength, number of automatic reference classes, explicit references.
    """
    name = str(request.options["method"])
    spec = METHODS[name]
    defaults = {"layers" if spec.layers else "layer": None, "reshape_transform": None, **spec.ctor, **spec.call}
    from ._layer_run import crop_aligned, layer_aliases

    given = layer_aliases(request.params) if not spec.layers else _layers_alias(request.params)
    params = check_params(request.method, given, defaults)
    _check(name, params)
    model = require_differentiable(request)
    if spec.prepare is not None:
        spec.prepare(params, model)
    with ExitStack() as stack:
        maps, layer_range, layers, counter = _maps(request, model, name, params, stack)
    maps = crop_aligned(maps, getattr(model, "preprocess", None))
    if spec.describe is not None:
        spec.describe(params, model)
    chosen = {"layers": [layer.name for layer in layers]} if spec.layers else layers[0].describe()
    return BackendResult(
        attributions=maps,
        params={**params, **chosen},
        backend_version=_version(),
        n_model_evals=counter.count,
        extras={"layer_range": layer_range},
        uses_seed=spec.random,
    )


def _maps(
    request: ExplainRequest, model: Any, name: str, params: dict[str, Any], stack: ExitStack
) -> tuple[np.ndarray, np.ndarray, list[TargetLayer], Any]:
    """Raw maps ``(N, T, H, W)``, each layer map's range ``(N, T, 2)``, the layers and the evaluation counter."""
    import torch
    import torch.nn.functional as F
    from xai_bridge.adapters._torch import enter_run, seeded

    from ._layer_run import check_outputs, gradient_stop, request_layer
    from ._refine import refine_layers

    spec, images, targets = METHODS[name], request.images, request.targets
    net = model.pixel_module()
    maps = np.zeros((*targets.shape, *images.shape[1:3]), np.float32)
    layer_range = np.zeros((*targets.shape, 2), np.float32)
    stack.enter_context(model.guard(freeze_params=True))
    counter = enter_run(stack, model, net)
    x0 = model.pixel_tensor(images[:1])
    if spec.layers:
        layers = refine_layers(model, net, x0, targets, params)
    else:
        layers = [request_layer(model, net, x0, targets, params)]
    check_outputs(net, x0, targets, request.n_outputs)
    # one stop below the only layer; several layers need the graph through all of them
    stopped = spec.gradients and not spec.layers and stack.enter_context(gradient_stop(layers[0]))
    extractor = stack.enter_context(_extractor(name, net, model, layers, params))
    stack.callback(extractor.remove_hooks)
    call = {k: params[k] for k in spec.call}
    for start in range(0, len(images), model.batch_size):
        x = model.pixel_tensor(images[start : start + model.batch_size])
        for j in range(targets.shape[1]):
            idx = [int(t) for t in targets[start : start + len(x), j]]
            with seeded(request.seed, model.device) if spec.random else nullcontext():
                if spec.gradients:
                    with torch.enable_grad():
                        scores = net(x.requires_grad_(not stopped))
                else:
                    with torch.no_grad():
                        scores = net(x)
                (raw,) = extractor(idx, scores, normalized=False, **call)
            up = F.interpolate(raw[:, None].float(), size=images.shape[1:3], mode="bilinear", align_corners=False)
            maps[start : start + len(x), j] = up[:, 0].detach().cpu().numpy()
            flat = raw.detach().float().reshape(len(x), -1)
            layer_range[start : start + len(x), j] = torch.stack([flat.amin(1), flat.amax(1)], 1).cpu().numpy()
    return maps, layer_range, layers, counter


def _layers_alias(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with torchcam's spelling ``target_layer=[...]`` renamed to ``layers=``."""
    out = dict(params)
    if "target_layer" in out and "layers" not in out:
        out["layers"] = out.pop("target_layer")
    return out


def _smooth_std(params: dict[str, Any], model: Any) -> None:
    """SmoothGradCAMpp's ``prepare``: its default noise is torchcam's, converted to pixel units."""
    if params["std"] is None:
        params["std"] = _pixel_std(model, _SMOOTH_STD)


def _fc_name(params: dict[str, Any], model: Any) -> None:
    """CAM's ``describe``: the classifier layer used, recorded by its dotted name."""
    fc = _fc_layer(model.module, params["fc_layer"])
    params["fc_layer"] = next(n for n, m in model.module.named_modules() if m is fc)


_CAM_SPECS = tuple(
    MethodSpec(
        name=f"torchcam.{name}",
        target=f"{__name__}:cam",
        requires=("torchcam", "torch"),
        extra="torchcam",
        family="cam",
        needs_gradients=True,
        options={"method": name},
        signed=name == "CAM",  # the classifier's weights can be negative and torchcam's CAM has no ReLU
        random=spec.random,
        evaluations=None if spec.per_channel else passes_per_target,
        quick=spec.quick,
        normalised=spec.layers,
        description=f"torchcam {spec.description}; "
        + (
            "per-layer normalised maps multiplied, at image resolution."
            if spec.layers
            else "raw maps at image resolution."
        ),
    )
    for name, spec in METHODS.items()
)
SPECS = (
    *_CAM_SPECS,
    MethodSpec(
        name="torchcam.LeGrad",
        target=f"{__name__}:legrad",
        requires=("torchcam", "torch", "torchvision"),
        extra="torchcam",
        family="other",
        needs_gradients=True,
        evaluations=passes_per_target,
        model_kind="transformer",
        description="torchcam LeGrad (Bousselham et al. 2024) on a torchvision VisionTransformer: positive "
        "gradients of each block's score w.r.t. its attention; raw maps at image resolution.",
    ),
)

#: What the drift test reads: every public class of ``torchcam.methods`` is registered as ``torchcam.<name>``.
CLASSES = LibraryClasses("torchcam.methods", "torchcam")


def legrad(request: ExplainRequest) -> BackendResult:
    """Torchcam's ``LeGrad`` (https://arxiv.org/abs/2404.03214) on a torchvision ``VisionTransformer``.

    The same run as ``builtin.LeGrad`` on that model (torchcam's extractor on
    the chosen encoder blocks, its layer score the head on the mean of the
    tokens, ``normalized=False``, upsampled bilinearly); other vision
    transformers are refused, as torchcam supports only torchvision's.

    Params:
        layer: encoder blocks (modules or dotted names) whose maps are averaged (default: all).

    Example:
        >>> exp = xb.explain(torchvision_vit, images, "torchcam.LeGrad")
    """
    from .builtin._attention import _is_torchvision_vit
    from .builtin._attention import legrad as run

    check_params(request.method, request.params, {"layer": None})  # before the model is touched (the CLI's check)
    model = require_differentiable(request)
    if not _is_torchvision_vit(getattr(model, "module", None)):
        raise MethodNotApplicableError(
            f"model: torchcam.LeGrad needs a torchvision VisionTransformer, got {type(model).__name__} of "
            f"{type(getattr(model, 'module', model)).__name__}; use builtin.LeGrad for other vision transformers"
        )
    return run(request)
