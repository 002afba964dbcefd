"""The model protocol every backend talks to, and declared preprocessing.

A :class:`Model` takes uint8 RGB ``(N, H, W, 3)`` images and returns
``(N, outputs)`` floats, batched. Models that can be differentiated also
satisfy :class:`DifferentiableModel`: they expose a torch module that maps
float ``(N, 3, H, W)`` pixels in [0, 255] (the image itself) to outputs, so
gradient methods attribute to image pixels and baselines such as "black" mean
what they say.

Concrete adapters live in :mod:`xai_bridge.adapters.models`; this module stays
free of heavy imports.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image

from . import progress
from .batching import ScoreTap
from .errors import ModelInputError, ParameterError

__all__ = [
    "CountingModel",
    "DifferentiableModel",
    "Model",
    "OutputKind",
    "Preprocess",
    "Scale",
    "as_model",
    "softmax",
]


class OutputKind(str, enum.Enum):
    """What a model's outputs are."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    SCORES = "scores"  # anything else: regression outputs, log-probabilities, similarities


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

    The order is: resize -> scale -> channel order -> ``(x - mean) / std`` ->
    layout. Everything is applied by xai-bridge, so backends that perturb
    pixels and backends that need tensors see the same model.

    Attributes:
        size: ``(height, width)`` the model expects, or None to keep the size.
        scale: pixel range before normalisation.
        mean: per-channel mean in the scaled range (after channel reordering).
        std: per-channel std in the scaled range.
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
    """

    size: tuple[int, int] | None = None
    scale: Scale = Scale.UNIT
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str = "RGB"
    layout: str = "NCHW"
    antialias: bool = True
    resize: int | tuple[int, int] | None = None
    interpolation: str | None = None
    crop_rounding: str = "round"

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
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                value = _floats(f"Preprocess.{name}", value)
                if len(value) != 3:
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
        from .adapters.models.transformers import preprocess_from_processor

        return preprocess_from_processor(processor)

    @classmethod
    def from_timm(cls, model_or_config: Any) -> Preprocess:
        """A timm model's evaluation transform (``pretrained_cfg``: input size, crop_pct, interpolation, mean/std)."""
        from .adapters.models.timm import preprocess_from_timm

        return preprocess_from_timm(model_or_config)

    @classmethod
    def from_torchvision(cls, weights: Any) -> Preprocess:
        """A torchvision weights enum's ``transforms()`` (e.g. ``ResNet50_Weights.IMAGENET1K_V2``); nothing downloaded."""
        from .adapters.models.torchvision import preprocess_from_weights

        return preprocess_from_weights(weights)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Apply to uint8 ``(N, H, W, 3)`` images; returns float32 in ``layout``.

        Resizing uses Pillow's bilinear filter (antialiased), like Keras'
        ``load_img(target_size=...)``.
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
        """Scale, reorder and normalise float NHWC pixels in [0, 255] (no resize)."""
        factor, offset = self.scale.factor_offset
        x = x * np.float32(factor) + np.float32(offset)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        if self.mean is not None:
            x = x - np.asarray(self.mean, np.float32)
        if self.std is not None:
            x = x / np.asarray(self.std, np.float32)
        if self.layout == "NCHW":
            x = np.transpose(x, (0, 3, 1, 2))
        return np.ascontiguousarray(x, dtype=np.float32)


#: Pillow filters by interpolation name (the numpy path resizes with Pillow).
_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@runtime_checkable
class Model(Protocol):
    """A batched image model: uint8 ``(N, H, W, 3)`` -> float ``(N, outputs)``.

    Attributes:
        output_kind: what the outputs are.
        class_names: optional names of the outputs.
        batch_size: largest batch passed to the underlying model at once.
    """

    @property
    def output_kind(self) -> OutputKind:
        """What the outputs are."""
        ...

    @property
    def class_names(self) -> Sequence[str] | None:
        """Names of the outputs, if the model has them."""
        ...

    @property
    def batch_size(self) -> int:
        """Largest batch passed to the underlying model at once."""
        ...

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the model outputs for uint8 RGB NHWC images."""
        ...


@runtime_checkable
class DifferentiableModel(Model, Protocol):
    """A :class:`Model` backed by a torch module, for gradient and CAM methods."""

    @property
    def module(self) -> Any:
        """The user's ``torch.nn.Module`` (for choosing layers; never modified)."""
        ...

    @property
    def device(self) -> Any:
        """The torch device inputs are sent to."""
        ...

    def pixel_module(self) -> Any:
        """A module mapping float ``(N, 3, H, W)`` pixels in [0, 255] to outputs.

        It applies the declared preprocessing (differentiably) and then the
        user's module; the user's module is a child, not a copy.
        """
        ...

    def pixel_tensor(self, images: np.ndarray) -> Any:
        """uint8 NHWC images as a float32 ``(N, 3, H, W)`` tensor in [0, 255] on ``device``."""
        ...

    @property
    def preprocess(self) -> Preprocess:
        """The declared preprocessing (gradient methods express noise in its units)."""
        ...

    @property
    def memo(self) -> dict[Any, Any]:
        """Per-model cache of structure found once (e.g. the CAM layer per input size)."""
        ...

    @property
    def output_count(self) -> int | None:
        """Number of outputs once a forward pass has shown it, else None."""
        ...

    def guard(self, freeze_params: bool = False) -> ContextManager[Any]:
        """Context manager: eval mode inside; mode, requires_grad, .grad and hooks restored after.

        Args:
            freeze_params: also set ``requires_grad=False`` on every parameter
                inside (gradient methods need input gradients only).
        """
        ...

    def tap_scores(self, tap: ScoreTap) -> ContextManager[None]:
        """Offer ``tap`` the outputs of every forward pass of :meth:`pixel_module` inside."""
        ...


def explaining(model: Any) -> ContextManager[Any]:
    """Hold ``model`` for one whole run when it offers ``explaining()`` (torch models do).

    A run changes state of the model while it lasts (torch modules: modes,
    ``requires_grad``, hooks; the score tap); concurrent runs on one model
    then take turns instead of corrupting each other, and a torch model has
    autograd on for the run, also inside a caller's ``no_grad`` block. Models
    without the method (arrays, black boxes) have no such state.
    """
    hold = getattr(model, "explaining", None)
    return hold() if callable(hold) else nullcontext()


class CountingModel:
    """Wrap a :class:`Model` and count the images passed to ``predict``.

    Attribute access falls through to the wrapped model, so a counted
    differentiable model is still differentiable.

    Args:
        model: the model.
        tap: optional :class:`ScoreTap` offered every ``predict`` call.
    """

    def __init__(self, model: Model, tap: ScoreTap | None = None) -> None:
        self._model = model
        self._tap = tap
        self.count = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Forward to the wrapped model and count ``len(images)`` evaluations."""
        self.count += len(images)
        out = self._model.predict(images)
        if self._tap is not None:
            self._tap.offer(np.asarray(images), out)
        progress.tick(len(images))
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def wrapped(self) -> Model:
        """The model being counted."""
        return self._model


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax."""
    z = x - np.max(x, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def as_model(
    model: Any,
    preprocess: Preprocess | Any | None = None,
    output_kind: OutputKind | str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Model:
    """Wrap ``model`` in the matching adapter unless it already is a :class:`Model`.

    Args:
        model: a :class:`Model`, a Keras model, an ``onnxruntime.InferenceSession``
            or ``.onnx`` path, a ``torch.nn.Module`` (NCHW), a tagger (``tag(images)``,
            wrapped in a :class:`~xai_bridge.captions.TagModel`) or a callable.
            A callable with ``preprocess`` is treated as an array model
            (e.g. Keras) fed preprocessed floats; without, as a black box fed
            uint8 NHWC images. A Hugging Face ``PreTrainedModel`` or a timm
            model brings its own preprocessing and class names (see
            :mod:`xai_bridge.adapters.models.transformers` and ``.timm``).
        preprocess: required for other torch modules and for Keras and ONNX models; a :class:`Preprocess`,
            a torchvision weights enum (its transforms and categories) or a
            transformers image processor.
        output_kind: what the model returns (default logits for torch modules,
            probabilities otherwise).
        class_names: names of the outputs (default: the model's or the weights' own).
        batch_size: largest batch sent to the model.

    Returns:
        A :class:`Model`.
    """
    if isinstance(model, Model) and callable(getattr(model, "predict", None)) and hasattr(model, "output_kind"):
        return model
    if callable(getattr(model, "tag", None)) and not callable(getattr(model, "predict", None)):
        from .captions.tags import TagModel  # a tagger: a classifier over the tags of the unmasked image

        return TagModel(model, batch_size=batch_size)
    if preprocess is not None and not isinstance(preprocess, Preprocess):
        preprocess, names = _coerce_preprocess(preprocess)
        class_names = class_names if class_names is not None else names
    if _is_keras_model(model):  # before torch: on Keras' torch backend a Keras model is also a torch module
        from .adapters.models.keras import KerasModel

        pre = _declared(preprocess, "a Keras model", "Preprocess.inception() (Keras 'tf' mode) or Preprocess.caffe()")
        return KerasModel(model, pre, output_kind=output_kind, class_names=class_names, batch_size=batch_size)
    if _is_onnx_model(model):
        from .adapters.models.onnx import OnnxModel

        pre = _declared(preprocess, "an ONNX model", "Preprocess.imagenet() (the layout is read from the graph)")
        kind = output_kind or OutputKind.LOGITS
        return OnnxModel(model, pre, output_kind=kind, class_names=class_names, batch_size=batch_size)
    if _is_torch_module(model):
        return _torch_model(model, preprocess, output_kind, class_names, batch_size)
    if callable(model):
        from .adapters.models.arrays import ArrayModel, BlackBoxModel

        if preprocess is not None:
            return ArrayModel(
                model,
                preprocess,
                output_kind=output_kind or OutputKind.PROBABILITIES,
                class_names=class_names,
                batch_size=batch_size,
            )
        return BlackBoxModel(
            model, output_kind=output_kind or OutputKind.PROBABILITIES, class_names=class_names, batch_size=batch_size
        )
    shown = f" ({model!r:.40})" if isinstance(model, (int, float, str, bytes)) else ""
    raise ModelInputError(
        f"model: expected a Model, torch.nn.Module or a function of images, got {type(model).__name__}{shown}"
    )


def _is_keras_model(obj: Any) -> bool:
    """A Keras (3 or tf_keras) model, judged by its classes' modules: nothing is imported."""
    return any(
        c.__module__.split(".", 1)[0] in ("keras", "tf_keras") and c.__name__ == "Model" for c in type(obj).__mro__
    )


def _is_onnx_model(obj: Any) -> bool:
    """An onnxruntime session or a ``.onnx`` path: nothing is imported."""
    if isinstance(obj, (str, os.PathLike)):
        return str(obj).lower().endswith(".onnx")
    return any(c.__module__.split(".", 1)[0] == "onnxruntime" for c in type(obj).__mro__)


def _declared(preprocess: Preprocess | None, what: str, example: str) -> Preprocess:
    """``preprocess``, or one clear line saying that ``what`` needs it declared."""
    if preprocess is None:
        raise ModelInputError(f"preprocess: {what} needs declared preprocessing, e.g. preprocess={example}")
    return preprocess


def _torch_model(
    model: Any,
    preprocess: Preprocess | None,
    output_kind: OutputKind | str | None,
    class_names: Sequence[str] | None,
    batch_size: int,
) -> Model:
    """A torch module as a Model: Hugging Face and timm bring their own preprocessing, others declare it."""
    library = _library_of(model)
    if library == "transformers":
        from .adapters.models.transformers import transformers_model

        return transformers_model(model, preprocess, output_kind, class_names, batch_size)  # type: ignore[no-any-return]
    if library == "timm":
        from .adapters.models.timm import timm_model

        return timm_model(model, preprocess, output_kind, class_names, batch_size)  # type: ignore[no-any-return]
    hint = " (torchvision: preprocess=<the weights enum>, e.g. ResNet50_Weights.IMAGENET1K_V2)"
    pre = _declared(
        preprocess,
        "a torch module",
        "Preprocess.imagenet() or Preprocess(scale='unit')"
        + (hint if library == "torchvision" else "")
        + "; or wrap it yourself with xai_bridge.adapters.models.TorchModel",
    )
    from .adapters.models.torch import TorchModel

    kind = output_kind or OutputKind.LOGITS
    return TorchModel(model, pre, output_kind=kind, class_names=class_names, batch_size=batch_size)


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def _library_of(module: Any) -> str | None:
    """``"transformers"``, ``"timm"`` or ``"torchvision"`` when the module's class comes from it (nothing imported)."""
    from .adapters.models.timm import is_timm_model
    from .adapters.models.transformers import is_transformers_model

    if is_transformers_model(module):
        return "transformers"
    if is_timm_model(module):
        return "timm"
    if type(module).__module__.startswith("torchvision."):
        return "torchvision"
    return None


def _coerce_preprocess(obj: Any) -> tuple[Preprocess, list[str] | None]:
    """A :class:`Preprocess` (and class names) from a torchvision weights enum or a transformers processor."""
    from .adapters.models.torchvision import is_weights, preprocess_from_weights, weights_class_names

    if is_weights(obj):
        return preprocess_from_weights(obj), weights_class_names(obj)
    if type(obj).__module__.startswith("transformers.") or isinstance(obj, dict):
        return Preprocess.from_transformers(obj), None
    raise ModelInputError(
        f"preprocess: expected a Preprocess, a torchvision weights enum or a transformers image processor, "
        f"got {type(obj).__name__}; e.g. preprocess=Preprocess.imagenet()"
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
