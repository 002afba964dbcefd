"""LIME for images (Ribeiro et al. 2016, https://arxiv.org/abs/1602.04938) via ``lime.lime_image``.

Superpixels are computed on the uint8 image (so scikit-image sees [0, 1]
colours) with lime's own ``SegmentationAlgorithm``; lime perturbs the image
as float64 pixels in [0, 255] and every perturbed batch is rounded back to
uint8 and sent through ``model.predict``. So torch modules, NHWC callables
expecting [-1, 1] and black boxes need no user wrapper: the preprocessing is
the model's, declared once.

The Explanation holds the pixel map (each pixel gets its superpixel's weight)
and, in ``extras``, the segments and per-superpixel weights in lime's order,
from which :func:`xai_bridge.viz.masks.image_and_mask` rebuilds lime's
``get_image_and_mask`` view.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xai_bridge._validate import choice, int_at_least, int_or_default, number, to_uint8
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version
from xai_bridge.errors import ParameterError
from xai_bridge.options import Segmentation
from xai_bridge.registry import MethodSpec

from .._drift import LibraryClasses
from .._segments import map_images
from ._passes import first_pass, label_samples, second_pass

__all__ = ["LIME_SEGMENTATION_DEFAULTS", "lime", "segmenter"]

#: Parameters used when ``segmentation`` is just an algorithm name. quickshift's
#: are lime's own defaults; slic and felzenszwalb keep scikit-image's, except
#: that slic numbers superpixels from 0 as lime expects.
LIME_SEGMENTATION_DEFAULTS: dict[str, dict[str, Any]] = {
    "quickshift": {"kernel_size": 4, "max_dist": 200, "ratio": 0.2},
    "slic": {"start_label": 0},
    "felzenszwalb": {},
}

#: The ``feature_selection`` values lime's ``LimeBase.feature_selection`` knows.
FEATURE_SELECTION = ("auto", "forward_selection", "highest_weights", "lasso_path", "none")

_DEFAULTS: dict[str, Any] = {
    "num_samples": 1000,
    "hide_color": None,
    "segmentation": "quickshift",
    "batch_size": None,
    "num_features": 100000,
    "kernel_width": 0.25,
    "feature_selection": "auto",
}


def segmenter(spec: Any) -> tuple[Callable[[np.ndarray], np.ndarray], Any]:
    """Return ``(fn, description)``: ``fn`` maps a uint8 HWC image to int labels.

    Args:
        spec: an algorithm name (``"quickshift"``, ``"slic"``, ``"felzenszwalb"``,
            with :data:`LIME_SEGMENTATION_DEFAULTS`), an object with ``kind``
            and ``params`` attributes (e.g. ``Segmentation``) run through lime's
            ``SegmentationAlgorithm`` with exactly those params (unknown names
            raise; lime's wrapper would drop them), or any callable.

    Note: lime passes ``random_seed`` to quickshift, but scikit-image now calls
    it ``rng`` and lime's wrapper drops unknown names, so lime's quickshift
    always runs with scikit-image's default ``rng=42``; so does this one.
    Segmentation is deterministic either way.
    """
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    seg = Segmentation.ensure(
        spec,
        default=Segmentation("quickshift", LIME_SEGMENTATION_DEFAULTS["quickshift"]),
        kind_defaults=LIME_SEGMENTATION_DEFAULTS,
    )
    if not isinstance(seg, Segmentation):
        return seg, repr(seg)
    seg.function()  # checks the parameter names: lime's wrapper would drop unknown ones silently
    return SegmentationAlgorithm(str(seg.kind), **seg.params), seg.describe()


def _labels(segments: Any, shape: tuple[int, int]) -> np.ndarray:
    seg = np.asarray(segments)
    if seg.shape != shape:
        raise ParameterError(f"segmentation: expected labels of shape {shape}, got {seg.shape}")
    _, inverse = np.unique(seg, return_inverse=True)  # lime expects superpixels numbered 0..S-1
    return inverse.reshape(shape).astype(np.int32)


def _hide_color(value: Any) -> Any:
    """``hide_color`` as lime takes it: None, a number, or an RGB triple; colour names (``"red"``, ``"#ff0000"``) too."""
    if value is None:
        return None
    expected = "expected None (superpixel mean), a number, an RGB triple in 0..255 or a colour name like 'gray'"
    if isinstance(value, str):
        from PIL import ImageColor

        try:
            value = ImageColor.getrgb(value)[:3]
        except ValueError:
            raise ParameterError(f"hide_color: {expected}, got {value!r}") from None
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(f"hide_color: {expected}, got {value!r}") from None
    if arr.shape not in ((), (3,)) or not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 255:
        raise ParameterError(f"hide_color: {expected}, got {value!r}")
    return float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr)


def lime(request: ExplainRequest) -> BackendResult:
    """LIME image explanations: lime per image, the perturbed images of all images labelled together.

    Each image uses a fresh ``LimeImageExplainer(random_state=seed)``, so an
    image's result does not depend on the other images in the batch; lime has
    no batch API, so its sampling is split in two (see :mod:`._passes`) and
    the model calls span images: with N images, N times fewer partial calls.

    Params:
        num_samples: perturbed images per image (default 1000).
        hide_color: fill of hidden superpixels in pixel units 0-255 (number,
            RGB triple, or a colour name / hex string such as ``"gray"`` or
            ``"#808080"``), or None for each superpixel's mean colour (lime's default).
        segmentation: see :func:`segmenter` (default lime's quickshift).
        batch_size: images per ``classifier_fn`` call (default: the model's).
        num_features: superpixels kept in each explanation (lime's default: all).
        kernel_width: lime's kernel width (default 0.25).
        feature_selection: lime's feature selection (default ``"auto"``).

    Extras:
        segments: int32 ``(N, T, H, W)`` superpixel labels 0..S-1.
        superpixel_weights: float32 ``(N, T, S_max)``; NaN for superpixels not
            in the explanation and for padding.
        superpixel_order: int32 ``(N, T, S_max)``, superpixel ids in lime's
            order (decreasing ``|weight|``), padded with -1.
        intercept, local_score, local_pred: float32 ``(N, T)``: the surrogate's
            intercept, weighted R^2 and prediction on the unperturbed image.
    """
    from lime.wrappers.scikit_image import SegmentationAlgorithm

    params = check_params(request.method, request.params, _DEFAULTS)
    ctor, call = _options(params, request.model.batch_size)
    segment, seg_desc = segmenter(params["segmentation"])
    images, targets = request.images, request.targets
    h, w = images.shape[1:3]
    classifier_fn = _classifier(request.model)
    # lime's wrapper of a library algorithm runs on threads; a user's own callable in this one
    library = isinstance(segment, SegmentationAlgorithm)
    segments = np.stack([_labels(seg, (h, w)) for seg in map_images(segment, images, parallel=library)])
    # Two passes over lime: the first stops once each image's samples are drawn, the perturbed images of
    # every image are then labelled together (the calls span images), the second pass fits the surrogates.
    runs, samplings, fitted = first_pass(request, segments, classifier_fn, ctor, call)
    label_samples(samplings, classifier_fn, call["batch_size"])
    attributions, extras = second_pass(runs, fitted, targets, segments)
    return BackendResult(
        attributions=attributions,
        params={
            **params,
            "segmentation": seg_desc,
            **{key: call[key] for key in ("hide_color", "batch_size", "num_samples", "num_features")},
        },
        backend_version=library_version("lime"),
        extras=extras,
        uses_seed=True,
    )


def _classifier(model: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The ``classifier_fn`` lime calls: its float images back to uint8, through ``model.predict``."""

    def classifier_fn(batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8:
            batch = to_uint8(batch)
        return np.asarray(model.predict(batch), dtype=np.float64)

    return classifier_fn


def _options(params: dict[str, Any], model_batch_size: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checked params as lime's explainer takes them (``ctor``) and as ``explain_instance`` does (``call``)."""
    num_samples = int_at_least("num_samples", params["num_samples"], 2)
    num_features = int_at_least("num_features", params["num_features"], 1)
    batch_size = int_or_default("batch_size", params["batch_size"], model_batch_size)
    kernel_width = number("kernel_width", params["kernel_width"], 0, low_open=True)
    feature_selection = choice("feature_selection", params["feature_selection"], FEATURE_SELECTION)
    hide_color = _hide_color(params["hide_color"])
    call = {"hide_color": hide_color, "top_labels": None, "num_features": num_features}
    call.update(num_samples=num_samples, batch_size=batch_size)
    return {"kernel_width": kernel_width, "feature_selection": feature_selection}, call


def _lime_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`lime`'s evaluations: ``num_samples`` per image (all targets share them)."""
    return n * int(params.get("num_samples", _DEFAULTS["num_samples"]))


SPECS = (
    MethodSpec(
        name="lime.Lime",
        budget="num_samples",
        budget_default=int(_DEFAULTS["num_samples"]),
        evaluations=_lime_evals,
        quick={"num_samples": 12, "segmentation": "slic"},
        target=f"{__name__}:lime",
        requires=("lime", "skimage", "sklearn"),
        extra="lime",
        family="perturbation",
        signed=True,
        random=True,
        description="LIME image explanations (Ribeiro et al. 2016): superpixel weights and a pixel map; "
        "any model, batched through model.predict.",
        aliases=("lime",),
    ),
)

#: What the drift test reads: every public class of ``lime.lime_image`` is registered or excluded with a reason.
CLASSES = LibraryClasses(
    "lime.lime_image",
    "lime",
    routed={"LimeImageExplainer": "lime.Lime"},
    excluded={
        "ImageExplanation": "the library's result type, read into an Explanation by lime.Lime",
        "SegmentationAlgorithm": "the library's superpixel wrapper, the segmentation= option of lime.Lime",
    },
)
