"""shap's Partition explainer on image pixels, for any model: shap's axis-aligned tree or semantic regions.

The explainer sees float HWC images in [0, 255]; the function it calls rounds
them back to uint8 and goes through ``model.predict`` (batched), so torch
modules, NHWC array callables and black boxes need no user wrapper. Maskers
are an :class:`~xai_bridge.options.ImageMasker` at the API; shap's strings
(``"blur(128,128)"``) are produced only when the shap masker is built
(:mod:`._maskers`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from xai_bridge._seeding import numpy_seeded
from xai_bridge._validate import choice, int_at_least
from xai_bridge.batching import merged_calls
from xai_bridge.contract import BackendResult, ExplainRequest, check_params
from xai_bridge.options import ImageMasker, MaskKind, Segmentation

from ._maskers import PredictUint8, partition_explainer

__all__ = ["PARTITION_DEFAULTS", "partition", "partition_evals"]

PARTITION_DEFAULTS: dict[str, Any] = {
    "masker": MaskKind.INPAINT_TELEA,
    "max_evals": 500,
    "batch_size": 50,
    "fixed_context": None,
    "partition": None,
}


def partition(request: ExplainRequest) -> BackendResult:
    """Shap's Partition explainer on image pixels: Owen values with hierarchical masking.

    Lundberg & Lee 2017 (https://arxiv.org/abs/1705.07874); the masking follows
    shap's image examples. The partition hierarchy is shap's axis-aligned split of ``(H, W, 3)``. Values
    satisfy efficiency: their sum over pixels and channels is
    ``f(x) - f(fully masked)``; ``base_scores`` holds ``f(fully masked)``.
    Every masked image reaches the model as uint8 (the model contract), so a
    blur or constant fill is rounded to whole pixel values where shap, given a
    float model function, would pass the float fill: ``base_scores`` can differ
    from shap's own base value by that rounding (issue 28 measured 2.7% on
    seed 003's mean-colour fill); the values still add up to ``f(x)`` minus
    ``base_scores`` as computed here.
    shap breaks priority ties with numpy's global RNG: it is seeded with
    ``request.seed`` for each image alone (and restored), so results are
    reproducible and an image's values do not depend on the other images.
    Several images are explained concurrently, their model calls merged into
    shared forward passes (:func:`~xai_bridge.batching.merged_calls`).

    Params:
        masker: :class:`ImageMasker`, a :class:`MaskKind` or shap's string
            (default ``"inpaint_telea"``; a model with a ``default_image_masker``
            gives its own: a detector's is a blur as large as the image).
        max_evals: model evaluations per image (default 500, shap's).
        batch_size: masked images per model call; it also decides which
            partitions are expanded within ``max_evals`` (default 50).
        fixed_context: shap's ``fixed_context`` (None, 0 or 1).
        partition: the feature hierarchy. None (default): shap's axis-aligned
            split of the pixels. Otherwise semantic regions, merged bottom-up
            by adjacency and colour (:mod:`~xai_bridge.adapters.methods._regions`):
            an ``xb.Segmentation`` (or a kind name, a dict, a callable
            ``image -> int labels``), an int label image ``(H, W)``, or bool
            masks ``(K, H, W)`` (the rest of the image is one more region).
            Each region gets one Owen value, spread evenly over its pixels;
            the regions are in ``extras["segments"]``.
    """
    import shap

    params = check_params(request.method, request.params, PARTITION_DEFAULTS)
    masker = _masker(request, params["masker"])
    max_evals = int_at_least("max_evals", params["max_evals"], 2)
    batch_size = int_at_least("batch_size", params["batch_size"], 1)
    params["fixed_context"] = choice("fixed_context", params["fixed_context"], [None, 0, 1])
    images, targets = request.images, request.targets
    _, h, w, _ = images.shape
    shape = (h, w, 3)
    mask_value = masker.shap_mask_value(shape)
    call = {"max_evals": max_evals, "batch_size": batch_size, "fixed_context": params["fixed_context"], "silent": True}
    effective = {**params, "masker": masker, "max_evals": max_evals, "batch_size": batch_size}
    if params["partition"] is not None:
        return _partition_regions(request, call, mask_value, effective)
    del effective["partition"]  # the axis-aligned run records what it always did

    def explain_one(i: int, predict: Callable[[np.ndarray], np.ndarray]) -> Any:
        explainer = partition_explainer(predict, mask_value, shape)
        return explainer(images[i : i + 1].astype(np.float64), outputs=targets[i], **call)

    outs = _each_image(request, explain_one)
    values = np.stack([np.transpose(np.asarray(o.values).reshape(h, w, 3, -1), (3, 2, 0, 1)) for o in outs])
    values = values.astype(np.float32)  # (N, T, 3, H, W)
    base = np.stack([np.asarray(o.base_values).reshape(-1) for o in outs]).astype(np.float32)
    return BackendResult(
        attributions=values.sum(axis=2),
        raw=values,
        base_scores=base,
        params=effective,
        backend_version=shap.__version__,
        uses_seed=True,
    )


def _masker(request: ExplainRequest, given: Any) -> ImageMasker:
    """``masker=``, else the model's ``default_image_masker(height, width)`` where it has one (a detector's).

    Classifiers keep shap's default, inpainting.
    """
    default = getattr(request.model, "default_image_masker", None)
    if "masker" in request.params or default is None:
        return ImageMasker.parse(given)
    _, h, w, _ = request.images.shape
    return ImageMasker.parse(default(h, w))


def _each_image(
    request: ExplainRequest, explain_one: Callable[[int, Callable[[np.ndarray], np.ndarray]], Any]
) -> list[Any]:
    """``explain_one(i, predict)`` for every image: one explainer per image, each seeded alone.

    An image's values then do not depend on the other images; with several
    images they run at once and share forward passes (their rounds depend
    on each other).
    """
    n = len(request.images)
    if n == 1:
        with numpy_seeded(request.seed):
            return [explain_one(0, request.model.predict)]
    jobs = [functools.partial(explain_one, i) for i in range(n)]
    return list(merged_calls(request.model.predict, jobs, numpy_seeds=[request.seed] * n))


def _partition_regions(
    request: ExplainRequest, call: dict[str, Any], mask_value: Any, effective: dict[str, Any]
) -> BackendResult:
    """The Partition explainer over each image's semantic regions (see :mod:`.._regions`)."""
    import shap

    from .._regions import region_masker, regions_of, spread
    from .._segments import map_images

    images, targets = request.images, request.targets
    spec = effective["partition"]
    library = not callable(spec) or isinstance(spec, Segmentation)
    regions = map_images(lambda image: regions_of(spec, image), images, parallel=library)

    def explain_one(i: int, predict: Callable[[np.ndarray], np.ndarray]) -> Any:
        masker = region_masker(regions[i], images[i], mask_value)
        explainer = shap.explainers.Partition(PredictUint8(predict), masker)
        return explainer(images[i : i + 1].astype(np.float64), outputs=targets[i], **call)

    outs = _each_image(request, explain_one)
    t = targets.shape[1]
    maps = np.stack(
        [
            spread(np.asarray(o.values, np.float64).reshape(r.count, t), r.labels)
            for o, r in zip(outs, regions, strict=True)
        ]
    )
    base = np.stack([np.asarray(o.base_values).reshape(-1) for o in outs]).astype(np.float32)
    segments = np.stack([r.labels for r in regions])
    return BackendResult(
        attributions=maps.astype(np.float32),
        base_scores=base,
        params={**effective, "partition": _describe_partition(spec, regions)},
        backend_version=shap.__version__,
        uses_seed=True,
        extras={"segments": np.repeat(segments[:, None], t, axis=1)},
    )


def _describe_partition(spec: Any, regions: list[Any]) -> Any:
    """A JSON-able record of the ``partition=`` value: its description and the region count per image."""
    return {"regions": regions[0].description, "count": [r.count for r in regions]}


def partition_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`partition`'s evaluations: ``max_evals`` per image (all targets share them)."""
    return n * int(params.get("max_evals", PARTITION_DEFAULTS["max_evals"]))
