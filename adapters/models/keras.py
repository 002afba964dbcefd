"""Keras 3 models (TensorFlow or torch backend) as differentiable models.

:class:`KerasModel` wraps a Keras model in :class:`KerasModule`
(:mod:`._keras_module`: a torch module whose gradients come from the Keras
backend) behind the pixel wrapper every torch model has, so captum,
pytorch-grad-cam and torchcam run on it unchanged, with the guards, locks,
score tap and fingerprint of :class:`~xai_bridge.adapters.models.TorchModel`
(shared in :mod:`._differentiable`). Predictions call the Keras model
directly, with no torch op in between.

On TensorFlow the torch parts are built only when a torch library first
needs them: predictions run on a :class:`~._keras_tf.TensorFlowRunner`, and
``captum.IntegratedGradients`` runs captum's rule in TensorFlow
(:meth:`KerasModel.own_backend`), so neither imports torch (whose import
alone costs more resident memory than a large model's gradient pass).

Nothing of the user's model is changed: no ``trainable`` flag, weight or
layer is touched, and every call runs with ``training=False``.
"""

from __future__ import annotations

import hashlib
import sys
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge._load_order import triton_before_tensorflow
from xai_bridge.batching import ScoreTap
from xai_bridge.contract import Backend
from xai_bridge.errors import MethodNotApplicableError, ModelInputError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import Preprocess, require_preprocess
from xai_bridge.registry import MethodSpec

from ._differentiable import PixelModelBase, positive_batch_size
from ._input_shape import fit_input_shape
from ._keras_tf import TensorFlowRunner, gradient_chunk, keras_backend
from ._kinds import is_keras_model
from ._outputs import check_outputs

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ._keras_module import KerasModule
    from ._table import ModelRequest

__all__ = ["KerasModel", "KerasModule", "triton_before_tensorflow", "wrap"]

#: One lock per Keras model: runs on it (through any number of wrappers) take turns.
_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def __getattr__(name: str) -> Any:
    if name == "KerasModule":  # the torch module, imported on first use
        from ._keras_module import KerasModule

        return KerasModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_WHAT, _EXAMPLE = "a Keras model", "Preprocess.inception() (Keras 'tf' mode) or Preprocess.caffe()"


class KerasModel(PixelModelBase):
    """A Keras 3 model as a :class:`xai_bridge.models.DifferentiableModel`.

    Gradient methods and gradient CAMs run with gradients computed by the
    Keras backend (TensorFlow or torch); predictions call the model directly
    (no progress lines). ``layer=`` of a CAM is a Keras layer name, by default
    the last layer with a spatial 4-D output.

    Example::

        model = keras.applications.Xception(weights=None)
        xb.explain(model, images, "captum.IntegratedGradients", preprocess=xb.Preprocess.inception())

    Args:
        model: a built Keras model with one image input and one ``(N, classes)`` output.
        preprocess: what the model expects (``Preprocess.inception()`` is Keras'
            "tf" mode, ``Preprocess.caffe()`` the "caffe" mode). The layout and,
            when not given, the size are read from the model's input.
        output_kind: default: probabilities when the last layer ends in a
            softmax, else logits.
        class_names: names of the outputs.
        batch_size: largest batch sent to the model at once.
        tune_batch: let ``predict`` pick the fastest chunk size (see
            :class:`~xai_bridge.batching.BatchTuner`).
    """

    def __init__(
        self,
        model: Any,
        preprocess: Preprocess,
        output_kind: OutputKind | str | None = None,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
        tune_batch: bool = True,
    ) -> None:
        if not is_keras_model(model):
            raise ModelInputError(f"model: expected a Keras model, got {type(model).__name__}")
        preprocess = _fit_preprocess(model, require_preprocess(preprocess, _WHAT, _EXAMPLE))
        size = positive_batch_size(batch_size)
        self.keras_model = model
        #: Predictions (and TensorFlow's own gradient paths) without torch; None on Keras' torch backend.
        self.runner = TensorFlowRunner(gradient_chunk(model)) if keras_backend() == "tensorflow" else None
        self._torch: tuple[Any, Any] | None = None  # (KerasModule, PixelModule), built on first use
        self._tap: ScoreTap | None = None
        kind = OutputKind(output_kind) if output_kind is not None else _output_kind(model)
        self._setup(preprocess, kind, class_names, size, tune_batch)
        if self.runner is None:  # Keras' torch backend has imported torch already
            self._torch_parts()
        if class_names is not None and self.output_count is not None:  # known from the graph: check now
            check_outputs(np.empty((0, self.output_count), np.float32), self.class_names)

    def _torch_parts(self) -> tuple[Any, Any]:
        """The torch module of the Keras model and its pixel wrapper, built (importing torch) on first use."""
        if self._torch is None:
            from ._keras_module import KerasModule
            from .torch import PixelModule

            module = KerasModule(self.keras_model, runner=self.runner)
            pixel = PixelModule(module, self.preprocess)
            pixel.tap = self._tap
            self._torch = (module, pixel)
        return self._torch

    @property
    def _pixel(self) -> Any:  # read by the shared base (guards, pixel tensors)
        return self._torch_parts()[1]

    @property
    def _device(self) -> torch.device:  # type: ignore[override]  # the base's attribute, built on first read
        return self._torch_parts()[0].device  # type: ignore[no-any-return]

    @property
    def module(self) -> nn.Module:
        """The torch view of the Keras model (:class:`KerasModule`); CAM layer names are Keras layer names."""
        return self._torch_parts()[0]  # type: ignore[no-any-return]

    def own_backend(self, spec: MethodSpec, backend: Backend) -> Backend | None:
        """This model's own implementation of ``spec``'s method, or None where the library's runs.

        On TensorFlow, ``captum.IntegratedGradients`` runs captum's rule in
        TensorFlow (:mod:`xai_bridge.adapters.methods._keras_ig`), falling back
        to ``backend`` (captum on the torch bridge) for what it does not cover.
        """
        if self.runner is None:
            return None
        from xai_bridge.adapters.methods._keras_ig import tensorflow_backend

        return tensorflow_backend(spec, backend)

    def exclusive(self) -> Any:
        """Context manager: one thread at a time runs on this Keras model, through this or any other wrapper."""
        with _LOCKS_GUARD:
            lock = _LOCKS.setdefault(self.keras_model, threading.RLock())
        return lock

    @contextmanager
    def explaining(self) -> Iterator[None]:
        """:meth:`exclusive` use; autograd on as for torch models once torch is loaded (never loaded for it)."""
        with self.exclusive():
            if "torch" not in sys.modules:  # nobody can be inside torch.no_grad() then
                yield
                return
            with super().explaining():
                yield

    @contextmanager
    def inference(self) -> Iterator[None]:
        """Repeated ``predict`` calls: Keras calls change no state, so there is nothing to guard."""
        self._inferring.depth = getattr(self._inferring, "depth", 0) + 1
        try:
            yield
        finally:
            self._inferring.depth -= 1

    def offer_scores(self, images: np.ndarray, outputs: np.ndarray) -> None:
        """Offer the score tap of a :meth:`tap_scores` block (if any) the outputs of uint8 ``images``."""
        if self._tap is not None:
            self._tap.offer(images, outputs)

    @contextmanager
    def tap_scores(self, tap: ScoreTap) -> Iterator[None]:
        """Offer ``tap`` the outputs of every prediction and gradient forward pass inside (held exclusively)."""
        with self.exclusive():
            previous, self._tap = self._tap, tap
            if self._torch is not None:
                self._torch[1].tap = tap
            try:
                yield
            finally:
                self._tap = previous
                if self._torch is not None:
                    self._torch[1].tap = previous

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Outputs for uint8 NHWC images, ``(N, outputs)`` float32, batched; prints nothing.

        Runs ``preprocess.apply`` (Pillow resize: bilinear unless ``interpolation=``; Keras'
        ``load_img`` defaults to nearest) and
        the Keras model, with no torch op in between: torch's worker threads
        stall behind TensorFlow's on small CPUs. Gradient methods resize with
        torch instead, so images already at the model's size (the usual Keras
        workflow) give identical scores both ways.
        """

        def run(b: np.ndarray) -> np.ndarray:
            x = self.preprocess.apply(b)
            out = self.runner.predict(self.keras_model, x) if self.runner else self._torch_parts()[0].predict(x)
            tap = self._tap
            if tap is not None:
                tap.offer(b, out)
            return out

        return self._chunked(run, images)

    @property
    def output_count(self) -> int | None:
        """Number of outputs, read from the model."""
        shape = getattr(getattr(self.keras_model, "outputs", [None])[0], "shape", None)
        if shape is not None and shape[-1] is not None:
            return int(shape[-1])
        return self._torch[1].n_outputs if self._torch is not None else None

    def _network(self) -> Any:
        return self.keras_model

    def _weights_fingerprint(self) -> dict[str, Any]:
        """The Keras model's variables (names, shapes, values): torch's module registry never holds them."""
        shapes = hashlib.blake2b(digest_size=16)
        weights = hashlib.blake2b(digest_size=16)
        count = 0
        for variable in self.keras_model.weights:
            value = np.ascontiguousarray(np.asarray(variable))
            line = f"{getattr(variable, 'path', variable.name)}:{value.shape}:{value.dtype}\n".encode()
            shapes.update(line)
            weights.update(line + value.tobytes())
            count += value.size
        return {"shapes": shapes.hexdigest(), "weights": weights.hexdigest(), "values": count}

    def __repr__(self) -> str:
        return f"KerasModel({self.keras_model.name!r}, preprocess={self.preprocess}, batch_size={self.batch_size})"


def wrap(model: Any, request: ModelRequest) -> Model:
    """``as_model``'s entry for Keras models."""
    pre = request.declared(_WHAT, _EXAMPLE)
    return KerasModel(
        model, pre, output_kind=request.output_kind, class_names=request.class_names, batch_size=request.batch_size
    )


def _fit_preprocess(model: Any, preprocess: Preprocess) -> Preprocess:
    """The layout, channel count (and a missing size) read from the model's input shape.

    An unbuilt model is refused: building it would give the user's model
    weights at a shape xai-bridge chose.
    """
    if not getattr(model, "built", True):
        raise ModelInputError(
            f"model: the Keras model {getattr(model, 'name', '')!r} is not built (no input shape, no weights); "
            "build it first, e.g. model.build((None, 299, 299, 3)), or give it a keras.Input"
        )
    try:
        shape = tuple(model.inputs[0].shape)
        outputs = [tuple(o.shape) for o in model.outputs]
    except (AttributeError, IndexError, ValueError, TypeError):
        return preprocess
    if len(outputs) != 1:
        raise MethodNotApplicableError(
            f"model: expected a Keras model with one output (N, classes), got {len(outputs)} outputs {outputs}; "
            "wrap the one to explain: keras.Model(model.inputs, model.outputs[0])"
        )
    if len(model.inputs) != 1 or len(shape) != 4:
        raise MethodNotApplicableError(
            f"model: expected a Keras model with one image input (N, H, W, 3), got inputs "
            f"{[tuple(i.shape) for i in model.inputs]}"
        )
    return fit_input_shape(shape, preprocess)


def _output_kind(model: Any) -> OutputKind:
    try:
        last = model.layers[-1]
    except (AttributeError, IndexError):
        return OutputKind.LOGITS
    activation = getattr(last, "activation", None)
    is_softmax = getattr(activation, "__name__", "") == "softmax" or type(last).__name__ == "Softmax"
    return OutputKind.PROBABILITIES if is_softmax else OutputKind.LOGITS
