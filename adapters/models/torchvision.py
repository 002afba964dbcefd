"""torchvision weights enums: their evaluation transforms and categories, with nothing downloaded.

``ResNet50_Weights.IMAGENET1K_V2.transforms()`` is an ``ImageClassification``
preset (shorter edge resized to ``resize_size``, centre crop ``crop_size``,
``interpolation``, ImageNet mean/std) and ``weights.meta["categories"]`` the
class names; both are plain Python data, read without fetching the weights.
"""

from __future__ import annotations

from typing import Any

from xai_bridge.errors import ModelInputError
from xai_bridge.preprocess import Preprocess

__all__ = ["is_weights", "preprocess_from_weights", "weights_class_names"]


def is_weights(obj: Any) -> bool:
    """Whether ``obj`` is a torchvision ``WeightsEnum`` member (duck-typed: ``transforms`` and ``meta``)."""
    return callable(getattr(obj, "transforms", None)) and isinstance(getattr(obj, "meta", None), dict)


def preprocess_from_weights(weights: Any) -> Preprocess:
    """The :class:`Preprocess` equal to ``weights.transforms()`` (an ``ImageClassification`` preset).

    Raises:
        ValueError: the weights' transforms are not an image-classification preset.
    """
    transform = weights.transforms()
    needed = ("crop_size", "resize_size", "mean", "std", "interpolation")
    # a video (VideoClassification), optical-flow or segmentation preset has some of the same fields
    if type(transform).__name__ != "ImageClassification" or not all(hasattr(transform, k) for k in needed):
        raise ModelInputError(
            f"preprocess: {weights} has transforms {type(transform).__name__}, not an image-classification "
            "preset (resize, crop, mean/std); pass preprocess=Preprocess(...) instead"
        )
    crop = [int(v) for v in transform.crop_size]
    crop_hw = (crop[0], crop[-1])
    resize_size = [int(v) for v in transform.resize_size]
    resize: int | tuple[int, int] = resize_size[0] if len(resize_size) == 1 else (resize_size[0], resize_size[1])
    interpolation = str(getattr(transform.interpolation, "value", transform.interpolation))
    if interpolation not in ("nearest", "bilinear", "bicubic"):
        raise ModelInputError(
            f"preprocess: {weights} resizes with {interpolation!r}; xai-bridge supports nearest, bilinear and "
            "bicubic; pass preprocess=Preprocess(..., interpolation=...) with the closest one"
        )
    return Preprocess(
        size=crop_hw,
        resize=resize,
        mean=tuple(transform.mean),  # type: ignore[arg-type]
        std=tuple(transform.std),  # type: ignore[arg-type]
        interpolation=interpolation,
        antialias=bool(getattr(transform, "antialias", True)),
        crop_rounding="round",
    )


def weights_class_names(weights: Any) -> list[str] | None:
    """``weights.meta["categories"]``, or None when the weights carry none."""
    categories = weights.meta.get("categories")
    return [str(c) for c in categories] if categories else None
