"""ONNX detectors: a graph returning boxes, labels and scores (torchvision's format), as a detector.

The graph is read once: its one image input (rank 3 ``(3, H, W)`` as
torchvision exports a detector, or rank 4 with a batch axis; channels first
or last; float pixels in ``[0, 1]`` or ``[0, 255]``, or uint8) and which of
its outputs hold the boxes, the labels and the scores, by name where the
names say so, else by type and shape (the float ``(K, 4)`` output, the
integer one, the other float one), else as given by ``outputs=``. Images are
run one at a time, at their own size where the input's size is dynamic,
resized to a fixed input size otherwise (the boxes mapped back to the
image's pixels). A graph is not differentiable from here: every perturbation
method explains it, gradient methods do not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_bridge._validate import int_at_least
from xai_bridge.detection import Detections
from xai_bridge.errors import ModelInputError, ParameterError

from ._kinds import from_library

__all__ = ["OnnxDetector", "looks_like_onnx"]

_KEYS = ("boxes", "labels", "scores")
#: Words in output names that say which output is which.
_WORDS = {"boxes": ("box", "bbox"), "labels": ("label", "class", "cls"), "scores": ("score", "conf", "prob")}
_INTS = ("tensor(int64)", "tensor(int32)", "tensor(int16)", "tensor(int8)", "tensor(uint8)")
_FLOATS = ("tensor(float)", "tensor(double)", "tensor(float16)")


def looks_like_onnx(obj: Any) -> bool:
    """A ``.onnx`` path or an onnxruntime session (nothing is imported or opened)."""
    if isinstance(obj, (str, os.PathLike)):
        return str(obj).lower().endswith(".onnx")
    return from_library(obj, ("onnxruntime",))


class OnnxDetector:
    """An ONNX detection graph run by onnxruntime, as a detector.

    Example::

        torch.onnx.export(net.eval(), ([torch.rand(3, 320, 320)],), "det.onnx", opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["boxes", "labels", "scores"],
                          dynamic_axes={"image": {1: "h", 2: "w"}})
        [exp] = xb.explain_detections(xb.OnnxDetector("det.onnx", class_names=names), "street.jpg")

    Args:
        model: an ``onnxruntime.InferenceSession`` or the path of a ``.onnx`` file.
        class_names: one name per label index, or None.
        outputs: ``{"boxes": name, "labels": name, "scores": name}`` where the
            graph's outputs cannot be told apart (default: read from the graph).
        pixels: what a float input holds: ``"unit"`` (``[0, 1]``, torchvision's
            detectors) or ``"byte"`` (``[0, 255]``).
        batch_size: images handed to ``detect`` at once (each is run alone).
    """

    def __init__(
        self,
        model: Any,
        class_names: Sequence[str] | None = None,
        *,
        outputs: Mapping[str, str] | None = None,
        pixels: str = "unit",
        batch_size: int = 8,
    ) -> None:
        from .onnx import _session

        if pixels not in ("unit", "byte"):
            raise ParameterError(f"pixels: expected 'unit' ([0, 1]) or 'byte' ([0, 255]), got {pixels!r}")
        batch_size = int_at_least("batch_size", batch_size, 1)
        self.session = _session(model)
        self._input = _InputSpec.read(self.session)
        self.outputs = _output_names(self.session, outputs)
        self.class_names: Sequence[str] | None = None if class_names is None else [str(n) for n in class_names]
        self.pixels = pixels
        self.batch_size = int(batch_size)

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` image, each image one run of the graph."""
        names = [self.outputs[k] for k in _KEYS]
        out = []
        for image in np.asarray(images):
            feed, scale = self._input.feed(image, self.pixels)
            boxes, labels, scores = (np.asarray(v) for v in self.session.run(names, {self._input.name: feed}))
            if self._input.batched:
                boxes, labels, scores = boxes[0], labels[0], scores[0]
            found = Detections.parse({"boxes": boxes, "labels": labels, "scores": scores}, "the ONNX graph's outputs")
            out.append(Detections(found.boxes * scale, found.labels, found.scores))
        return out

    def __repr__(self) -> str:
        return f"OnnxDetector(input={self._input.name!r}, outputs={self.outputs})"


class _InputSpec:
    """The graph's image input: name, rank, where the channels sit, element type and fixed size."""

    def __init__(self, name: str, batched: bool, channels_first: bool, dtype: Any, size: tuple[int, int] | None):
        self.name, self.batched, self.channels_first, self.dtype, self.size = name, batched, channels_first, dtype, size

    @classmethod
    def read(cls, session: Any) -> _InputSpec:
        inputs = session.get_inputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) not in (3, 4):
            found = [(i.name, list(i.shape)) for i in inputs]
            raise ModelInputError(
                f"model: expected an ONNX graph with one image input (3, H, W) or (N, 3, H, W), got {found}; "
                "export the detector with a single image input"
            )
        spatial = shape[-3:]
        channels_first = not (spatial[-1] == 3 and spatial[0] != 3)
        hw = spatial[1:] if channels_first else spatial[:2]
        size = (int(hw[0]), int(hw[1])) if all(isinstance(v, int) and v > 0 for v in hw) else None
        kind = inputs[0].type
        if kind not in _FLOATS and kind != "tensor(uint8)":
            raise ModelInputError(
                f"model: ONNX input {inputs[0].name!r} has type {kind}; expected float or uint8 pixels"
            )
        dtype = {"tensor(double)": np.float64, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(
            kind, np.float32
        )
        return cls(inputs[0].name, len(shape) == 4, channels_first, dtype, size)

    def feed(self, image: np.ndarray, pixels: str) -> tuple[np.ndarray, np.ndarray]:
        """The graph's input for one uint8 ``(H, W, 3)`` image, and the factors mapping its boxes back."""
        h, w = image.shape[:2]
        scale = np.ones(4)
        if self.size is not None and self.size != (h, w):
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize(self.size[::-1], Image.Resampling.BILINEAR))
            scale = np.array([w / self.size[1], h / self.size[0]] * 2)
        x = image.astype(self.dtype) if self.dtype == np.uint8 else image.astype(np.float32)
        if self.dtype != np.uint8:
            x = (x / 255.0 if pixels == "unit" else x).astype(self.dtype)
        x = np.ascontiguousarray(x.transpose(2, 0, 1) if self.channels_first else x)
        return (x[None] if self.batched else x), scale


def _output_names(session: Any, given: Mapping[str, str] | None) -> dict[str, str]:
    """Which output holds the boxes, the labels and the scores (see the module docstring)."""
    outs = session.get_outputs()
    names = [o.name for o in outs]
    if given is not None:
        if not isinstance(given, Mapping) or set(given) != set(_KEYS) or not set(given.values()) <= set(names):
            raise ParameterError(
                f"outputs: expected {{'boxes': ..., 'labels': ..., 'scores': ...}} naming three of the graph's "
                f"outputs {names}, got {given!r}"
            )
        return {k: str(given[k]) for k in _KEYS}
    by_name = {k: [o.name for o in outs if any(w in o.name.lower() for w in _WORDS[k])] for k in _KEYS}
    if all(len(v) == 1 for v in by_name.values()) and len({v[0] for v in by_name.values()}) == 3:
        return {k: v[0] for k, v in by_name.items()}
    boxes = [o.name for o in outs if o.type in _FLOATS and o.shape and o.shape[-1] == 4]
    if not boxes:
        raise ModelInputError(
            f"model: the ONNX graph's outputs {[(o.name, list(o.shape or [])) for o in outs]} hold no boxes "
            "(a float (K, 4) output); export a detector returning boxes, labels and scores as torchvision's do"
        )
    labels = [o.name for o in outs if o.type in _INTS]
    scores = [o.name for o in outs if o.type in _FLOATS and o.name not in boxes]
    if len(boxes) == len(labels) == len(scores) == 1:
        return {"boxes": boxes[0], "labels": labels[0], "scores": scores[0]}
    raise ModelInputError(
        f"outputs: cannot tell which of the graph's outputs {names} are the boxes, labels and scores; "
        "pass outputs={'boxes': ..., 'labels': ..., 'scores': ...}"
    )
