"""The table :func:`xai_bridge.as_model` walks: which adapter wraps which model, in order of precedence.

Each entry pairs a recogniser, a cheap test that imports nothing (it reads
the module names of the object's classes, or duck-types), with the adapter's
``wrap(model, request)``, named ``"module:function"`` as entry points are and
imported only when its entry matches: refusing a model loads no library, and
recognising a Keras model does not load the torch adapter's module. The
``wrap`` functions sit in each adapter module, beside the class they build;
the recognisers of the light modules sit there too, those of the adapters
whose modules import torch in :mod:`._kinds`.

Order matters: a tagger before anything callable; Keras before torch (on
Keras' torch backend a Keras model is also a torch module); Hugging Face and
timm before other torch modules (they bring their own preprocessing); any
other callable last.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xai_bridge.errors import ParameterError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import Preprocess, require_preprocess

from . import onnx, segmenters, tags, timm, torchvision, transformers
from ._kinds import is_keras_model, is_torch_module

__all__ = [
    "ADAPTERS",
    "PREPROCESS_READERS",
    "SEGMENTERS",
    "ZOO_NAMES",
    "ModelAdapter",
    "ModelRequest",
    "coerce_preprocess",
    "named_scorer",
]


class ModelRequest:
    """What ``as_model`` was asked for besides the model.

    ``preprocess`` may be a torchvision weights enum or a transformers image
    processor; it becomes a :class:`Preprocess` (and the weights' categories
    the default class names) when an adapter first reads it, so adapters
    that take no preprocessing (taggers) never see it checked.
    """

    def __init__(
        self, preprocess: Any, output_kind: OutputKind | str | None, class_names: Sequence[str] | None, batch_size: int
    ) -> None:
        self._raw = preprocess
        self._resolved: tuple[Preprocess | None, Sequence[str] | None] | None = None
        self._names = class_names
        self.output_kind = output_kind
        self.batch_size = batch_size

    def _resolve(self) -> tuple[Preprocess | None, Sequence[str] | None]:
        if self._resolved is None:
            pre, names = self._raw, self._names
            if pre is not None and not isinstance(pre, Preprocess):
                pre, found = coerce_preprocess(pre)
                names = names if names is not None else found
            self._resolved = (pre, names)
        return self._resolved

    @property
    def preprocess(self) -> Preprocess | None:
        """The declared preprocessing as a :class:`Preprocess`, or None."""
        return self._resolve()[0]

    @property
    def class_names(self) -> Sequence[str] | None:
        """The class names asked for, else those of the weights passed as ``preprocess``."""
        return self._resolve()[1]

    def declared(self, what: str, example: str) -> Preprocess:
        """The preprocessing, or the one error saying that ``what`` needs it (see :func:`require_preprocess`)."""
        return require_preprocess(self.preprocess, what, example)

    def kind(self, default: OutputKind) -> OutputKind | str:
        """``output_kind`` as asked, else ``default``."""
        return self.output_kind or default


@dataclass(frozen=True)
class ModelAdapter:
    """One row of the table: a recogniser and the adapter function wrapping what it recognises.

    Attributes:
        name: the kind of model, for messages and docs.
        recognise: ``model -> bool``; must import nothing to say no.
        target: ``"module:function"`` in this package: ``wrap(model, request) -> Model``.
    """

    name: str
    recognise: Callable[[Any], bool]
    target: str

    def wrap(self, model: Any, request: ModelRequest) -> Model:
        """Import the adapter's module (a dictionary lookup after the first time) and wrap ``model``."""
        module, function = self.target.split(":")
        wrap: Callable[[Any, ModelRequest], Model] = getattr(
            importlib.import_module(f".{module}", __package__), function
        )
        return wrap(model, request)


#: Names of the bundled models (``adapters.models.zoo``), recognised without importing torch.
ZOO_NAMES = ("efficientnet_lite0", "efficientnet-lite0")


def named_scorer(name: str) -> Any:
    """The caption scorer named by a Hugging Face id or a local folder: a teacher-forcing language model.

    Named by a string as bundled models are, so it comes through this table
    too: the caption package names no adapter module.
    """
    from ..captioners.scorers import TeacherForcingScorer

    return TeacherForcingScorer.from_pretrained(name)


#: The adapters, in order of precedence (see the module docstring).
ADAPTERS: tuple[ModelAdapter, ...] = (
    ModelAdapter("bundled model", lambda m: isinstance(m, str) and m in ZOO_NAMES, "zoo:wrap"),
    ModelAdapter("tagger", tags.is_tagger, "tags:wrap"),
    ModelAdapter("keras", is_keras_model, "keras:wrap"),
    ModelAdapter("onnx", onnx.is_onnx_model, "onnx:wrap"),
    ModelAdapter("transformers", transformers.recognise, "transformers:wrap"),
    ModelAdapter("timm", timm.recognise, "timm:wrap"),
    ModelAdapter("torch", is_torch_module, "torch:wrap"),
    ModelAdapter("function", callable, "arrays:wrap"),
)

#: Segmentation models ``xb.explain`` sends to :mod:`xai_bridge.segmentation`, before ``ADAPTERS`` is
#: walked; their ``wrap(model, preprocess)`` takes the raw ``preprocess=`` (a weights enum, a processor).
SEGMENTERS: tuple[ModelAdapter, ...] = (
    ModelAdapter("torchvision segmenter", segmenters.is_torchvision_segmenter, "segmenters:wrap_torchvision"),
    ModelAdapter("transformers segmenter", segmenters.is_hf_segmenter, "segmenters:wrap_hf"),
)

#: Readers of other libraries' preprocessing settings, behind ``Preprocess.from_<library>``.
PREPROCESS_READERS: dict[str, Callable[[Any], Preprocess]] = {
    "transformers": transformers.preprocess_from_processor,
    "timm": timm.preprocess_from_timm,
    "torchvision": torchvision.preprocess_from_weights,
}


def coerce_preprocess(obj: Any) -> tuple[Preprocess, list[str] | None]:
    """A :class:`Preprocess` (and class names) from a torchvision weights enum or a transformers processor."""
    if torchvision.is_weights(obj):
        return torchvision.preprocess_from_weights(obj), torchvision.weights_class_names(obj)
    if type(obj).__module__.startswith("transformers.") or isinstance(obj, dict):
        return transformers.preprocess_from_processor(obj), None
    raise ParameterError(
        f"preprocess: expected a Preprocess, a torchvision weights enum or a transformers image processor, "
        f"got {type(obj).__name__}; e.g. preprocess=Preprocess.imagenet()"
    )
