"""Models that are not classifiers: object detectors and segmentation models, sent to their own explain path.

``xb.explain(model, ...)`` explains one target per class for a classifier;
for a detector the targets are its detections, for a segmentation model its
regions. Both are recognised here without importing torch, and each is
handed to its own package (:mod:`xai_bridge.detection`,
:mod:`xai_bridge.segmentation`), which builds a model with one output per
target and calls the ordinary explain path on it.

``explain`` and ``explain_many`` share one dispatch: the methods are
planned once (:func:`~xai_bridge._plan.make_plan`: names resolved, the
budget mapped onto each method's own parameter, duplicates refused), every
method is checked against the detector or segmenter before any model work,
then each runs in turn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._plan import Step, checked_budget, make_plan
from .images import Layout
from .registry import Registry, default_registry

__all__ = ["NOT_SPECIAL", "explain_many_other_subject", "explain_other_subject", "is_detector"]

#: What :func:`explain_other_subject` returns for a classifier (the caller goes on).
NOT_SPECIAL: Any = object()

Methods = str | Sequence[str | tuple[str, Mapping[str, Any]]]


def is_detector(model: Any) -> bool:
    """Whether ``model`` is an object detector (see :func:`xai_bridge.detection.routing.is_detector`)."""
    from .detection.routing import is_detector as known

    return known(model)


def explain_other_subject(
    model: Any,
    images: Any,
    method: str,
    params: dict[str, Any],
    targets: Any,
    budget: int | None,
    seed: int,
    preprocess: Any,
    layout: Layout | str | None,
    registry: Registry,
    progress: Any,
) -> Any:
    """``explain`` on a detector (a list of Explanations) or a segmenter (one), or :data:`NOT_SPECIAL`."""
    results = explain_many_other_subject(
        model, images, [(method, params)], targets, budget, seed, preprocess, layout, registry, progress
    )
    if results is NOT_SPECIAL:
        return NOT_SPECIAL
    [result] = results.values()
    return result


def explain_many_other_subject(
    model: Any,
    images: Any,
    methods: Methods,
    targets: Any,
    budget: int | None,
    seed: int,
    preprocess: Any,
    layout: Layout | str | None,
    registry: Registry | None,
    progress: Any,
) -> Any:
    """``explain_many`` on a detector or a segmenter: ``{method as given: its result}``, or :data:`NOT_SPECIAL`.

    A detector's result per method is a list, one Explanation per image; a
    segmenter's one Explanation for all images (:func:`~xai_bridge.segmentation.routing.explain_stacked`).
    """
    from .segmentation.routing import as_segmenter

    segmenter = as_segmenter(model, preprocess)
    if segmenter is None and not is_detector(model):
        return NOT_SPECIAL
    registry = registry or default_registry()
    plan = make_plan(registry, methods, checked_budget(budget))  # the budget mapped once, for every method
    if segmenter is not None:
        return _explain_segmenter(segmenter, images, plan, targets, seed, layout, registry, progress)
    return _explain_detector(model, images, plan, targets, seed, preprocess, layout, registry, progress)


def _explain_segmenter(
    segmenter: Any,
    images: Any,
    plan: list[Step],
    targets: Any,
    seed: int,
    layout: Layout | str | None,
    registry: Registry,
    progress: Any,
) -> Any:
    """Each step on a segmentation model, every method checked first: ``{given: one Explanation for all images}``."""
    from .many import Explanations
    from .segmentation.routing import check_method, explain_stacked

    for step in plan:
        check_method(step.spec, segmenter)
    kw = {"seed": seed, "layout": layout, "registry": registry, "progress": progress}
    return Explanations(
        {
            step.given: explain_stacked(
                segmenter, images, step.given, targets, budget=step.refused_budget, **kw, **step.params
            )
            for step in plan
        }
    )


def _explain_detector(
    model: Any,
    images: Any,
    plan: list[Step],
    targets: Any,
    seed: int,
    preprocess: Any,
    layout: Layout | str | None,
    registry: Registry,
    progress: Any,
) -> dict[str, list[Any]]:
    """Each step on an object detector, every method checked first: ``{given: one Explanation per image}``.

    ``explain``'s default ``targets="top1"`` means, for a detector, every
    detection above ``score_threshold=`` (0.5), as
    :func:`~xai_bridge.detection.explain_detections` does; ``xb.top_k(1)`` is
    the best one. ``preprocess=`` or ``weights=`` is a torchvision detector's
    weights enum (its categories).
    """
    from .detection.routing import as_detector, check_method, explain_detections

    detectors = [as_detector(model, preprocess, weights=step.params.get("weights")) for step in plan]
    for step, detector in zip(plan, detectors, strict=True):
        check_method(step.spec, detector)
    chosen = None if isinstance(targets, str) and targets == "top1" else targets
    out = {}
    for step, detector in zip(plan, detectors, strict=True):
        params = {k: v for k, v in step.params.items() if k != "weights"}
        out[step.given] = explain_detections(
            detector,
            images,
            step.given,
            chosen,
            budget=step.refused_budget,
            seed=seed,
            layout=layout,
            registry=registry,
            progress=progress,
            **params,
        )
    return out
