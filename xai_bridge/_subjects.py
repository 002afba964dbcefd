"""Models that are not classifiers: object detectors and segmentation models, sent to their own explain path.

``xb.explain(model, ...)`` explains one target per class for a classifier;
for a detector the targets are its detections, for a segmentation model its
regions. Both are recognised here without importing torch, and each is
handed to its own package (:mod:`xai_bridge.detection`,
:mod:`xai_bridge.segmentation`), which builds a model with one output per
target and calls the ordinary explain path on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import ParameterError
from .images import Layout
from .registry import Registry, default_registry

__all__ = ["NOT_SPECIAL", "explain_many_detector", "explain_other_subject", "is_detector"]

#: What :func:`explain_other_subject` returns for a classifier (the caller goes on).
NOT_SPECIAL: Any = object()


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
    """A detector's or a segmenter's explanations, or :data:`NOT_SPECIAL` for any other model."""
    from .segmentation.routing import as_segmenter, explain_stacked

    if (segmenter := as_segmenter(model, preprocess)) is not None:
        kw = {"seed": seed, "layout": layout, "registry": registry, "progress": progress}
        return explain_stacked(segmenter, images, method, targets, budget=budget, **kw, **params)
    if is_detector(model):
        return _explain_detector(
            model, images, method, {**params, "progress": progress}, targets, budget, seed, preprocess, layout, registry
        )
    return NOT_SPECIAL


def explain_many_detector(
    model: Any,
    images: Any,
    methods: Any,
    targets: Any,
    budget: int | None,
    seed: int,
    preprocess: Any,
    layout: Layout | str | None,
    registry: Registry | None,
    progress: Any,
) -> dict[str, list[Any]]:
    """``explain_many`` on a detector: ``{method: one Explanation per image}``."""
    registry = registry or default_registry()
    steps = [
        (m, {"progress": progress}) if isinstance(m, str) else (m[0], {**m[1], "progress": progress})
        for m in _method_list(methods)
    ]
    return {
        name: _explain_detector(model, images, name, params, targets, budget, seed, preprocess, layout, registry)
        for name, params in steps
    }


def _method_list(methods: Any) -> list[Any]:
    if isinstance(methods, str):
        return [methods]
    if not isinstance(methods, Sequence):
        raise ParameterError(f"methods: expected method names or (name, params) pairs, got {methods!r}")
    for entry in methods:
        if not (isinstance(entry, str) or (isinstance(entry, tuple) and len(entry) == 2)):
            raise ParameterError(f"methods: expected method names or (name, params) pairs, got {entry!r}")
    return list(methods)


def _explain_detector(
    model: Any,
    images: Any,
    method: str,
    params: dict[str, Any],
    targets: Any,
    budget: int | None,
    seed: int,
    preprocess: Any,
    layout: Layout | str | None,
    registry: Registry | None,
) -> Any:
    """An object detector: :func:`~xai_bridge.detection.explain_detections`, one Explanation per image, in a list.

    ``explain``'s default ``targets="top1"`` means, for a detector, every
    detection above ``score_threshold=`` (0.5), as :func:`explain_detections`
    does; ``xb.top_k(1)`` is the best one. ``preprocess=`` or ``weights=`` is a
    torchvision detector's weights enum (its categories).
    """
    from .detection.routing import as_detector, explain_detections

    params = dict(params)
    detector = as_detector(model, preprocess, weights=params.pop("weights", None))
    chosen = None if isinstance(targets, str) and targets == "top1" else targets
    return explain_detections(
        detector, images, method, chosen, budget=budget, seed=seed, layout=layout, registry=registry, **params
    )
