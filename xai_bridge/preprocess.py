"""Declared preprocessing: how uint8 RGB pixels become a model's input.

A :class:`Preprocess` is plain data (size, resize and crop, pixel scale,
channel order, mean/std, layout) that xai-bridge applies itself, in numpy for
perturbation methods and differentiably in torch for gradient methods, so both
see the same model. Readers of other libraries' settings (Hugging Face image
processors, timm configs, torchvision weights) live in the model adapters and
are reached through :meth:`Preprocess.from_transformers` and its siblings.
Only numpy and Pillow are imported here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import ParameterError

__all__ = ["GREY_WEIGHTS", "Preprocess", "Scale", "require_preprocess"]


class Scale(str, enum.Enum):
    """Pixel range the model expects before mean/std normalisation."""

    UNIT = "unit"  # [0, 1]
    SYMMETRIC = "symmetric"  # [-1, 1] (Inception / Keras "tf" mode)
    BYTE = "byte"  # [0, 255] (Keras "caffe" mode, with BGR and mean subtraction)

    @property
    def factor_offset(self) -> tuple[float, float]:
        """``(factor, offset)`` so that ``x_scaled = x_255 * factor + offset``."""
        return {Scale.UNIT: (1 / 255.0, 0.0), Scale.SYMMETRIC: (2 / 255.0, -1.0), Scale.BYTE: (1.0, 0.0)}[self]


@dataclass(frozen=True)
class Preprocess:
    """Declared preprocessing from uint8 RGB pixels to the model's input.

    The order is: resize -> grey (one-channel models) -> scale -> channel
    order -> ``(x - mean) / std`` -> layout. Everything is applied by
    xai-bridge, so backends that perturb pixels and backends that need
    tensors see the same model.

    Attributes:
        size: ``(height, width)`` the model expects, or None to keep the size.
        scale: pixel range before normalisation.
        mean: per-channel mean in the scaled range (after channel reordering);
            one value or three for a one-channel model (three are averaged).
        std: per-channel std in the scaled range (as ``mean``).
        channel_order: ``"RGB"`` or ``"BGR"``.
        layout: ``"NCHW"`` (torch) or ``"NHWC"`` (Keras / numpy callables).
        antialias: antialias when resizing down (as PIL and torchvision v2 do).
        resize: None resizes straight to ``size``. An int first resizes the
            shorter edge to it (aspect kept, the longer edge truncated as
            torchvision and Hugging Face do), a ``(height, width)`` resizes to
            that; either is then centre-cropped to ``size``. This is how
            classifiers are evaluated (e.g. resize 256, crop 224).
        interpolation: ``"bilinear"``, ``"bicubic"`` or ``"nearest"``, as PIL
            computes them (the numpy path uses PIL; the torch path
            ``F.interpolate`` with antialiasing, which agrees with PIL up to
            float rounding). None keeps the historical default: bilinear.
        crop_rounding: how an odd centre-crop margin is split: ``"round"``
            (torchvision, timm: ``round(margin / 2)``) or ``"floor"``
            (Hugging Face: ``margin // 2``).
        channels: 3 (RGB) or 1: the model takes one grey channel, computed
            from the RGB pixels with Pillow's ``convert("L")`` weights
            (0.299 R + 0.587 G + 0.114 B), so attributions still land on the
            RGB image. Model adapters read it from the model's input where
            they can (Keras, ONNX, timm ``in_chans``, Hugging Face ``num_channels``).
    """

    size: tuple[int, int] | None = None
    scale: Scale = Scale.UNIT
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channel_order: str = "RGB"
    layout: str = "NCHW"
    antialias: bool = True
    resize: int | tuple[int, int] | None = None
    interpolation: str | None = None
    crop_rounding: str = "round"
    channels: int = 3

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "scale", Scale(self.scale))
        except ValueError:
            raise ParameterError(
                f"Preprocess.scale: expected one of {[s.value for s in Scale]}, got {self.scale!r}"
            ) from None
        if self.size is not None:
            size = _ints("Preprocess.size", self.size)
            if len(size) != 2 or min(size) <= 0:
                raise ParameterError(f"Preprocess.size: expected (height, width) > 0, got {self.size}")
            object.__setattr__(self, "size", size)
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ParameterError(f"Preprocess.channels: expected 3 (RGB) or 1 (grey), got {self.channels!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                value = _floats(f"Preprocess.{name}", value)
                if self.channels == 1 and len(value) in (1, 3):
                    value = (sum(value) / len(value),)
                elif len(value) != 3:
                    raise ParameterError(f"Preprocess.{name}: expected 3 values, got {value}")
                object.__setattr__(self, name, value)
        if self.std is not None and min(self.std) <= 0:
            raise ParameterError(f"Preprocess.std: values must be > 0, got {self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ParameterError(f"Preprocess.channel_order: expected 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ParameterError(f"Preprocess.layout: expected 'NCHW' or 'NHWC', got {self.layout!r}")
        self._check_resize()

    def _check_resize(self) -> None:
        if self.interpolation is not None and self.interpolation not in _PIL_FILTERS:
            raise ParameterError(
                f"Preprocess.interpolation: expected one of {sorted(_PIL_FILTERS)}, got {self.interpolation!r}"
            )
        if self.crop_rounding not in ("round", "floor"):
            raise ParameterError(f"Preprocess.crop_rounding: expected 'round' or 'floor', got {self.crop_rounding!r}")
        if self.resize is None:
            return
        if self.size is None:
            raise ParameterError("Preprocess.resize: needs size= (the centre crop taken after resizing)")
        if isinstance(self.resize, (int, np.integer)) and not isinstance(self.resize, bool):
            if int(self.resize) < max(self.size):
                raise ParameterError(
                    f"Preprocess.resize: the shorter edge {self.resize} must be >= the crop size {self.size}"
                )
            object.__setattr__(self, "resize", int(self.resize))
            return
        hw = _ints("Preprocess.resize", self.resize) if isinstance(self.resize, (tuple, list)) else ()
        if len(hw) != 2 or hw[0] < self.size[0] or hw[1] < self.size[1]:
            raise ParameterError(
                f"Preprocess.resize: expected a shorter-edge int or (height, width) >= size {self.size}, "
                f"got {self.resize!r}"
            )
        object.__setattr__(self, "resize", hw)

    def resized_size(self, height: int, width: int) -> tuple[int, int]:
        """``(height, width)`` an image of this size is resized to, before any centre crop."""
        if self.size is None:
            return height, width
        if self.resize is None:
            return self.size
        if isinstance(self.resize, int):
            short, long = (height, width) if height <= width else (width, height)
            new_long = int(self.resize * long / short)
            return (self.resize, new_long) if height <= width else (new_long, self.resize)
        return self.resize

    def crop_offset(self, height: int, width: int) -> tuple[int, int]:
        """``(top, left)`` of the centre crop of ``size`` in an image of ``(height, width)``."""
        assert self.size is not None
        margins = (height - self.size[0], width - self.size[1])
        if self.crop_rounding == "floor":
            return margins[0] // 2, margins[1] // 2
        return round(margins[0] / 2.0), round(margins[1] / 2.0)

    def crop_box(self, height: int, width: int) -> tuple[float, float, float, float] | None:
        """The part of an image of ``(height, width)`` the model sees, or None when it sees all of it.

        Returns:
            ``(top, left, bottom, right)`` in the image's own pixel coordinates
            (floats: the crop is taken after resizing), so that a map over the
            model input can be laid back onto the image.
        """
        if self.size is None or self.resize is None:
            return None
        rh, rw = self.resized_size(height, width)
        if (rh, rw) == self.size:
            return None
        top, left = self.crop_offset(rh, rw)
        sy, sx = height / rh, width / rw
        return top * sy, left * sx, (top + self.size[0]) * sy, (left + self.size[1]) * sx

    @classmethod
    def imagenet(cls, size: int | tuple[int, int] = 224, layout: str = "NCHW") -> Preprocess:
        """torchvision-style ImageNet preprocessing: [0, 1], ImageNet mean/std."""
        hw = (size, size) if isinstance(size, int) else size
        return cls(size=hw, scale=Scale.UNIT, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout=layout)

    @classmethod
    def inception(cls, size: int | tuple[int, int] = 299) -> Preprocess:
        """Keras ``inception_v3.preprocess_input`` ("tf" mode): [-1, 1], NHWC."""
        hw = (size, size) if isinstance(size, int) else size
        return cls(size=hw, scale=Scale.SYMMETRIC, layout="NHWC")

    @classmethod
    def caffe(cls, size: int | tuple[int, int] = 224) -> Preprocess:
        """Keras ``resnet50.preprocess_input`` ("caffe" mode): BGR, [0, 255] minus mean, NHWC."""
        hw = (size, size) if isinstance(size, int) else size
        return cls(
            size=hw,
            scale=Scale.BYTE,
            mean=(103.939, 116.779, 123.68),
            std=(1.0, 1.0, 1.0),
            channel_order="BGR",
            layout="NHWC",
        )

    @classmethod
    def from_transformers(cls, processor: Any) -> Preprocess:
        """What a Hugging Face image processor applies: size, shortest-edge resize and crop, rescale, mean/std, resample.

        Args:
            processor: an image processor (``AutoImageProcessor.from_pretrained(...)``),
                a ``preprocessor_config.json`` path or folder, or its content as a dict.
        """
        return _read("transformers", processor)

    @classmethod
    def from_timm(cls, model_or_config: Any) -> Preprocess:
        """A timm model's evaluation transform (``pretrained_cfg``: input size, crop_pct, interpolation, mean/std)."""
        return _read("timm", model_or_config)

    @classmethod
    def from_torchvision(cls, weights: Any) -> Preprocess:
        """A torchvision weights enum's ``transforms()`` (e.g. ``ResNet50_Weights.IMAGENET1K_V2``); nothing downloaded."""
        return _read("torchvision", weights)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Apply to uint8 ``(N, H, W, 3)`` images; returns float32 in ``layout``.

        Resizing uses Pillow with ``interpolation`` (default: bilinear,
        antialiased). Keras' ``load_img(target_size=...)`` defaults to
        nearest-neighbour instead: pass ``interpolation="nearest"`` to match
        images a Keras script loaded that way.
        """
        x = images
        if self.resize is not None:
            x = self._resize_and_crop(x)
        elif self.size is not None and x.shape[1:3] != self.size:
            h, w = self.size
            if self.interpolation is not None:
                resample = _PIL_FILTERS[self.interpolation]
            else:
                resample = Image.Resampling.BILINEAR if self.antialias else Image.Resampling.NEAREST
            x = np.stack([np.asarray(Image.fromarray(im).resize((w, h), resample)) for im in x])
        return self.normalize(x.astype(np.float32))

    def _resize_and_crop(self, x: np.ndarray) -> np.ndarray:
        assert self.size is not None
        rh, rw = self.resized_size(*x.shape[1:3])
        if (rh, rw) != x.shape[1:3]:
            resample = _PIL_FILTERS[self.interpolation or "bilinear"]
            x = np.stack([np.asarray(Image.fromarray(im).resize((rw, rh), resample)) for im in x])
        top, left = self.crop_offset(rh, rw)
        return x[:, top : top + self.size[0], left : left + self.size[1]]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Grey (one-channel models), scale, reorder and normalise float NHWC pixels in [0, 255] (no resize)."""
        if self.channels == 1:
            x = x[..., :3] @ GREY_WEIGHTS.astype(np.float32)[:, None]
        factor, offset = self.scale.factor_offset
        x = x * np.float32(factor) + np.float32(offset)
        if self.channel_order == "BGR" and self.channels == 3:
            x = x[..., ::-1]
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = np.transpose(x, (0, 3, 1, 2))
        return np.ascontiguousarray(x, dtype=np.float32)


#: RGB weights of one grey channel: Pillow's ``convert("L")`` (ITU-R 601-2 luma).
GREY_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

#: Pillow filters by interpolation name (the numpy path resizes with Pillow).
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


def _read(library: str, source: Any) -> Preprocess:
    """The :class:`Preprocess` that ``library``'s adapter reads from ``source`` (found in the model adapter table)."""
    from .models import adapter_table

    return adapter_table().PREPROCESS_READERS[library](source)


def require_preprocess(preprocess: Any, what: str, example: str) -> Preprocess:
    """``preprocess`` when it is a :class:`Preprocess`, else the one error every model adapter raises for it.

    The preprocessing is an argument only the user can supply (xai-bridge
    cannot guess a model's input scale), so a missing or wrong one is a
    :class:`~xai_bridge.errors.ParameterError` naming ``preprocess=``.

    Args:
        preprocess: what the user passed.
        what: the model, as the message names it (``"a Keras model"``).
        example: a value that would do (``"Preprocess.inception()"``).
    """
    if isinstance(preprocess, Preprocess):
        return preprocess
    if preprocess is None:
        raise ParameterError(f"preprocess: {what} needs declared preprocessing, e.g. preprocess={example}")
    raise ParameterError(
        f"preprocess: expected an xai_bridge.Preprocess for {what}, got {type(preprocess).__name__}; "
        f"e.g. preprocess={example}"
    )


def _ints(name: str, values: Any) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected integers, got {values!r}") from None


def _floats(name: str, values: Any) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected numbers, got {values!r}") from None
