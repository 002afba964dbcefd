"""ONNX models: an ``onnxruntime.InferenceSession`` or a ``.onnx`` file as a :class:`~xai_bridge.models.Model`.

The input's name, element type and layout (NCHW or NHWC: where the 3 colour
channels sit) and the output are read from the graph. A dynamic batch axis
gets chunks of ``batch_size`` images; a fixed batch (often 1 in exported
models) gets chunks of exactly that size, the last one padded by repeating
its final image (the padding rows are dropped). ONNX graphs are not
differentiable from here, so every perturbation method works and gradient
methods are refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.batching import batched
from xai_bridge.errors import MethodNotApplicableError, ModelInputError, ParameterError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import Preprocess, require_preprocess

from ._input_shape import fit_input_shape
from ._kinds import from_library
from ._outputs import check_outputs, class_count

if TYPE_CHECKING:
    from ._table import ModelRequest

__all__ = ["MissingOnnxFileError", "OnnxModel", "is_onnx_model", "wrap"]

_WHAT, _EXAMPLE = "an ONNX model", "Preprocess.imagenet() (the layout is read from the graph)"

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}


class MissingOnnxFileError(ModelInputError, FileNotFoundError):
    """No file at the ``.onnx`` path given (still a ``FileNotFoundError``, as before)."""


class OnnxModel:
    """An ONNX graph run by onnxruntime, fed ``preprocess.apply(images)``.

    Example::

        torch.onnx.export(net, torch.zeros(1, 3, 224, 224), "net.onnx", dynamic_axes={"input": {0: "n"}})
        xb.explain("net.onnx", images, "lime.Lime", preprocess=xb.Preprocess.imagenet())

    Args:
        model: an ``onnxruntime.InferenceSession`` or the path of a ``.onnx`` file
            (opened on the CPU provider).
        preprocess: what the graph expects; its layout and, when not given,
            its size are read from the graph's input.
        output: the output to explain, by name or position (default: the first).
        output_kind: what that output is (default: logits).
        class_names: names of the outputs.
        batch_size: largest batch per run when the batch axis is dynamic.
    """

    def __init__(
        self,
        model: Any,
        preprocess: Preprocess,
        output: str | int = 0,
        output_kind: OutputKind | str = OutputKind.LOGITS,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
    ) -> None:
        preprocess = require_preprocess(preprocess, _WHAT, _EXAMPLE)
        if isinstance(batch_size, bool) or int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
        self.session = _session(model)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise MethodNotApplicableError(
                f"model: expected an ONNX graph with one image input, got {[i.name for i in inputs]}"
            )
        spec = inputs[0]
        self.input_name = spec.name
        if spec.type not in _FLOAT_TYPES:
            raise MethodNotApplicableError(
                f"model: ONNX input {spec.name!r} has type {spec.type}; expected a float tensor of preprocessed pixels"
            )
        self._dtype = _FLOAT_TYPES[spec.type]
        self.preprocess = _fit_preprocess(spec.name, list(spec.shape), preprocess)
        first = spec.shape[0] if spec.shape else None
        self.fixed_batch = int(first) if isinstance(first, int) and first > 0 else None
        self.output_name = _output_name(self.session, output)
        self.output_kind = OutputKind(output_kind)
        self.class_names = list(class_names) if class_names is not None else None
        self.batch_size = int(batch_size)
        self.output_count: int | None = None  # known after the first predict

    def _run(self, batch: np.ndarray) -> np.ndarray:
        x = self.preprocess.apply(batch).astype(self._dtype, copy=False)
        n, fixed = len(x), self.fixed_batch
        if fixed is not None and n < fixed:
            x = np.concatenate([x, np.repeat(x[-1:], fixed - n, axis=0)])
        (out,) = self.session.run([self.output_name], {self.input_name: x})
        out = np.asarray(out, np.float32)
        if self.output_count is None:  # the first real output: one score per class, as many as names
            self.output_count = class_count(check_outputs(out, self.class_names).shape)
        return out.reshape(len(out), -1)[:n]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Outputs for uint8 NHWC images, ``(N, outputs)`` float32."""
        out = batched(self._run, images, self.fixed_batch or self.batch_size)
        self.output_count = int(out.shape[1])
        return out

    def __repr__(self) -> str:
        return f"OnnxModel(input={self.input_name!r}, output={self.output_name!r}, preprocess={self.preprocess})"


def is_onnx_model(obj: Any) -> bool:
    """An onnxruntime session or a ``.onnx`` path: nothing is imported."""
    if isinstance(obj, (str, os.PathLike)):
        return str(obj).lower().endswith(".onnx")
    return from_library(obj, ("onnxruntime",))


def wrap(model: Any, request: ModelRequest) -> Model:
    """``as_model``'s entry for ONNX models (logits by default)."""
    pre = request.declared(_WHAT, _EXAMPLE)
    kind = request.kind(OutputKind.LOGITS)
    return OnnxModel(model, pre, output_kind=kind, class_names=request.class_names, batch_size=request.batch_size)


def _session(model: Any) -> Any:
    if not isinstance(model, (str, os.PathLike)):
        if not callable(getattr(model, "run", None)) or not callable(getattr(model, "get_inputs", None)):
            raise ParameterError(
                f"model: expected an onnxruntime.InferenceSession or a .onnx path, got {type(model).__name__}"
            )
        return model
    path = Path(model)
    if path.is_dir():
        raise ModelInputError(f"model: expected a .onnx file, got the directory {str(path)!r}; pass the file inside it")
    if not path.is_file():
        raise MissingOnnxFileError(f"model: no ONNX file at {str(path)!r}; check the path")
    import onnxruntime  # type: ignore[import-untyped]

    try:
        return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail / InvalidProtobuf / InvalidGraph, over many lines
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        size = path.stat().st_size
        raise ModelInputError(
            f"model: {str(path)!r} ({size} bytes) is not a loadable ONNX model ({type(err).__name__}: {reason}); "
            "export it again, e.g. with torch.onnx.export, and check the file is complete"
        ) from None


def _output_name(session: Any, output: str | int) -> str:
    names = [o.name for o in session.get_outputs()]
    if isinstance(output, str) and output in names:
        return output
    if isinstance(output, int) and not isinstance(output, bool) and -len(names) <= output < len(names):
        return names[output]
    raise ModelInputError(f"output: expected one of the graph's outputs {names} (a name or a position), got {output!r}")


def _fit_preprocess(name: str, shape: list[Any], preprocess: Preprocess) -> Preprocess:
    """The layout, channels (and a missing size) read from the input's shape; an ambiguous shape keeps ``preprocess``."""
    if len(shape) != 4:
        raise MethodNotApplicableError(
            f"model: ONNX input {name!r} has shape {shape}; expected (N, 3, H, W) or (N, H, W, 3)"
        )
    return fit_input_shape(shape, preprocess)
