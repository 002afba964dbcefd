"""Detector adapters: black-box functions and torchvision detection models, as detectors.

Both return :class:`~xai_bridge.detection.Detections` per image with boxes
in the pixels of the image they were given, so a detection found on a
perturbed image is compared with its target in the same coordinates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from xai_bridge._validate import int_at_least
from xai_bridge.detection import Detections
from xai_bridge.errors import ModelInputError, ParameterError

__all__ = ["DetectionModel", "TorchvisionDetector", "is_torchvision_detector"]


class DetectionModel:
    """Any function that returns boxes, labels and scores, as a detector (a black box).

    Example::

        def detect(images):  # uint8 (N, H, W, 3)
            return [{"boxes": b, "labels": l, "scores": s} for b, l, s in my_api(images)]

        [exp] = xb.explain_detections(xb.DetectionModel(detect, class_names=names), "street.jpg")

    Args:
        fn: ``fn(images)`` takes uint8 ``(N, H, W, 3)`` and returns one dict per
            image in torchvision's format: ``"boxes"`` ``(K, 4)`` ``(x0, y0, x1, y1)``
            in pixels, ``"labels"`` ``(K,)``, ``"scores"`` ``(K,)``; optionally
            ``"probabilities"`` ``(K, C)``, ``"objectness"`` ``(K,)``, ``"masks"``
            ``(K, H, W)`` and ``"keypoints"`` ``(K, J, 3)`` (with ``"keypoints_scores"``
            ``(K, J)``), read for the explained image only.
        class_names: one name per label index, or None.
        batch_size: largest batch ``fn`` is given at once.
    """

    def __init__(
        self, fn: Callable[[np.ndarray], Sequence[Any]], class_names: Sequence[str] | None = None, batch_size: int = 16
    ) -> None:
        if not callable(fn):
            raise ParameterError(f"fn: expected a function images -> list of detection dicts, got {type(fn).__name__}")
        batch_size = int_at_least("batch_size", batch_size, 1)
        self.fn = fn
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.batch_size = int(batch_size)

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` image, in batches of ``batch_size``: boxes only.

        Masks and keypoints ``fn`` returns are not read: only the explained
        image's are used, and :meth:`detect_masks` reads those.
        """
        return self._detect(images, full=False)

    def detect_masks(self, images: np.ndarray) -> list[Detections]:
        """As :meth:`detect`, with the masks and keypoints ``fn`` returns (asked for the explained image only)."""
        return self._detect(images, full=True)

    def _detect(self, images: np.ndarray, full: bool) -> list[Detections]:
        out: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            batch = np.ascontiguousarray(images[start : start + self.batch_size])
            answers = list(self.fn(batch))
            if len(answers) != len(batch):
                raise ModelInputError(
                    f"fn: returned {len(answers)} results for {len(batch)} images; return one dict per image"
                )
            out.extend(Detections.parse(_kept(a, full), f"fn(images)[{start + i}]") for i, a in enumerate(answers))
        return out

    def __repr__(self) -> str:
        return f"DetectionModel({getattr(self.fn, '__name__', type(self.fn).__name__)})"


def is_torchvision_detector(obj: Any) -> bool:
    """Whether ``obj`` is one of torchvision's detection models (checked without importing torch)."""
    return any(c.__module__.startswith("torchvision.models.detection") for c in type(obj).__mro__[:-1]) and hasattr(
        obj, "forward"
    )


class TorchvisionDetector:
    """A torchvision detection model (Faster R-CNN, RetinaNet, FCOS, SSD, Mask or Keypoint R-CNN).

    The model's own transform resizes and normalises, and maps the boxes back
    to the pixels of the image it was given. It is a
    :class:`~xai_bridge.detection.GradientDetector`: gradient and CAM methods
    explain its detections too, with ``backbone`` as the default CAM layer. It runs in eval mode under the
    model guard: its mode, hooks, ``requires_grad`` and settings (score
    thresholds, transform) are as they were afterwards.

    Args:
        module: the detection model.
        weights: its torchvision weights enum, for ``meta["categories"]``.
        class_names: names per label index (default: the weights' categories).
        batch_size: images per forward pass; None picks it from the size the
            model's transform resizes to (16 at 320 px, 1 at 800x1333), so
            perturbed images share passes without a large model running out of memory.
    """

    def __init__(
        self,
        module: Any,
        weights: Any = None,
        class_names: Sequence[str] | None = None,
        batch_size: int | None = None,
    ) -> None:
        if not is_torchvision_detector(module):
            raise ParameterError(
                f"module: expected a torchvision detection model, got {type(module).__name__}; "
                "wrap other detectors with xb.DetectionModel(fn, class_names)"
            )
        if class_names is None and weights is not None:
            class_names = list(getattr(weights, "meta", {}).get("categories", []) or []) or None
        self.module = module
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.batch_size = _batch_for(module) if batch_size is None else int_at_least("batch_size", batch_size, 1)
        #: The default CAM layer: the backbone (with its FPN), as pytorch-grad-cam's Faster R-CNN tutorial.
        self.cam_layer = "backbone"

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` image: boxes, labels and scores.

        A Mask or Keypoint R-CNN's masks and keypoints are not computed: only
        the explained image's are used (:meth:`detect_masks`), and a perturbed
        image's mask head pastes one float image per detection and costs more
        than the rest of the pass. The model's own modules run its box path
        (:func:`_boxes_pass`) where it is torchvision's, unchanged.
        """
        return self._detect(images, full=False)

    def detect_masks(self, images: np.ndarray) -> list[Detections]:
        """As :meth:`detect`, with Mask R-CNN's masks and Keypoint R-CNN's keypoints, in the image's pixels.

        The model's transform maps both back from the size it resized to, as
        it maps the boxes. Asked for the explained image only.
        """
        return self._detect(images, full=True)

    def _detect(self, images: np.ndarray, full: bool) -> list[Detections]:
        import torch
        from xai_bridge.adapters._torch import model_guard

        device = next((p.device for p in self.module.parameters()), torch.device("cpu"))
        out: list[Detections] = []
        with model_guard(self.module), torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = [
                    torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1).float().div_(255)
                    for img in images[start : start + self.batch_size]
                ]
                found = (
                    self.module(batch) if full or not _has_boxes_pass(self.module) else _boxes_pass(self.module, batch)
                )
                out.extend(Detections.parse(_kept(d, full), "the detector's output") for d in found)
        return out

    def detect_torch(self, pixels: Any) -> list[dict[str, Any]]:
        """Differentiable detections of float32 ``(N, 3, H, W)`` pixels in ``[0, 1]`` (the caller guards the module).

        The batch goes to the model as one tensor, as pytorch-grad-cam's
        detection tutorial calls it; its transform resizes and normalises it.
        A Mask or Keypoint R-CNN runs its box path, as in :meth:`detect`: the
        scores explained do not depend on its mask or keypoint head.
        """
        return list(_boxes_pass(self.module, pixels) if _has_boxes_pass(self.module) else self.module(pixels))

    def __repr__(self) -> str:
        return f"TorchvisionDetector({type(self.module).__name__})"


#: What :func:`_kept` drops from a detection dict when only boxes are needed: per-detection images and points.
_HEAD_OUTPUTS = ("masks", "keypoints", "keypoints_scores")


def _kept(found: Any, full: bool) -> Any:
    """``found`` as given (``full``), or without its masks and keypoints (not a mapping: as given, for parse to refuse)."""
    if full or not isinstance(found, Mapping) or not any(k in found for k in _HEAD_OUTPUTS):
        return found
    return {k: v for k, v in found.items() if k not in _HEAD_OUTPUTS}


def _has_boxes_pass(module: Any) -> bool:
    """Whether ``module`` is a torchvision R-CNN with a mask or keypoint head that :func:`_boxes_pass` can run.

    Only torchvision's own ``forward`` of the model and of its ROI heads, with no
    hook on either nor in the heads it skips: a subclass or a hook may change
    what the model returns, and a hook in a skipped head (a CAM layer there) expects it to run.
    """
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.roi_heads import RoIHeads

    heads: Any = getattr(module, "roi_heads", None)
    if (
        type(module).forward is not GeneralizedRCNN.forward
        or getattr(type(heads), "forward", None) is not RoIHeads.forward
    ):
        return False
    skipped = [getattr(heads, name, None) for name in _SKIPPED]
    watched = [module, heads, *(m for part in skipped if part is not None for m in part.modules())]
    hooked = any(m._forward_hooks or m._forward_pre_hooks for m in watched)
    return not hooked and bool(heads.has_mask() or heads.has_keypoint())


#: The parts of torchvision's ``RoIHeads`` that :func:`_boxes_pass` does not run.
_SKIPPED = ("mask_roi_pool", "mask_head", "mask_predictor", "keypoint_roi_pool", "keypoint_head", "keypoint_predictor")


def _boxes_pass(module: Any, images: list[Any]) -> list[dict[str, Any]]:
    """``module(images)`` in eval mode without its mask and keypoint heads: boxes, labels and scores.

    torchvision's ``GeneralizedRCNN.forward`` and the box part of
    ``RoIHeads.forward``, step for step, so the boxes are those the whole pass gives.
    """
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    batch, _ = module.transform(images)
    features = module.backbone(batch.tensors)
    if not isinstance(features, dict):
        features = {"0": features}
    proposals, _ = module.rpn(batch, features)
    heads = module.roi_heads
    logits, regression = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, proposals, batch.image_sizes)))
    boxes, scores, labels = heads.postprocess_detections(logits, regression, proposals, batch.image_sizes)
    found = [{"boxes": b, "labels": c, "scores": p} for b, p, c in zip(boxes, scores, labels, strict=True)]
    return list(module.transform.postprocess(found, batch.image_sizes, sizes))


#: Pixels of resized input per forward pass when the batch is picked from the model's transform.
_PIXEL_BUDGET = 16 * 320 * 320


def _batch_for(module: Any) -> int:
    """Images per pass from the size the model's transform resizes to: 16 at 320 px, 1 at 800x1333."""
    transform = getattr(module, "transform", None)
    min_size = getattr(transform, "min_size", None)
    side = int(min_size[-1] if isinstance(min_size, (tuple, list)) and min_size else 800)
    longest = int(getattr(transform, "max_size", side) or side)
    return max(1, min(16, _PIXEL_BUDGET // max(1, side * min(longest, 2 * side))))
