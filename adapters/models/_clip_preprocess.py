"""The :class:`~xai_bridge.models.Preprocess` a CLIP-style model's own image preprocessing applies.

A zero-shot model is explained on the image as given, so its preprocessing
must be applied differentiably by xai-bridge; this module reads it from where
each family keeps it: a Hugging Face image processor (``CLIPImageProcessor``,
``SiglipImageProcessor``), a torchvision / open_clip eval ``Compose`` and open_clip's
``model.visual.preprocess_cfg``. A step that has no differentiable
equivalent is refused in one line naming the fix (``preprocess=``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from xai_bridge.errors import ModelInputError
from xai_bridge.preprocess import Preprocess, Scale

__all__ = ["preprocess_from_processor"]


def preprocess_from_processor(processor: Any) -> Preprocess:
    """The :class:`~xai_bridge.models.Preprocess` a CLIP processor applies.

    Reads a Hugging Face image processor (``CLIPImageProcessor``,
    ``SiglipImageProcessor``, or a processor holding one), an open_clip /
    torchvision ``Compose`` (``Resize``, ``CenterCrop``, ``ToTensor``,
    ``Normalize``) or an open_clip ``preprocess_cfg`` dict.

    Raises:
        ModelInputError: a step xai-bridge cannot apply differentiably; pass
            ``preprocess=`` instead.
    """
    inner = getattr(processor, "image_processor", None)
    if inner is not None:
        processor = inner
    if isinstance(processor, Mapping) and "mean" in processor and "size" in processor:
        return _from_open_clip_cfg(processor)
    if hasattr(processor, "transforms") and isinstance(processor.transforms, (list, tuple)):
        return _from_transforms(processor.transforms)
    if hasattr(processor, "do_resize") and hasattr(processor, "image_mean"):
        return Preprocess.from_transformers(processor)
    raise ModelInputError(
        f"processor: expected a Hugging Face (image) processor or an open_clip preprocess transform, got "
        f"{type(processor).__name__}; or pass preprocess=xb.Preprocess(...)"
    )


def _unsupported(what: str) -> ModelInputError:
    return ModelInputError(
        f"processor: {what} cannot be applied differentiably by xai-bridge; pass preprocess=xb.Preprocess(size=..., "
        "resize=..., mean=..., std=...) describing the steps"
    )


def _triple(value: Any) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise _unsupported(f"mean/std {value!r} (3 channels expected)")
    return values[0], values[1], values[2]


def _hw(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    values = [int(s) for s in size]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _from_transforms(steps: Sequence[Any]) -> Preprocess:
    """Read a torchvision / open_clip eval ``Compose``."""
    shortest: int | None = None
    size: tuple[int, int] | None = None
    interpolation = "bilinear"
    scale = Scale.BYTE
    mean = std = None
    for step in steps:
        kind = type(step).__name__
        if kind == "Resize":
            raw = step.size
            interpolation = _interpolation(step.interpolation)
            if isinstance(raw, int) or len(raw) == 1:
                if getattr(step, "max_size", None):
                    raise _unsupported("Resize(max_size=...)")
                shortest = _hw(raw)[0]
            else:
                size = _hw(raw)
        elif kind == "ResizeKeepRatio" and not getattr(step, "longest", 0):
            interpolation = _interpolation(step.interpolation)
            target = _hw(step.size)
            if target[0] != target[1]:
                raise _unsupported(f"ResizeKeepRatio({target}) to a non-square size")
            shortest = target[0]
        elif kind in ("CenterCrop", "CenterCropOrPad"):
            crop = _hw(step.size)
            if size is not None and size != crop:
                raise _unsupported(f"a resize to {size} followed by a centre crop to {crop}")
            size = crop
        elif kind in ("ToTensor", "MaybeToTensor"):
            scale = Scale.UNIT
        elif kind == "Normalize":
            mean, std = _triple(step.mean), _triple(step.std)
        elif kind in ("MaybeConvertMode", "function", "ConvertImageDtype", "ToImage", "PILToTensor"):
            # RGB conversion (images are RGB already) and dtype steps: nothing to apply
            if kind == "ConvertImageDtype":
                scale = Scale.UNIT
        else:
            raise _unsupported(f"the transform {kind}")
    return Preprocess(
        size=size,
        resize=shortest,
        interpolation=interpolation,
        scale=scale,
        mean=mean,
        std=std,
        crop_rounding="round",  # torchvision's CenterCrop
    )


def _interpolation(mode: Any) -> str:
    name = str(getattr(mode, "value", mode)).lower()
    if name not in ("bilinear", "bicubic"):
        raise _unsupported(f"interpolation {name!r} (only bilinear and bicubic are)")
    return name


def _from_open_clip_cfg(cfg: Mapping[str, Any]) -> Preprocess:
    """Read open_clip's ``model.visual.preprocess_cfg`` (eval transform)."""
    hw = _hw(cfg["size"])
    mode = cfg.get("resize_mode", "shortest")
    interpolation = _interpolation(cfg.get("interpolation", "bicubic"))
    mean, std = _triple(cfg["mean"]), _triple(cfg["std"])
    if mode == "squash":
        return Preprocess(size=hw, interpolation=interpolation, mean=mean, std=std)
    if mode != "shortest" or hw[0] != hw[1]:
        raise _unsupported(f"open_clip resize_mode={mode!r} with size {hw}")
    return Preprocess(size=hw, resize=hw[0], interpolation=interpolation, mean=mean, std=std, crop_rounding="round")
