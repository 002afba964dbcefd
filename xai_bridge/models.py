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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ContextManager, Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "BatchTuner",
    "CountingModel",
    "DifferentiableModel",
    "Model",
    "OutputKind",
    "Preprocess",
    "Scale",
    "ScoreTap",
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
    """

    size: tuple[int, int] | None = None
    scale: Scale = Scale.UNIT
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    channel_order: str = "RGB"
    layout: str = "NCHW"
    antialias: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale", Scale(self.scale))
        if self.size is not None:
            size = tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) <= 0:
                raise ValueError(f"Preprocess.size: expected (height, width) > 0, got {self.size}")
            object.__setattr__(self, "size", size)
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != 3:
                    raise ValueError(f"Preprocess.{name}: expected 3 values, got {value}")
                object.__setattr__(self, name, value)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"Preprocess.std: values must be > 0, got {self.std}")
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"Preprocess.channel_order: expected 'RGB' or 'BGR', got {self.channel_order!r}")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"Preprocess.layout: expected 'NCHW' or 'NHWC', got {self.layout!r}")

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

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Apply to uint8 ``(N, H, W, 3)`` images; returns float32 in ``layout``.

        Resizing uses Pillow's bilinear filter (antialiased), like Keras'
        ``load_img(target_size=...)``.
        """
        x = images
        if self.size is not None and x.shape[1:3] != self.size:
            h, w = self.size
            resample = Image.BILINEAR if self.antialias else Image.NEAREST
            x = np.stack([np.asarray(Image.fromarray(im).resize((w, h), resample)) for im in x])
        return self.normalize(x.astype(np.float32))

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


@runtime_checkable
class Model(Protocol):
    """A batched image model: uint8 ``(N, H, W, 3)`` -> float ``(N, outputs)``.

    Attributes:
        output_kind: what the outputs are.
        class_names: optional names of the outputs.
        batch_size: largest batch passed to the underlying model at once.
    """

    output_kind: OutputKind
    class_names: Sequence[str] | None
    batch_size: int

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

    def guard(self) -> ContextManager[Any]:
        """Context manager: eval mode inside; mode, requires_grad and hooks restored after."""
        ...


class ScoreTap:
    """Keeps the outputs a method computes anyway for the unperturbed images.

    Most methods evaluate the image itself once (a CAM's forward pass,
    captum's Saliency, LIME's first sample, shap's full coalition). When the
    targets are given, :func:`~xai_bridge.explain` reads the target scores
    from those outputs instead of running a separate prediction pass. Rows
    are matched by a pixel sum on a grid and then by equality, so perturbed
    images never match; the first output seen for an image wins.

    Args:
        images: the uint8 ``(N, H, W, 3)`` images being explained.
    """

    #: Pixel sums are taken on this grid of rows and columns (a cheap pre-filter; equality decides).
    STRIDE = 4

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self._keys = self.keys(images)
        self.outputs: dict[int, np.ndarray] = {}

    @classmethod
    def keys(cls, batch: np.ndarray) -> np.ndarray:
        """Pixel sums of uint8 NHWC images on the ``STRIDE`` grid."""
        return batch[:, :: cls.STRIDE, :: cls.STRIDE].reshape(len(batch), -1).sum(axis=1, dtype=np.int64)

    @property
    def complete(self) -> bool:
        """Whether every image's outputs were seen."""
        return len(self.outputs) == len(self.images)

    def candidates(self, keys: np.ndarray) -> list[tuple[int, int]]:
        """``(row, image)`` pairs whose pixel sums match an image not seen yet."""
        pairs = []
        for row, key in enumerate(np.asarray(keys).tolist()):
            for i in np.flatnonzero(self._keys == int(round(key))).tolist():
                if i not in self.outputs:
                    pairs.append((row, i))
        return pairs

    def offer(self, batch: np.ndarray, outputs: np.ndarray) -> None:
        """Record ``outputs`` rows whose uint8 NHWC ``batch`` row equals an image."""
        if self.complete or batch.shape[1:] != self.images.shape[1:] or batch.dtype != np.uint8:
            return
        for row, i in self.candidates(self.keys(batch)):
            if i not in self.outputs and np.array_equal(batch[row], self.images[i]):
                self.outputs[i] = np.array(outputs[row], np.float32)

    def scores(self, targets: np.ndarray) -> np.ndarray | None:
        """``(N, T)`` outputs at ``targets`` when every image was seen, else None."""
        if not self.complete:
            return None
        rows = np.stack([self.outputs[i] for i in range(len(self.images))])
        return np.take_along_axis(rows, targets, axis=1)


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
    preprocess: Preprocess | None = None,
    output_kind: OutputKind | str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Model:
    """Wrap ``model`` in the matching adapter unless it already is a :class:`Model`.

    Args:
        model: a :class:`Model`, a Keras model, an ``onnxruntime.InferenceSession``
            or ``.onnx`` path, a ``torch.nn.Module`` (NCHW) or a callable.
            A callable with ``preprocess`` is treated as an array model
            (e.g. Keras) fed preprocessed floats; without, as a black box fed
            uint8 NHWC images.
        preprocess: required for torch, Keras and ONNX models; see :class:`Preprocess`.
        output_kind: what the model returns (default logits for torch modules,
            probabilities otherwise).
        class_names: names of the outputs.
        batch_size: largest batch sent to the model.

    Returns:
        A :class:`Model`.
    """
    if isinstance(model, Model) and callable(getattr(model, "predict", None)) and hasattr(model, "output_kind"):
        return model
    if _is_keras_model(model):  # before torch: on Keras' torch backend a Keras model is also a torch module
        if preprocess is None:
            raise TypeError(
                "preprocess: a Keras model needs declared preprocessing, e.g. preprocess=Preprocess.inception() "
                "(Keras 'tf' mode, Xception / InceptionV3) or Preprocess.caffe() (ResNet50, VGG)"
            )
        from .adapters.models import KerasModel

        return KerasModel(model, preprocess, output_kind=output_kind, class_names=class_names, batch_size=batch_size)
    if _is_onnx_model(model):
        if preprocess is None:
            raise TypeError(
                "preprocess: an ONNX model needs declared preprocessing, e.g. preprocess=Preprocess.imagenet() "
                "(the layout is read from the graph)"
            )
        from .adapters.models import OnnxModel

        return OnnxModel(
            model,
            preprocess,
            output_kind=output_kind or OutputKind.LOGITS,
            class_names=class_names,
            batch_size=batch_size,
        )
    if _is_torch_module(model):
        if preprocess is None:
            raise TypeError(
                "preprocess: a torch module needs declared preprocessing, e.g. preprocess=Preprocess.imagenet() "
                "or Preprocess(scale='unit'); or wrap it yourself with xai_bridge.adapters.models.TorchModel"
            )
        from .adapters.models import TorchModel

        return TorchModel(
            model,
            preprocess,
            output_kind=output_kind or OutputKind.LOGITS,
            class_names=class_names,
            batch_size=batch_size,
        )
    if callable(model):
        from .adapters.models import ArrayModel, BlackBoxModel

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
    raise TypeError(f"model: expected a Model, torch.nn.Module or callable, got {type(model).__name__}")


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


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def batched(fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_size: int) -> np.ndarray:
    """Call ``fn`` on ``images`` in chunks of ``batch_size`` and concatenate."""
    if batch_size <= 0:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    outs = [np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    return _stack_outputs(outs, len(images))


class BatchTuner:
    """Chooses the chunk size of batched model calls by measured speed, at no extra cost.

    Per image, a model is often fastest at a batch size well below the largest
    that fits (on CPUs, caches: EfficientNet-Lite0 runs ~1.3x faster per image
    at 4-8 than at 50), or at the largest (GPUs). The first calls for an input
    shape run chunks of each size (1, 2, 4, ... up to ``largest``, taking
    turns) on the real inputs, ``repeats`` full chunks each, and time them (the fastest of
    a size's chunks counts: the first call at a new size pays for memory
    allocation); from then on the size with the fastest time per image is
    used, the larger of sizes within 5% of each other. Nothing is evaluated
    twice.
    A chunk that runs out of memory lowers ``largest`` to half its size and is
    retried.

    Args:
        largest: the largest chunk (the model's ``batch_size``).
        repeats: timed chunks per size (the fastest counts).
        is_oom: whether an exception means "out of memory" (default: MemoryError,
            or a RuntimeError saying "out of memory", as torch raises).
        clock: seconds counter (tests pass a fake one).
    """

    def __init__(
        self,
        largest: int,
        repeats: int = 3,
        is_oom: Callable[[BaseException], bool] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if int(largest) <= 0:
            raise ValueError(f"largest: expected a positive integer, got {largest}")
        self.largest = int(largest)
        self.repeats = int(repeats)
        self.is_oom = is_oom or _is_oom
        self.clock = clock
        self._times: dict[tuple[int, ...], dict[int, list[float]]] = {}
        self._chosen: dict[tuple[int, ...], int] = {}

    def chosen(self, shape: Sequence[int]) -> int | None:
        """The chunk size chosen for inputs of ``shape`` (one item), None while still timing."""
        return self._chosen.get(tuple(shape))

    def _sizes(self) -> list[int]:
        sizes, b = [], 1
        while b < self.largest:
            sizes.append(b)
            b *= 2
        return [*sizes, self.largest]

    def _next(self, key: tuple[int, ...]) -> int:
        if key in self._chosen:
            return min(self._chosen[key], self.largest)
        times = self._times.setdefault(key, {})
        # round robin (1, 2, 4, ..., 1, 2, 4, ...): a drift of the machine's speed hits every size alike
        pending = [(len(times.get(size, ())), size) for size in self._sizes()]
        fewest = min(pending)
        if fewest[0] < self.repeats:
            return fewest[1]
        fastest = {size: min(ts) for size, ts in times.items() if ts and size <= self.largest}
        best = min(fastest.values())
        # ties (within 5%, below timing noise) go to the larger size: fewer calls, less per-call overhead
        chosen = max(size for size, t in fastest.items() if t <= best * 1.05)
        self._chosen[key] = chosen
        return chosen

    def __call__(self, fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray) -> np.ndarray:
        """``fn`` over ``images`` in tuned chunks, outputs concatenated as :func:`batched` does."""
        key = tuple(images.shape[1:])
        outs: list[np.ndarray] = []
        start = 0
        while start < len(images):
            size = self._next(key)
            chunk = images[start : start + size]
            began = self.clock()
            try:
                out = np.asarray(fn(chunk))
            except Exception as exc:
                if size > 1 and self.is_oom(exc):
                    self.largest = max(1, size // 2)
                    self._chosen.pop(key, None)
                    continue
                raise
            if key not in self._chosen and len(chunk) == size:
                self._times[key].setdefault(size, []).append((self.clock() - began) / size)
            outs.append(out)
            start += len(chunk)
        return _stack_outputs(outs, len(images))


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def _stack_outputs(outs: list[np.ndarray], n: int) -> np.ndarray:
    out = np.concatenate(outs, axis=0) if outs else np.zeros((0, 0), np.float32)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2 or out.shape[0] != n:
        raise ValueError(f"model: expected outputs of shape (N={n}, outputs), got {out.shape}")
    return out.astype(np.float32, copy=False)
