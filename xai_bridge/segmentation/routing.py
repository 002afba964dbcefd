"""Explain a semantic segmentation model: one map per region, through every method.

For each image: segment it once, pick the target regions
(:mod:`xai_bridge.segmentation.targets`), wrap segmenter and regions in a
score model with one output per region (the region's summed class logits,
:func:`~xai_bridge.segmentation.segmenter.region_scores`) and run
:func:`xai_bridge.explain` on it: gradient and CAM methods through the torch
twin of a :class:`GradientSegmenter`, perturbation methods through either.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.images import Layout, load_images
from xai_bridge.models import adapter_table, softmax
from xai_bridge.progress import ProgressArg, session, set_prefix
from xai_bridge.registry import MethodSpec, Registry, default_registry

from .segmenter import GradientSegmenter, SegmentationScoreModel, Segmenter
from .targets import describe, per_image, select

__all__ = ["as_segmenter", "check_method", "explain_segmentation", "explain_stacked", "score_model"]

#: The share of an image's pixels a class must be predicted on to be explained by default.
MIN_FRACTION = 0.01


def as_segmenter(model: Any, preprocess: Any = None) -> Segmenter | None:
    """``model`` as a :class:`Segmenter` when it is one or an adapter recognises it, else None.

    Recognised with no wrapper: torchvision's segmentation models (DeepLabV3,
    FCN, LRASPP) and Hugging Face ``...ForSemanticSegmentation`` models;
    ``preprocess`` is their torchvision weights enum or image processor.
    """
    if isinstance(model, Segmenter) and callable(getattr(model, "segment", None)):
        return model
    for entry in getattr(adapter_table(), "SEGMENTERS", ()):
        if entry.recognise(model):
            segmenter: Segmenter = entry.wrap(model, preprocess)
            return segmenter
    return None


def score_model(segmenter: Segmenter, regions: np.ndarray, classes: np.ndarray, names: list[str]) -> Any:
    """The model every method explains: the torch twin for a :class:`GradientSegmenter`, else numpy."""
    if isinstance(segmenter, GradientSegmenter) and callable(getattr(segmenter, "segment_torch", None)):
        from xai_bridge.adapters.models._region_scores import RegionScoreModel

        return RegionScoreModel(segmenter, regions, classes, names)
    return SegmentationScoreModel(segmenter, regions, classes, names)


def explain_segmentation(
    segmenter: Any,
    images: Any,
    method: str = "gradcam.GradCAM",
    /,
    targets: Any = None,
    *,
    min_fraction: float = MIN_FRACTION,
    seed: int = 0,
    preprocess: Any = None,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's regions, one target per region; one Explanation per image.

    Args:
        segmenter: a :class:`Segmenter`, a torchvision segmentation model or a
            Hugging Face ``...ForSemanticSegmentation`` model.
        images: anything :func:`~xai_bridge.load_images` reads.
        method: any registered method: gradient and CAM methods need a torch segmenter.
        targets: None (every class predicted on at least ``min_fraction`` of
            the pixels, biggest first), ``xb.top_k(k)``, a class name or index,
            ``xb.Region(mask, label)``, a list of those, or one entry per image.
        min_fraction: the share of pixels a class needs to be a default target.
        seed: random seed.
        preprocess: the model's torchvision weights enum or image processor.
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: as in :func:`xai_bridge.explain`.
        **params: the method's own parameters (and ``budget=``).

    Returns:
        One Explanation per image (each image has its own regions): ``targets``
        the regions' classes, ``target_names`` ``"road (12.4% of pixels)"``,
        ``scores`` the class's mean probability in the region, and
        ``extras["regions"]`` bool ``(1, T, H, W)``.
    """
    model = as_segmenter(segmenter, preprocess)
    if model is None:
        raise ParameterError(
            f"segmenter: expected a segmentation model, got {type(segmenter).__name__}; pass a torchvision or "
            "Hugging Face segmentation model, or an object with segment(images) -> (N, C, H, W) logits"
        )
    registry = registry or default_registry()
    check_method(registry.spec(method), model)
    rows = load_images(images, layout=layout)
    specs = per_image(targets, len(rows))
    results = []
    with session(progress, f"segmentation {method}"):
        for i, image in enumerate(rows):
            if len(rows) > 1:
                set_prefix(f"image {i + 1}/{len(rows)} ")
            results.append(_explain_image(model, image, specs[i], i, method, min_fraction, seed, registry, params))
    return results


def check_method(spec: MethodSpec, segmenter: Segmenter) -> None:
    """Refuse, in one line and before any model work, a method that cannot explain ``segmenter``'s regions.

    Every method whose map explains the target it is asked for applies; not
    those made for one kind of model (a detector's D-RISE, a vision
    transformer's attention), nor those with targets of their own (Deep
    Feature Factorization's concepts); gradient and CAM methods need a
    :class:`GradientSegmenter`.
    """
    method = spec.name
    if spec.own_targets or spec.model_kind != "any":
        what = "targets of its own" if spec.own_targets else f"a {spec.model_kind}'s outputs"
        raise MethodNotApplicableError(
            f"method: {method} explains {what}, not one map per region of a segmentation model; use a CAM "
            "(gradcam.GradCAM), a captum gradient method or a perturbation method (builtin.Occlusion, shap.Partition)"
        )
    if spec.needs_gradients and not isinstance(segmenter, GradientSegmenter):
        raise MethodNotApplicableError(
            f"method: {method!r} needs gradients, but {type(segmenter).__name__} has no segment_torch(pixels); "
            "use a perturbation method (builtin.Occlusion, builtin.RISE, shap.Partition, lime.Lime) or add one"
        )


def _explain_image(
    segmenter: Segmenter,
    image: np.ndarray,
    spec: Any,
    i: int,
    method: str,
    min_fraction: float,
    seed: int,
    registry: Registry,
    params: dict[str, Any],
) -> Explanation:
    """One image: segment, choose the regions, explain the score model, put regions and scores on the result."""
    from xai_bridge.routing import explain

    logits = np.asarray(segmenter.segment(image[None])[0], np.float64)
    names = segmenter.class_names
    regions, classes = select(logits, spec, class_names=names, min_fraction=min_fraction, image=i)
    labels = describe(regions, classes, names)
    model = score_model(segmenter, regions, classes, labels)
    exp = explain(
        model, image[None], method, targets=[list(range(len(classes)))], seed=seed, registry=registry, **params
    )
    probs = softmax(logits, axis=0)[classes]  # (T, H, W)
    mean_prob = (probs * regions).sum(axis=(1, 2)) / regions.sum(axis=(1, 2))
    return replace(
        exp,
        targets=classes[None],
        scores=mean_prob[None].astype(np.float32),
        extras={**dict(exp.extras), "regions": regions[None]},
        params={**dict(exp.params), "segmenter": type(segmenter).__name__},
    )


def explain_stacked(segmenter: Segmenter, images: Any, method: str, targets: Any, **kwargs: Any) -> Explanation:
    """:func:`explain_segmentation` as one Explanation for all images (``xb.explain``'s segmentation path).

    ``explain``'s default ``"top1"`` is the class predicted on the most
    pixels. Images must have as many regions each.
    """
    results = explain_segmentation(segmenter, images, method, targets, **kwargs)
    counts = sorted({r.targets.shape[1] for r in results})
    if len(counts) > 1:
        raise ParameterError(
            f"targets: the images have {counts} regions each, and one Explanation needs as many per image; "
            "pass as many targets per image, or use xb.explain_segmentation (one Explanation per image)"
        )
    if len(results) == 1:
        return results[0]
    first = results[0]
    joined: dict[str, Any] = {
        f: np.concatenate([getattr(r, f) for r in results]) for f in ("attributions", "images", "targets")
    }
    optional: dict[str, Any] = {
        f: np.concatenate([getattr(r, f) for r in results]) if all(getattr(r, f) is not None for r in results) else None
        for f in ("raw", "base_scores")
    }
    keys = set.intersection(*(set(r.extras) for r in results))
    return replace(
        first,
        **joined,
        **optional,
        target_names=np.concatenate([r.target_names for r in results]),
        scores=np.concatenate([r.scores for r in results]),
        extras={k: np.concatenate([r.extras[k] for r in results]) for k in keys},
        n_model_evals=sum(r.n_model_evals for r in results),
        seconds=sum(r.seconds for r in results),
    )
