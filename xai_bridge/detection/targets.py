"""Which detections of an image to explain: one vocabulary for every method.

``targets`` for a detector, per image (or one spec for all images):

* None: every detection scoring at least ``score_threshold``;
* ``xb.top_k(k)``: the ``k`` highest-scoring detections (whatever their score);
* a class name (``"dog"``) or a class index: that class's detections above the threshold;
* ``xb.Box(x0, y0, x1, y1)``: the detection that overlaps that box most (IoU).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.targets import TopK

from .detections import Detections, box_iou

__all__ = ["describe", "per_image", "select"]


def per_image(targets: Any, n_images: int) -> list[Any]:
    """One target spec per image: a list of ``n_images`` specs is per image, anything else is shared."""
    if isinstance(targets, list) and len(targets) == n_images and n_images > 1:
        return list(targets)
    if isinstance(targets, list) and n_images == 1 and len(targets) == 1:
        return list(targets)
    if isinstance(targets, list):
        raise ParameterError(
            f"targets: got {len(targets)} entries for {n_images} images; pass one entry per image or one spec for all"
        )
    return [targets] * n_images


def select(
    found: Detections,
    spec: Any,
    *,
    score_threshold: float,
    class_names: Sequence[str] | None,
    size: tuple[int, int],
    image: int = 0,
) -> np.ndarray:
    """Indices into ``found`` of the detections ``spec`` names, best score first (never empty)."""
    order = np.argsort(-found.scores, kind="stable")
    if isinstance(spec, TopK):
        if len(found) == 0:
            raise ParameterError(f"targets: image {image} has no detection at all; check the image and the model")
        return order[: spec.k]
    if spec is None or (isinstance(spec, str) and spec in ("all", "top1")):
        keep = order[found.scores[order] >= score_threshold]
        if spec == "top1":
            keep = order[:1]
        if len(keep) == 0:
            raise ParameterError(
                f"targets: no detection of image {image} scored >= score_threshold={score_threshold:g} "
                f"(highest: {_best(found, class_names)}); lower score_threshold= or pass targets=xb.top_k(1)"
            )
        return keep
    if _is_box(spec):
        return np.array([_match_box(found, spec, size, image)])
    label = _class_index(spec, class_names)
    keep = order[(found.labels[order] == label) & (found.scores[order] >= score_threshold)]
    if len(keep) == 0:
        name = class_names[label] if class_names is not None and label < len(class_names) else str(label)
        raise ParameterError(
            f"targets: no {name!r} detected in image {image} with score >= {score_threshold:g} "
            f"(found: {_listing(found, class_names)}); lower score_threshold= or pick another class"
        )
    return keep


def describe(found: Detections, class_names: Sequence[str] | None) -> list[str]:
    """A name per detection: ``"dog 0.93"``."""
    return [
        f"{_name(int(lab), class_names)} {score:.2f}" for lab, score in zip(found.labels, found.scores, strict=True)
    ]


def _is_box(spec: Any) -> bool:
    return type(spec).__name__ == "Box" or (
        isinstance(spec, tuple) and len(spec) == 4 and all(np.ndim(v) == 0 and not isinstance(v, str) for v in spec)
    )


def _match_box(found: Detections, box: Any, size: tuple[int, int], image: int) -> int:
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = size
    if not (x1 > x0 and y1 > y0) or x1 <= 0 or y1 <= 0 or x0 >= w or y0 >= h:
        raise ParameterError(
            f"targets: box {(x0, y0, x1, y1)} has no pixel inside image {image} of {w}x{h}; "
            "pass xb.Box(x0, y0, x1, y1) with x the column and y the row, in pixels"
        )
    iou = box_iou(np.array([[x0, y0, x1, y1]]), found.boxes)[0] if len(found) else np.zeros(0)
    if len(iou) == 0 or iou.max() <= 0:
        raise ParameterError(
            f"targets: no detection of image {image} overlaps box {(x0, y0, x1, y1)} "
            f"(found: {_listing(found, None)}); pass a box around a detected object"
        )
    return int(np.argmax(iou))


def _class_index(spec: Any, class_names: Sequence[str] | None) -> int:
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        return int(spec)
    if not isinstance(spec, str):
        raise ParameterError(
            f"targets: expected None, xb.top_k(k), a class name or index, or xb.Box(...), got {type(spec).__name__}"
        )
    if class_names is None:
        raise ParameterError(f"targets: {spec!r} is a class name but the detector has no class names; pass an index")
    matches = [i for i, name in enumerate(class_names) if name == spec]
    if not matches:
        matches = [i for i, name in enumerate(class_names) if name.lower() == spec.lower()]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ParameterError(f"targets: {spec!r} names several classes {matches}; pass the index")
    close = difflib.get_close_matches(spec, [str(n) for n in class_names], n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ParameterError(f"targets: the detector knows no class named {spec!r}{hint}")


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else f"class {label}"


def _best(found: Detections, class_names: Sequence[str] | None) -> str:
    if len(found) == 0:
        return "none"
    i = int(np.argmax(found.scores))
    return f"{found.scores[i]:.2f} {_name(int(found.labels[i]), class_names)!r}"


def _listing(found: Detections, class_names: Sequence[str] | None, limit: int = 5) -> str:
    names = describe(found.take(np.argsort(-found.scores, kind="stable")[:limit]), class_names)
    return ", ".join(names) + (", ..." if len(found) > limit else "") if names else "nothing"
