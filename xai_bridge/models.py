"""The model protocol every backend talks to, and declared preprocessing.

A :class:`Model` takes uint8 RGB ``(N, H, W, 3)`` images and returns
``(N, outputs)`` floats, batched. Models that can be differentiated also
satisfy :class:`DifferentiableModel`: they expose a torch module that maps
float ``(N, 3, H, W)`` pixels in [0, 255] (the image itself) to outputs, so
gradient methods attribute to image pixels and baselines such as "black" mean
what they say.

Concrete adapters live in :mod:`xai_bridge.adapters.models`, and
:func:`as_model` finds the right one in the table they declare; the declared
preprocessing is :mod:`xai_bridge.preprocess`. This module stays free of heavy
imports.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import progress
from .batching import ScoreTap
from .errors import ModelInputError
from .preprocess import Preprocess, Scale

__all__ = [
    "CountingModel",
    "DifferentiableModel",
    "Model",
    "OutputKind",
    "Preprocess",
    "Scale",
    "adapter_table",
    "as_model",
    "image_key",
    "softmax",
]


class OutputKind(str, enum.Enum):
    """What a model's outputs are."""

    LOGITS = "logits"
    PROBABILITIES = "probabilities"
    SCORES = "scores"  # anything else: regression outputs, log-probabilities, similarities


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


def image_key(image: np.ndarray) -> str:
    """A content key of one image (pixels and shape), for models that answer each distinct image once.

    Remote and memoising models (taggers, captioners) key their answers by
    it, so the unmasked image that most methods evaluate again is not sent twice.
    """
    arr = np.ascontiguousarray(image)
    return hashlib.blake2b(arr.tobytes() + repr(arr.shape).encode(), digest_size=16).hexdigest()


def answer_distinct(
    images: np.ndarray,
    answers: dict[str, Any],
    batch_size: int,
    compute: Callable[[list[str], np.ndarray], Iterable[Any]],
) -> list[str]:
    """Fill ``answers`` for each distinct image not answered yet, ``batch_size`` images at a time.

    ``compute(keys, batch)`` answers a uint8 batch, one answer per image, in
    order. The keys are :func:`image_key`'s, so an image seen before (the
    unmasked one that most methods evaluate again) is never computed twice.

    Returns:
        The key of every image of ``images``, in order (look the answers up by them).
    """
    keys = [image_key(img) for img in images]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}
    missing = [k for k in first if k not in answers]
    for start in range(0, len(missing), batch_size):
        chunk = missing[start : start + batch_size]
        answers.update(zip(chunk, compute(chunk, np.stack([images[first[k]] for k in chunk])), strict=True))
    return keys


def adapter_table() -> ModuleType:
    """The model adapter table (:mod:`xai_bridge.adapters.models._table`), loaded on first use.

    The one import from this module into ``adapters/``: every adapter
    declares its own entry there, so the core names none of them.
    """
    from .adapters.models import _table

    return _table


def as_model(
    model: Any,
    preprocess: Preprocess | Any | None = None,
    output_kind: OutputKind | str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Model:
    """Wrap ``model`` in the matching adapter unless it already is a :class:`Model`.

    The adapters are tried in the order of the adapter table: a tagger
    (``tag(images)``, wrapped in a :class:`~xai_bridge.captions.TagModel`), a
    Keras model (before torch: on Keras' torch backend it is also a torch
    module), an ONNX session or ``.onnx`` path, a Hugging Face
    ``PreTrainedModel``, a timm model, another ``torch.nn.Module`` (NCHW), and
    last any callable: with ``preprocess`` an array model (e.g. Keras) fed
    preprocessed floats, without a black box fed uint8 NHWC images.

    Args:
        model: a :class:`Model` or anything an adapter recognises (above).
        preprocess: required for other torch modules and for Keras and ONNX
            models (Hugging Face and timm models bring their own); a
            :class:`Preprocess`, a torchvision weights enum (its transforms and
            categories) or a transformers image processor.
        output_kind: what the model returns (default logits for torch modules,
            probabilities otherwise).
        class_names: names of the outputs (default: the model's or the weights' own).
        batch_size: largest batch sent to the model.

    Returns:
        A :class:`Model`.

    Raises:
        ModelInputError: no adapter recognises ``model``.
        ParameterError: the adapter needs ``preprocess=`` and got none (or a wrong one).

    Example::

        model = xb.as_model(torchvision.models.resnet50(), preprocess=ResNet50_Weights.IMAGENET1K_V2)
    """
    if isinstance(model, Model) and callable(getattr(model, "predict", None)) and hasattr(model, "output_kind"):
        return model
    table = adapter_table()
    request = table.ModelRequest(preprocess, output_kind, class_names, batch_size)
    for entry in table.ADAPTERS:
        if entry.recognise(model):
            return entry.wrap(model, request)
    request.preprocess  # noqa: B018  a wrong preprocess is reported before an unknown model, as always
    shown = f" ({model!r:.40})" if isinstance(model, (int, float, str, bytes)) else ""
    raise ModelInputError(
        f"model: expected a Model, torch.nn.Module or a function of images, got {type(model).__name__}{shown}"
    )
