"""The segmenter protocol, and the one score of a segmentation target on any (perturbed) image.

A semantic segmentation model gives, per image, class logits ``(C, H, W)``
at the image's size. Explaining a region asks how much each pixel matters
for the model to keep predicting the region's class *there*; every method
needs one number per target and perturbed image, defined here once, as
pytorch-grad-cam's ``SemanticSegmentationTarget`` defines it: the sum of the
class's logits over the region's pixels,

    s(image) = sum over (y, x) in region of logits(image)[class, y, x].

The region is fixed on the unperturbed image; only the logits change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xai_bridge.models import OutputKind

__all__ = ["GradientSegmenter", "SegmentationScoreModel", "Segmenter", "region_scores"]


@runtime_checkable
class Segmenter(Protocol):
    """What xai-bridge needs of a semantic segmentation model (model adapters implement it).

    Attributes:
        class_names: one name per class index, or None.
        batch_size: largest batch ``segment`` is given at once.
    """

    class_names: Sequence[str] | None
    batch_size: int

    def segment(self, images: np.ndarray) -> np.ndarray:
        """float32 logits ``(N, C, H, W)`` at the size of the uint8 ``(N, H, W, 3)`` images."""
        ...


@runtime_checkable
class GradientSegmenter(Segmenter, Protocol):
    """A segmenter whose logits are differentiable in its input pixels (the gradient and CAM path).

    Attributes:
        module: the user's ``torch.nn.Module`` (guarded while explained; CAM layers are named in it).
    """

    module: Any

    def segment_torch(self, pixels: Any) -> Any:
        """Logits ``(N, C, H, W)`` of float32 ``(N, 3, H, W)`` RGB pixels in ``[0, 1]``, differentiable.

        The module's mode is the caller's to guard.
        """
        ...


def region_scores(logits: np.ndarray, regions: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """float64 ``(N, T)``: each target's class logits summed over its region.

    Args:
        logits: ``(N, C, H, W)``.
        regions: bool ``(T, H, W)``, fixed on the unperturbed image.
        classes: int ``(T,)`` the class of each region.
    """
    picked = np.asarray(logits, np.float64)[:, np.asarray(classes)]  # (N, T, H, W)
    return np.asarray((picked * np.asarray(regions, np.float64)[None]).sum(axis=(2, 3)))


class SegmentationScoreModel:
    """A :class:`Segmenter` plus target regions as a :class:`~xai_bridge.models.Model` (numpy, any segmenter).

    Its outputs are :func:`region_scores`: one per target, so every
    perturbation method explains it unchanged, and T regions cost the
    perturbed images of one (one segmentation pass scores them all).
    Segmenters with :meth:`GradientSegmenter.segment_torch` get the torch
    twin instead (:func:`xai_bridge.segmentation.routing.score_model`), with
    the same outputs and gradients too.

    Args:
        segmenter: the segmenter.
        regions: bool ``(T, H, W)`` target regions.
        classes: int ``(T,)`` their classes.
        names: one display name per target.
    """

    output_kind = OutputKind.SCORES

    def __init__(self, segmenter: Segmenter, regions: np.ndarray, classes: np.ndarray, names: Sequence[str]) -> None:
        self.segmenter = segmenter
        self.regions = np.asarray(regions, bool)
        self.classes = np.asarray(classes, np.int64)
        self.class_names = list(names)
        self.batch_size = int(getattr(segmenter, "batch_size", 1) or 1)

    @property
    def output_count(self) -> int:
        """One output per target region."""
        return len(self.classes)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(N, T)``: each region's summed class logits in each image."""
        images = np.asarray(images)
        rows = [
            region_scores(self.segmenter.segment(images[i : i + self.batch_size]), self.regions, self.classes)
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, len(self.classes)), np.float32)

    def __getattr__(self, name: str) -> Any:
        if name in ("module", "fingerprint", "memo"):  # what a wrapped model would answer; never the segmenter's
            raise AttributeError(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"SegmentationScoreModel({type(self.segmenter).__name__}, {len(self.classes)} targets)"
