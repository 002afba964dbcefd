"""A detector and the detections to explain, as an ordinary xai-bridge model with one output per detection.

:class:`DetectionScoreModel`'s outputs are, per (perturbed) image, each
target detection's D-RISE similarity with the detections found in that image
(see :func:`~xai_bridge.detection.detections.similarity`). Every
perturbation method then explains it unchanged, one target per detection,
and K detections cost the perturbed images of one: one detector pass scores
them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_bridge.models import OutputKind
from xai_bridge.options import ImageMasker

from .detections import Detections, Detector, similarity

__all__ = ["DetectionScoreModel"]


class DetectionScoreModel:
    """A :class:`Detector` plus target detections as a :class:`~xai_bridge.models.Model`.

    Args:
        detector: the detector (a model adapter implementing :class:`Detector`).
        targets: the detections to explain, found on the unperturbed image.
        names: one display name per target (``"dog 0.93"``).

    Attributes:
        output_kind: ``OutputKind.SCORES``.
        class_names: ``names``.
        targets: the target :class:`Detections`.
    """

    output_kind = OutputKind.SCORES

    def __init__(self, detector: Detector, targets: Detections, names: Sequence[str]) -> None:
        self.detector = detector
        self.targets = targets
        self.class_names = list(names)
        self.batch_size = int(getattr(detector, "batch_size", 1) or 1)

    @property
    def output_count(self) -> int:
        """One output per target detection."""
        return len(self.targets)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(N, T)``: each target's similarity with its best match in each image.

        The images go to the detector in the fewest batches of at most its
        ``batch_size``, split evenly (50 at 16 a batch: 13, 13, 12, 12, not 16,
        16, 16, 2), so no pass runs a near-empty batch at a single image's cost.
        """
        images = np.asarray(images)
        found: list[Detections] = []
        for chunk in np.array_split(images, max(1, -(-len(images) // self.batch_size))):
            found.extend(self.detector.detect(chunk))
        rows = [similarity(self.targets, dets) for dets in found]
        return np.asarray(rows, np.float32).reshape(len(images), len(self.targets))

    def default_image_masker(self, height: int, width: int) -> ImageMasker:
        """The masker of shap's Partition explainer when none is given: a box blur twice the image's size.

        A detection is explained by whether it is found again once pixels are
        hidden, so hidden pixels must carry no object. Inpainting (shap's
        default for classifiers) regrows an object from its visible part and
        spreads its colour over the hidden background, moving the box, so
        the mass lands outside the object; a blur the image's size keeps a
        bright blob near a corner (the reflected border repeats it). With the
        border reflected, a window twice the image's size holds the image
        about twice wherever it is centred: the fill is the image's mean
        colour within a few levels, one blur per image where inpainting
        costs about a forward pass per evaluation.
        """
        return ImageMasker.blur(2 * width, 2 * height)

    def __getattr__(self, name: str) -> Any:
        if name in ("module", "fingerprint", "memo"):  # what a wrapped model would answer; never the detector's
            raise AttributeError(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __repr__(self) -> str:
        return f"DetectionScoreModel({type(self.detector).__name__}, {len(self.targets)} targets)"
