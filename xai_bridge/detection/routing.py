"""Explain an object detector: one map per detection, through any perturbation method."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from xai_bridge.explanation import Explanation
from xai_bridge.images import Layout, load_images
from xai_bridge.progress import ProgressArg, session, set_prefix
from xai_bridge.registry import Registry, default_registry

from .detections import Detections, Detector
from .score_model import DetectionScoreModel
from .targets import describe, per_image, select

__all__ = ["explain_detections"]


def explain_detections(
    detector: Detector,
    images: Any,
    method: str = "builtin.DRISE",
    /,
    targets: Any = None,
    *,
    score_threshold: float = 0.5,
    seed: int = 0,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's detections, one target per detection.

    For every image: detect, pick the target detections (see
    :mod:`xai_bridge.detection.targets`), wrap detector and targets in a
    :class:`DetectionScoreModel` and run :func:`xai_bridge.explain` with
    ``method``. Each image has its own detections, so each gets its own
    :class:`~xai_bridge.Explanation` (``N == 1``).

    Args:
        detector: a detector adapter (:class:`~xai_bridge.adapters.models.detectors.DetectionModel`,
            a torchvision detector wrapped by ``as_detector``).
        images: anything :func:`~xai_bridge.load_images` reads.
        method: a perturbation method: ``"builtin.DRISE"`` (default), ``"builtin.RISE"``,
            ``"builtin.Occlusion"``, ``"shap.Partition"``, ``"lime.Lime"``...
        targets: None (every detection above ``score_threshold``), ``xb.top_k(k)``,
            a class name or index, ``xb.Box(x0, y0, x1, y1)``, or one of those per image.
        score_threshold: the lowest score of a detection explained by default.
        seed: random seed.
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: as in :func:`xai_bridge.explain`.
        **params: the method's own parameters. ``shap.Partition`` also takes
            ``partition="boxes"``: the image's detections above
            ``score_threshold`` as its regions, each box one region.

    Returns:
        One Explanation per image: ``targets`` are the detections' class indices,
        ``target_names`` ``"dog 0.93"``, ``scores`` the detections' scores, and
        ``extras["boxes"]`` float ``(1, T, 4)`` their boxes ``(x0, y0, x1, y1)``.
    """
    registry = registry or default_registry()
    rows = load_images(images, layout=layout)
    specs = per_image(targets, len(rows))
    results = []
    with session(progress, f"detections {method}"):
        for i, image in enumerate(rows):
            if len(rows) > 1:
                set_prefix(f"image {i + 1}/{len(rows)} ")
            found, chosen = _targets_of(detector, image, specs[i], score_threshold, i)
            own = dict(params)
            if isinstance(own.get("partition"), str) and own["partition"] == "boxes":  # the detections as regions
                own["partition"] = found.take(found.scores >= score_threshold)
            results.append(_explain_image(detector, image, chosen, method, score_threshold, seed, registry, own))
    return results


def _targets_of(
    detector: Detector, image: np.ndarray, spec: Any, score_threshold: float, i: int
) -> tuple[Detections, Detections]:
    """Detect on the unperturbed image: everything found, and the detections ``spec`` names (never none)."""
    found = detector.detect(image[None])[0]
    names = getattr(detector, "class_names", None)
    index = select(found, spec, score_threshold=score_threshold, class_names=names, size=image.shape[:2], image=i)
    return found, found.take(index)


def _explain_image(
    detector: Detector,
    image: np.ndarray,
    chosen: Detections,
    method: str,
    score_threshold: float,
    seed: int,
    registry: Registry,
    params: dict[str, Any],
) -> Explanation:
    """One image's detections through ``method``, with their boxes, labels and scores on the result."""
    from xai_bridge.routing import explain

    model = DetectionScoreModel(detector, chosen, describe(chosen, getattr(detector, "class_names", None)))
    exp = explain(
        model, image[None], method, targets=[list(range(len(chosen)))], seed=seed, registry=registry, **params
    )
    return replace(
        exp,
        targets=chosen.labels[None].astype(np.int64),
        scores=chosen.scores[None].astype(np.float32),
        extras={**dict(exp.extras), "boxes": chosen.boxes[None].astype(np.float32)},
        params={**dict(exp.params), "score_threshold": score_threshold, "detector": type(detector).__name__},
    )
