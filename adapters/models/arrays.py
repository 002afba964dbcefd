"""Adapters for numpy callables: NHWC array models (Keras style) and black boxes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.batching import batched
from xai_bridge.errors import ModelInputError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import Preprocess, require_preprocess

from ._outputs import check_outputs, class_count

if TYPE_CHECKING:
    from ._table import ModelRequest

__all__ = ["ArrayModel", "BlackBoxModel", "wrap"]


def wrap(fn: Any, request: ModelRequest) -> Model:
    """``as_model``'s entry for any other callable: an :class:`ArrayModel` with ``preprocess``, else a black box."""
    kind = request.kind(OutputKind.PROBABILITIES)
    if request.preprocess is not None:
        return ArrayModel(fn, request.preprocess, kind, request.class_names, request.batch_size)
    return BlackBoxModel(fn, output_kind=kind, class_names=request.class_names, batch_size=request.batch_size)


class ArrayModel:
    """A callable taking preprocessed float arrays, e.g. a Keras model.

    ``fn`` receives ``preprocess.apply(images)`` (float32, in ``preprocess.layout``)
    and returns ``(N, outputs)``. Example, seed 004's InceptionV3::

        ArrayModel(inet_model.predict, Preprocess.inception())

    Args:
        fn: the model function.
        preprocess: declared preprocessing (resize, [-1, 1] scaling, layout...).
        output_kind: what ``fn`` returns.
        class_names: names of the outputs.
        batch_size: largest batch passed to ``fn``.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        preprocess: Preprocess,
        output_kind: OutputKind | str = OutputKind.PROBABILITIES,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> None:
        if not callable(fn):
            raise ModelInputError(f"fn: expected a callable, got {type(fn).__name__}")
        preprocess = require_preprocess(preprocess, "an array model", "Preprocess.inception()")
        if int(batch_size) <= 0:
            raise ModelInputError(f"batch_size: expected a positive integer, got {batch_size}")
        self.fn = fn
        self.preprocess = preprocess
        self.output_kind = OutputKind(output_kind)
        self.class_names = list(class_names) if class_names is not None else None
        self.batch_size = int(batch_size)
        self.output_count: int | None = None  # known after the first predict

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Outputs for uint8 NHWC images, ``(N, outputs)`` float32."""
        out = batched(lambda b: _numpy(self.fn(self.preprocess.apply(b))), images, self.batch_size)
        self.output_count = class_count(check_outputs(out, self.class_names).shape)
        return out

    def __repr__(self) -> str:
        return f"ArrayModel({getattr(self.fn, '__name__', type(self.fn).__name__)}, preprocess={self.preprocess})"


class BlackBoxModel:
    """Any function from uint8 RGB ``(N, H, W, 3)`` images to ``(N, outputs)``.

    The function gets a copy of each batch, so it may change it freely.

    Args:
        fn: the function.
        output_kind: what ``fn`` returns.
        class_names: names of the outputs.
        batch_size: largest batch passed to ``fn``.
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        output_kind: OutputKind | str = OutputKind.PROBABILITIES,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> None:
        if not callable(fn):
            raise ModelInputError(f"fn: expected a callable, got {type(fn).__name__}")
        if int(batch_size) <= 0:
            raise ModelInputError(f"batch_size: expected a positive integer, got {batch_size}")
        self.fn = fn
        self.output_kind = OutputKind(output_kind)
        self.class_names = list(class_names) if class_names is not None else None
        self.batch_size = int(batch_size)
        self.output_count: int | None = None  # known after the first predict

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Outputs for uint8 NHWC images, ``(N, outputs)`` float32."""
        out = batched(lambda b: _numpy(self.fn(b.copy())), images, self.batch_size)
        self.output_count = class_count(check_outputs(out, self.class_names).shape)
        return out

    def __repr__(self) -> str:
        return f"BlackBoxModel({getattr(self.fn, '__name__', type(self.fn).__name__)})"


def _numpy(out: object) -> np.ndarray:
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()  # type: ignore[union-attr]
    elif hasattr(out, "numpy") and not isinstance(out, np.ndarray):
        out = out.numpy()  # type: ignore[union-attr]
    return np.asarray(out, dtype=np.float32)
