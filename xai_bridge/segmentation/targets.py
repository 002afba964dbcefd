"""Which regions of an image to explain: one vocabulary for every method.

``targets`` for a segmenter, per image (or one spec for all images):

* None: every class the model predicts (argmax) on at least ``min_fraction``
  of the pixels, biggest first;
* ``xb.top_k(k)`` (``"top1"``, ``explain``'s default): the ``k`` classes
  predicted on the most pixels;
* a class name (``"road"``) or index: the pixels predicted as that class;
* ``xb.Region(mask, label)``: the pixels of a bool ``(H, W)`` mask, for class ``label``;
* a list of those (several targets of one image), or one entry per image.

Every region is fixed on the unperturbed image.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.targets import TopK, _as_top_k

__all__ = ["Region", "describe", "per_image", "select"]


@dataclass(frozen=True, eq=False)
class Region:
    """A region to explain: a bool ``(H, W)`` mask of the image and the class whose logits are summed in it.

    Example::

        road = xb.Region(mask, "road")  # mask: bool (H, W), True on the pixels to explain
        exp = xb.explain(segmenter, "street.jpg", "gradcam.GradCAM", targets=road)

    Attributes:
        mask: bool ``(H, W)``, the image's size, with at least one True pixel.
        label: the class, by name or index.
    """

    mask: np.ndarray
    label: str | int

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2 or mask.dtype.kind not in "biuf":
            raise ParameterError(
                f"Region.mask: expected a bool (H, W) array, got {mask.dtype} of shape {mask.shape}; "
                "pass one image's mask, e.g. labels == k"
            )
        mask = mask.astype(bool)
        if not mask.any():
            raise ParameterError(
                f"Region.mask: the mask of {self.label!r} is empty (no True pixel of {mask.shape[0]}x{mask.shape[1]}); "
                "pass a mask that marks the pixels to explain"
            )
        mask.setflags(write=False)
        object.__setattr__(self, "mask", mask)
        if isinstance(self.label, bool) or not isinstance(self.label, (str, int, np.integer)):
            raise ParameterError(f"Region.label: expected a class name or index, got {self.label!r}")

    def __repr__(self) -> str:
        return f"Region({self.label!r}, {int(self.mask.sum())} of {self.mask.size} pixels)"


def per_image(targets: Any, n_images: int) -> list[Any]:
    """One target spec per image: a list of ``n_images`` entries is per image when ``N > 1``, else shared."""
    if isinstance(targets, list) and n_images > 1:
        if len(targets) != n_images:
            raise ParameterError(
                f"targets: got {len(targets)} entries for {n_images} images; pass one entry per image or one spec for all"
            )
        return list(targets)
    return [targets] * n_images


def select(
    logits: np.ndarray,
    spec: Any,
    *,
    class_names: Sequence[str] | None,
    min_fraction: float,
    image: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The regions ``spec`` names on one image's logits ``(C, H, W)``: bool ``(T, H, W)`` and classes ``(T,)``."""
    predicted = np.argmax(logits, axis=0)
    n_classes, size = logits.shape[0], predicted.shape
    spec = _as_top_k(spec)
    if spec is None or isinstance(spec, TopK):
        counts = np.bincount(predicted.ravel(), minlength=n_classes)
        order = np.argsort(-counts, kind="stable")
        order = order[counts[order] > 0]
        classes = order[: spec.k] if isinstance(spec, TopK) else order[counts[order] >= min_fraction * predicted.size]
        if len(classes) == 0:
            raise ParameterError(
                f"targets: no class covers >= min_fraction={min_fraction:g} of image {image} "
                f"(largest: {_listing(counts, class_names)}); lower min_fraction= or pass targets=xb.top_k(1)"
            )
        return predicted[None] == classes[:, None, None], classes.astype(np.int64)
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise ParameterError(f"targets: image {image} got an empty list; pass at least one class or xb.Region")
    masks, classes = [], []
    for item in items:
        if isinstance(item, Region):
            label = _class_index(item.label, class_names, n_classes)
            if item.mask.shape != size:
                raise ParameterError(
                    f"targets: the Region mask of {item.label!r} is {item.mask.shape[0]}x{item.mask.shape[1]} but "
                    f"image {image} is {size[0]}x{size[1]} (H x W); pass a bool mask of the image's size"
                )
            masks.append(item.mask)
        else:
            label = _class_index(item, class_names, n_classes)
            mask = predicted == label
            if not mask.any():
                counts = np.bincount(predicted.ravel(), minlength=n_classes)
                raise ParameterError(
                    f"targets: {_name(label, class_names)!r} is predicted on no pixel of image {image} "
                    f"(predicted: {_listing(counts, class_names)}); pass xb.Region(mask, {item!r}) to explain "
                    "a region you choose"
                )
            masks.append(mask)
        classes.append(label)
    return np.stack(masks), np.asarray(classes, np.int64)


def describe(regions: np.ndarray, classes: np.ndarray, class_names: Sequence[str] | None) -> list[str]:
    """A name per region: ``"road (12.4% of pixels)"``."""
    return [
        f"{_name(int(c), class_names)} ({100 * float(m.mean()):.1f}% of pixels)"
        for m, c in zip(regions, classes, strict=True)
    ]


def _class_index(spec: Any, class_names: Sequence[str] | None, n_classes: int) -> int:
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if not 0 <= int(spec) < n_classes:
            raise ParameterError(f"targets: class {int(spec)} is out of range for a segmenter with {n_classes} classes")
        return int(spec)
    if not isinstance(spec, str):
        raise ParameterError(
            f"targets: expected None, xb.top_k(k), a class name or index, or xb.Region(mask, label), "
            f"got {type(spec).__name__}"
        )
    if class_names is None:
        raise ParameterError(f"targets: {spec!r} is a class name but the segmenter has no class names; pass an index")
    lowered = [str(n).lower() for n in class_names]
    if spec.lower() in lowered:
        return lowered.index(spec.lower())
    close = difflib.get_close_matches(spec.lower(), lowered, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(class_names[lowered.index(c)]) for c in close)}?" if close else ""
    raise ParameterError(f"targets: the segmenter knows no class named {spec!r}{hint}")


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return str(class_names[label]) if class_names is not None and 0 <= label < len(class_names) else f"class {label}"


def _listing(counts: np.ndarray, class_names: Sequence[str] | None, limit: int = 4) -> str:
    total = max(int(counts.sum()), 1)
    order = [int(i) for i in np.argsort(-counts, kind="stable")[:limit] if counts[i] > 0]
    return ", ".join(f"{_name(i, class_names)} {100 * counts[i] / total:.1f}%" for i in order) or "nothing"
