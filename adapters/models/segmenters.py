"""Segmenter adapters: torchvision (DeepLabV3, FCN, LRASPP) and Hugging Face semantic segmentation models.

Both implement :class:`~xai_bridge.segmentation.GradientSegmenter`: logits
``(N, C, H, W)`` at the size of the image they were given, upsampled there
as the library itself does (torchvision's models upsample their ``["out"]``
bilinearly to their input; ``post_process_semantic_segmentation`` upsamples
Hugging Face logits bilinearly to the image), so a region chosen on the
image is scored in the same pixels on every perturbed image. The numpy
``segment`` and the differentiable ``segment_torch`` run the same code.

The recognisers here import nothing; torch is imported when a segmenter is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xai_bridge._validate import int_at_least
from xai_bridge.errors import ModelInputError, ParameterError
from xai_bridge.preprocess import Preprocess

__all__ = [
    "HFSegmenter",
    "TorchvisionSegmenter",
    "is_hf_segmenter",
    "is_torchvision_segmenter",
    "wrap_hf",
    "wrap_torchvision",
]

#: torchvision's segmentation weights normalise with ImageNet's mean and std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def is_torchvision_segmenter(obj: Any) -> bool:
    """Whether ``obj`` is one of torchvision's segmentation models (checked without importing torch)."""
    return any(c.__module__.startswith("torchvision.models.segmentation") for c in type(obj).__mro__[:-1]) and hasattr(
        obj, "forward"
    )


def is_hf_segmenter(obj: Any) -> bool:
    """Whether ``obj`` is a Hugging Face ``...ForSemanticSegmentation`` model (SegFormer, UperNet, DPT, BEiT...)."""
    return (
        any(c.__module__.startswith("transformers.") for c in type(obj).__mro__)
        and type(obj).__name__.endswith("ForSemanticSegmentation")
        and hasattr(obj, "config")
    )


def wrap_torchvision(module: Any, preprocess: Any) -> TorchvisionSegmenter:
    """``xb.explain``'s entry for torchvision segmenters: ``preprocess`` is the weights enum (or None)."""
    return TorchvisionSegmenter(module, weights=preprocess)


def wrap_hf(module: Any, preprocess: Any) -> HFSegmenter:
    """``xb.explain``'s entry for Hugging Face segmenters: ``preprocess`` is the image processor (or None)."""
    return HFSegmenter(module, processor=preprocess)


class _TorchSegmenter:
    """What both adapters share: device, guard, batching, the numpy ``segment`` over ``segment_torch``."""

    module: Any
    class_names: list[str] | None
    batch_size: int

    def _setup(self, module: Any, class_names: Sequence[str] | None, batch_size: int) -> None:
        import torch

        batch_size = int_at_least("batch_size", batch_size, 1)
        self.module = module
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.batch_size = int(batch_size)
        self.device = next((p.device for p in module.parameters()), torch.device("cpu"))

    def segment(self, images: np.ndarray) -> np.ndarray:
        """float32 logits ``(N, C, H, W)`` of uint8 ``(N, H, W, 3)`` images, in eval mode under the model guard."""
        import torch
        from xai_bridge.adapters._torch import model_guard

        out = []
        with model_guard(self.module), torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = np.ascontiguousarray(images[start : start + self.batch_size], np.uint8)
                x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div(255.0)
                out.append(self.segment_torch(x).float().cpu().numpy())
        return np.concatenate(out)

    def segment_torch(self, pixels: Any) -> Any:
        """Logits ``(N, C, H, W)`` of float ``(N, 3, H, W)`` pixels in ``[0, 1]``, differentiable."""
        raise NotImplementedError


class TorchvisionSegmenter(_TorchSegmenter):
    """A torchvision segmentation model (DeepLabV3, FCN, LRASPP): its ``["out"]`` logits at the image's size.

    Pixels are resized as the weights' ``SemanticSegmentation`` transforms do
    (shorter edge to ``resize_size``, bilinear, antialiased), normalised with
    their mean and std, and the logits upsampled bilinearly back to the
    image. Without weights: ImageNet's mean and std, no resize.

    Example::

        weights = DeepLabV3_ResNet50_Weights.DEFAULT
        exp = xb.explain(deeplabv3_resnet50(weights=weights), "street.jpg", "gradcam.GradCAM",
                         targets="car", preprocess=weights)

    Args:
        module: the segmentation model (never modified).
        weights: its torchvision weights enum: transforms and ``meta["categories"]``.
        class_names: names per class index (default: the weights' categories).
        batch_size: images per forward pass.
    """

    def __init__(
        self, module: Any, weights: Any = None, class_names: Sequence[str] | None = None, batch_size: int = 4
    ) -> None:
        if not is_torchvision_segmenter(module):
            raise ModelInputError(
                f"module: expected a torchvision segmentation model, got {type(module).__name__}; wrap other "
                "segmenters in an object with segment(images) -> (N, C, H, W) logits"
            )
        self.resize: int | None = None
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if weights is not None:
            self._read_weights(weights)
            if class_names is None:
                class_names = list(weights.meta.get("categories") or []) or None
        self._setup(module, class_names, batch_size)

    def _read_weights(self, weights: Any) -> None:
        transform: Any = weights.transforms() if callable(getattr(weights, "transforms", None)) else None
        if type(transform).__name__ != "SemanticSegmentation":
            raise ParameterError(
                f"preprocess: expected the model's torchvision segmentation weights enum (e.g. "
                f"DeepLabV3_ResNet50_Weights.DEFAULT), got {type(weights).__name__}; or pass none"
            )
        size = getattr(transform, "resize_size", None)
        self.resize = int(size[0]) if size else None
        self.mean, self.std = tuple(transform.mean), tuple(transform.std)

    def segment_torch(self, pixels: Any) -> Any:
        """Logits ``(N, C, H, W)`` of float ``(N, 3, H, W)`` pixels in ``[0, 1]``, differentiable."""
        import torch
        import torch.nn.functional as F

        height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
        x = pixels
        if self.resize is not None and min(height, width) != self.resize:
            short = min(height, width)
            size = (round(height * self.resize / short), round(width * self.resize / short))
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        out = self.module((x - mean) / std)["out"]
        if tuple(out.shape[-2:]) != (height, width):
            out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
        return out

    def __repr__(self) -> str:
        return f"TorchvisionSegmenter({type(self.module).__name__})"


class HFSegmenter(_TorchSegmenter):
    """A Hugging Face semantic segmentation model (SegFormer, UperNet, DPT, BEiT, MobileViT...).

    Pixels are prepared as its image processor does (resize, rescale,
    normalise: read as for classifiers, see
    :func:`~xai_bridge.adapters.models.transformers.preprocess_from_processor`)
    and ``.logits`` upsampled bilinearly to the image, as
    ``post_process_semantic_segmentation`` does; class names from ``config.id2label``.

    Args:
        module: the ``...ForSemanticSegmentation`` model (never modified).
        processor: its image processor, a ``preprocessor_config.json`` path, or a
            :class:`~xai_bridge.Preprocess`; default: the processor saved beside
            the model (``model.name_or_path``).
        class_names: names per class index (default: ``config.id2label``).
        batch_size: images per forward pass.
    """

    def __init__(
        self, module: Any, processor: Any = None, class_names: Sequence[str] | None = None, batch_size: int = 4
    ) -> None:
        from .torch import PixelModule
        from .transformers import class_names_from_config, preprocess_from_processor

        if not is_hf_segmenter(module):
            raise ModelInputError(
                f"module: expected a Hugging Face ...ForSemanticSegmentation model, got {type(module).__name__}"
            )
        saved = Path(str(getattr(module, "name_or_path", "") or "")) / "preprocessor_config.json"
        if processor is None and saved.is_file():
            processor = saved
        if processor is None:
            raise ParameterError(
                f"preprocess: {type(module).__name__} has no preprocessor_config.json at name_or_path="
                f"{getattr(module, 'name_or_path', '')!r}; pass preprocess=AutoImageProcessor.from_pretrained(...)"
            )
        pre = processor if isinstance(processor, Preprocess) else preprocess_from_processor(processor)
        names = class_names if class_names is not None else class_names_from_config(module.config)
        self._setup(module, names, batch_size)
        self.preprocess = pre
        self._prepare = PixelModule(module, pre).prepare  # the classifiers' differentiable preprocessing

    def segment_torch(self, pixels: Any) -> Any:
        """Logits ``(N, C, H, W)`` of float ``(N, 3, H, W)`` pixels in ``[0, 1]``, differentiable."""
        import torch.nn.functional as F

        height, width = int(pixels.shape[-2]), int(pixels.shape[-1])
        out = self.module(pixel_values=self._prepare(pixels * 255.0)).logits
        if tuple(out.shape[-2:]) != (height, width):
            out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)
        return out

    def __repr__(self) -> str:
        return f"HFSegmenter({type(self.module).__name__})"
