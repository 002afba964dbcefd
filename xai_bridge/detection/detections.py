"""Detections, the detector protocol, and the one score of a detection target on a perturbed image.

A detector returns, per image, boxes ``(x0, y0, x1, y1)`` in pixels (x the
column, y the row; torchvision's format), labels and scores. Explaining a
detection asks how much each pixel matters for *that* detection to be found
again; every method needs one number per target and perturbed image, defined
here once: the D-RISE similarity (Petsiuk et al. 2021,
https://arxiv.org/abs/2006.03204) between the target and the best-matching
detection of the perturbed image,

    s(d_t, d_j) = IoU(L_t, L_j) * cos(P_t, P_j) * O_j,

maximised over the perturbed image's detections ``j``. ``P`` is the class
probability vector where the model gives one, else the one-hot label (the
cosine is then 1 for the same class, 0 otherwise); ``O`` is the model's
objectness where it gives one, else the detection's score when no
probabilities are given (a weakly found box counts less), else 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np

from xai_bridge.errors import ModelInputError

__all__ = ["Detections", "Detector", "GradientDetector", "box_iou", "similarity"]


@dataclass(frozen=True)
class Detections:
    """One image's detections.

    Attributes:
        boxes: float64 ``(K, 4)`` ``(x0, y0, x1, y1)`` in pixels, end exclusive.
        labels: int64 ``(K,)`` class indices.
        scores: float64 ``(K,)`` confidences.
        probabilities: float64 ``(K, C)`` class probabilities, where the model gives them.
        objectness: float64 ``(K,)`` objectness, where the model gives it (YOLO).
        masks: bool ``(K, H, W)`` each detection's pixels at the image's size,
            where the model has a mask head (Mask R-CNN, YOLO-seg); explanations
            carry the targets' masks as ``extras["regions"]``.
        keypoints: float64 ``(K, J, 3)`` each detection's ``J`` keypoints ``(x, y, visibility)``
            in the image's pixels, where the model has a keypoint head (Keypoint R-CNN);
            explanations carry the targets' as ``extras["keypoints"]``.
        keypoints_scores: float64 ``(K, J)`` each keypoint's score (torchvision's
            ``keypoints_scores``, a heatmap logit), with ``keypoints``.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    probabilities: np.ndarray | None = None
    objectness: np.ndarray | None = None
    masks: np.ndarray | None = None
    keypoints: np.ndarray | None = None
    keypoints_scores: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, index: Any) -> Detections:
        """The detections at ``index`` (an int array or a bool mask)."""
        idx = np.asarray(index)
        taken: dict[str, Any] = {}
        for f in fields(self):  # every field holds one row per detection
            value = getattr(self, f.name)
            taken[f.name] = None if value is None else value[idx]
        return Detections(**taken)

    @classmethod
    def parse(cls, value: Any, where: str = "detector output") -> Detections:
        """Detections from torchvision's dict ``{"boxes", "labels", "scores"}`` (arrays or tensors).

        Optional keys ``"probabilities"`` ``(K, C)``, ``"objectness"`` ``(K,)``,
        ``"masks"`` and ``"keypoints"`` are read too: masks bool or float ``(K, H, W)``
        or torchvision's ``(K, 1, H, W)`` probabilities, a pixel in the mask where
        its value is at least 0.5 (torchvision's threshold); keypoints ``(K, J, 3)``
        ``(x, y, visibility)`` with ``"keypoints_scores"`` ``(K, J)`` where given.
        Anything else is refused in one line naming ``where``.
        """
        if isinstance(value, Detections):
            return value
        if not isinstance(value, Mapping) or not {"boxes", "labels", "scores"} <= set(value):
            raise ModelInputError(
                f"{where}: expected a dict with 'boxes' (K, 4), 'labels' (K,) and 'scores' (K,), "
                f"got {_kind(value)}; return torchvision's detection format"
            )
        boxes = (
            _array(value["boxes"], np.float64).reshape(-1, 4) if np.size(_array(value["boxes"])) else np.zeros((0, 4))
        )
        labels = _array(value["labels"], np.int64).reshape(-1)
        scores = _array(value["scores"], np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ModelInputError(
                f"{where}: 'boxes', 'labels' and 'scores' have {len(boxes)}, {len(labels)} and {len(scores)} rows; "
                "expected one row per detection in each"
            )
        probs = value.get("probabilities")
        obj = value.get("objectness")
        return cls(
            boxes,
            labels,
            scores,
            None if probs is None else _array(probs, np.float64).reshape(len(scores), -1),
            None if obj is None else _array(obj, np.float64).reshape(-1),
            None if value.get("masks") is None else _masks(value["masks"], len(scores), where),
            *_keypoints(value, len(scores), where),
        )


@runtime_checkable
class Detector(Protocol):
    """What xai-bridge needs of an object detector (model adapters implement it).

    A detector with a mask or keypoint head gives each detection's mask as
    ``Detections.masks`` and its keypoints as ``Detections.keypoints``; one whose
    masks or keypoints cost more than its boxes may give them from an optional
    ``detect_masks(images)`` instead (masks and keypoints both), which the
    routing calls on the explained image only: the perturbed images need boxes.

    Attributes:
        class_names: one name per class index, or None.
        batch_size: largest batch ``detect`` is given at once.
    """

    class_names: Sequence[str] | None
    batch_size: int

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` image."""
        ...


@runtime_checkable
class GradientDetector(Detector, Protocol):
    """A detector whose scores are differentiable in its input pixels (the gradient and CAM path).

    Gradient methods (captum's, every CAM) explain a detection through the
    score pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` defines: the summed
    scores of the detections of the target's class whose box overlaps the
    target's above an IoU threshold. They need the detections as tensors
    that keep the graph back to the pixels.

    Attributes:
        module: the ``torch.nn.Module`` (guarded while explained; CAM layers are found in it).
    """

    module: Any

    def detect_torch(self, pixels: Any) -> list[dict[str, Any]]:
        """Detections of float32 ``(N, 3, H, W)`` RGB pixels in ``[0, 1]``, differentiable in ``pixels``.

        Returns one dict per image in torchvision's format: ``"boxes"``
        ``(K, 4)`` in the pixels of ``pixels``, ``"labels"`` ``(K,)``,
        ``"scores"`` ``(K,)`` (with the graph), optionally ``"probabilities"``
        ``(K, C)``. The module's mode and settings are the caller's to guard.
        """
        ...


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union ``(len(a), len(b))`` of ``(x0, y0, x1, y1)`` boxes."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def similarity(targets: Detections, found: Detections, n_classes: int | None = None) -> np.ndarray:
    """float64 ``(T,)``: each target's D-RISE similarity with its best match among ``found`` (0 if none)."""
    if len(targets) == 0 or len(found) == 0:
        return np.zeros(len(targets))
    iou = box_iou(targets.boxes, found.boxes)  # (T, K)
    if targets.probabilities is not None and found.probabilities is not None:
        p, q = targets.probabilities, found.probabilities
        cos = (p @ q.T) / np.maximum(np.linalg.norm(p, axis=1)[:, None] * np.linalg.norm(q, axis=1)[None], 1e-12)
        weight = found.objectness if found.objectness is not None else np.ones(len(found))
    else:
        cos = (targets.labels[:, None] == found.labels[None, :]).astype(np.float64)
        weight = found.objectness if found.objectness is not None else found.scores
    return np.asarray((iou * cos * weight[None, :]).max(axis=1))


def _masks(value: Any, count: int, where: str) -> np.ndarray:
    """Bool ``(K, H, W)`` from ``(K, H, W)`` or ``(K, 1, H, W)`` masks (bool, or probabilities cut at 0.5)."""
    masks = _array(value)
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or len(masks) != count:
        raise ModelInputError(
            f"{where}: 'masks' has shape {masks.shape}; expected one (H, W) mask per detection, ({count}, H, W)"
        )
    return masks if masks.dtype == np.bool_ else masks >= 0.5


def _keypoints(value: Mapping[str, Any], count: int, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """float64 ``(K, J, 3)`` keypoints and ``(K, J)`` scores (None where not given), their shapes checked."""
    if value.get("keypoints") is None:
        return None, None
    points = _array(value["keypoints"], np.float64)
    if points.ndim != 3 or points.shape[0] != count or points.shape[2] != 3:
        raise ModelInputError(
            f"{where}: 'keypoints' has shape {points.shape}; expected (x, y, visibility) per keypoint, ({count}, J, 3)"
        )
    if value.get("keypoints_scores") is None:
        return points, None
    scores = _array(value["keypoints_scores"], np.float64)
    if scores.shape != points.shape[:2]:
        raise ModelInputError(
            f"{where}: 'keypoints_scores' has shape {scores.shape}; expected one score per keypoint, {points.shape[:2]}"
        )
    return points, scores


def _array(value: Any, dtype: Any = None) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def _kind(value: Any) -> str:
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    return type(value).__name__
