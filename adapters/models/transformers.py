"""Hugging Face transformers image classifiers: preprocessing from the image processor, names from the config.

A bare ``PreTrainedModel`` (``ViTForImageClassification``,
``ConvNextForImageClassification``, ...) becomes a
:class:`~xai_bridge.adapters.models.TorchModel`: its ``ImageClassifierOutput``
is unwrapped to ``.logits`` by the pixel wrapper, its preprocessing is read from
the ``preprocessor_config.json`` saved beside the weights (``model.name_or_path``
as a local folder) or from an image processor passed in, and its class names
come from ``config.id2label``. A multi-label head
(``problem_type="multi_label_classification"``) is explained as sigmoid
probabilities (``output_kind`` probabilities), and a one-channel model
(``num_channels=1``) gets grey inputs. The module itself is used as is, never changed.

transformers itself is not imported here: an image processor is read through
``to_dict()`` (or a plain dict, the JSON file's content).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xai_bridge.errors import ModelInputError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import Preprocess, Scale, require_preprocess

from ._kinds import is_torch_module

if TYPE_CHECKING:
    from ._table import ModelRequest

__all__ = [
    "class_names_from_config",
    "is_transformers_model",
    "preprocess_from_processor",
    "recognise",
    "transformers_model",
    "wrap",
]

#: PIL resample codes an image processor stores, by the interpolation xai-bridge applies.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
_RESAMPLE_NAMES = {1: "lanczos", 4: "box", 5: "hamming"}
#: Processor classes (and their Pil / Fast variants) whose ``crop_pct`` rule is ConvNeXt's: the shorter
#: edge resized to edge / crop_pct below 384, then a centre crop.
_CONVNEXT_RULE = "ConvNextImageProcessor"


def is_transformers_model(obj: Any) -> bool:
    """Whether ``obj`` is a transformers ``PreTrainedModel`` (checked without importing transformers)."""
    return any(c.__module__.startswith("transformers.") for c in type(obj).__mro__) and hasattr(obj, "config")


def recognise(obj: Any) -> bool:
    """``as_model``'s test: a transformers torch model."""
    return is_torch_module(obj) and is_transformers_model(obj)


def wrap(model: Any, request: ModelRequest) -> Model:
    """``as_model``'s entry for transformers models (see :func:`transformers_model`)."""
    return transformers_model(model, request.preprocess, request.output_kind, request.class_names, request.batch_size)


def preprocess_from_processor(processor: Any) -> Preprocess:
    """The :class:`Preprocess` an image processor applies (see :meth:`Preprocess.from_transformers`).

    Args:
        processor: a transformers image processor (fast or PIL backend), a
            ``preprocessor_config.json`` path or its content as a dict.

    Raises:
        ValueError: a setting xai-bridge cannot reproduce exactly (named, with the fix).
    """
    cfg = _config_dict(processor)
    kind = str(cfg.get("image_processor_type") or type(processor).__name__)
    size, resize = _sizes(cfg, kind)
    return Preprocess(
        size=size,
        resize=resize,
        scale=_scale(cfg),
        mean=_triple(cfg.get("image_mean")) if cfg.get("do_normalize", True) else None,
        std=_triple(cfg.get("image_std")) if cfg.get("do_normalize", True) else None,
        interpolation=_interpolation(cfg.get("resample", 2)) if size is not None else None,
        crop_rounding="floor",
    )


def _config_dict(processor: Any) -> dict[str, Any]:
    if isinstance(processor, (str, Path)):
        path = Path(processor)
        path = path / "preprocessor_config.json" if path.is_dir() else path
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as err:
            raise ModelInputError(
                f"processor: {str(path)!r} is not a readable preprocessor_config.json ({type(err).__name__}: "
                f"{str(err)[:120]}); save it again with processor.save_pretrained(folder)"
            ) from None
    if isinstance(processor, Mapping):
        return dict(processor)
    to_dict = getattr(processor, "to_dict", None)
    if callable(to_dict):
        cfg = dict(to_dict())
        cfg.setdefault("image_processor_type", type(processor).__name__)
        return cfg
    raise ModelInputError(
        f"processor: expected a transformers image processor, a preprocessor_config.json path or its dict, "
        f"got {type(processor).__name__}"
    )


def _sizes(cfg: Mapping[str, Any], kind: str) -> tuple[tuple[int, int] | None, int | tuple[int, int] | None]:
    """``(size, resize)``: the model input size and what is resized before the centre crop."""
    if not cfg.get("do_resize", True):
        return None, None
    size = dict(cfg.get("size") or {})
    crop = dict(cfg.get("crop_size") or {}) if cfg.get("do_center_crop") else {}
    crop_hw = (int(crop["height"]), int(crop["width"])) if "height" in crop and "width" in crop else None
    if cfg.get("crop_pct") is not None and "shortest_edge" in size:
        if not kind.startswith(_CONVNEXT_RULE):
            raise ModelInputError(
                f"processor: the crop_pct rule of {kind} is not supported; pass preprocess=Preprocess(size=..., "
                "resize=..., mean=..., std=..., interpolation=...) as that processor applies it"
            )
        edge = int(size["shortest_edge"])
        if edge < 384:  # ConvNextImageProcessor: resize the shorter edge to edge / crop_pct, crop edge x edge
            return (edge, edge), int(edge / float(cfg["crop_pct"]))
        return (edge, edge), None  # warped to edge x edge, no crop
    if "height" in size and "width" in size:
        hw = (int(size["height"]), int(size["width"]))
        return (crop_hw, hw) if crop_hw is not None and crop_hw != hw else (hw, None)
    if set(size) == {"shortest_edge"} and crop_hw is not None:
        return crop_hw, int(size["shortest_edge"])
    raise ModelInputError(
        f"processor: size={size} with crop_size={crop or None} gives inputs whose size depends on the image; "
        "xai-bridge needs a fixed model input: pass preprocess=Preprocess(size=(h, w), resize=..., ...)"
    )


def _scale(cfg: Mapping[str, Any]) -> Scale:
    if not cfg.get("do_rescale", True):
        return Scale.BYTE
    factor = float(cfg.get("rescale_factor", 1 / 255))
    if cfg.get("rescale_offset") and math.isclose(factor, 1 / 127.5, rel_tol=1e-6):
        return Scale.SYMMETRIC
    if not cfg.get("rescale_offset") and math.isclose(factor, 1 / 255, rel_tol=1e-6):
        return Scale.UNIT
    raise ModelInputError(
        f"processor: rescale_factor={factor} (offset={bool(cfg.get('rescale_offset'))}) is not one of 1/255 "
        "or 1/127.5 - 1; pass preprocess=Preprocess(scale=..., mean=..., std=...) matching it"
    )


def _triple(value: Any) -> tuple[float, float, float] | None:
    if value is None:
        return None
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ModelInputError(f"processor: expected 3 channel values for image_mean / image_std, got {value!r}")
    return values[0], values[1], values[2]


def _interpolation(resample: Any) -> str:
    code = int(getattr(resample, "value", resample))
    if code in _RESAMPLE:
        return _RESAMPLE[code]
    raise ModelInputError(
        f"processor: resample={_RESAMPLE_NAMES.get(code, code)!r} is not supported (nearest, bilinear, bicubic); "
        "pass preprocess=Preprocess(..., interpolation='bicubic') to accept the closest filter"
    )


def class_names_from_config(config: Any) -> list[str] | None:
    """``config.id2label`` as a list by index, or None when the config has no labels."""
    id2label = getattr(config, "id2label", None)
    if not id2label:
        return None
    labels = {int(k): str(v) for k, v in dict(id2label).items()}
    if sorted(labels) != list(range(len(labels))):
        return None
    return [labels[i] for i in range(len(labels))]


def _processor_near(model: Any) -> Preprocess | None:
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    path = folder / "preprocessor_config.json"
    return preprocess_from_processor(path) if str(folder) and path.is_file() else None


def transformers_model(
    model: Any,
    preprocess: Preprocess | None = None,
    output_kind: OutputKind | str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Any:
    """A Hugging Face image classifier as a :class:`~xai_bridge.adapters.models.TorchModel`.

    Args:
        model: a ``PreTrainedModel`` taking ``pixel_values`` (NCHW).
        preprocess: what the model expects; default: read from
            ``preprocessor_config.json`` in ``model.name_or_path``.
        output_kind: default logits.
        class_names: default ``config.id2label``.
        batch_size: largest batch run at once.

    Raises:
        ParameterError: no preprocessing declared and none saved beside the model.
    """
    from .torch import TorchModel

    config = getattr(model, "config", None)
    pre = require_preprocess(
        preprocess or _processor_near(model),
        f"{type(model).__name__} (no preprocessor_config.json at name_or_path={getattr(model, 'name_or_path', '')!r})",
        "Preprocess.from_transformers(processor) (e.g. AutoImageProcessor.from_pretrained(...))",
    )
    if getattr(config, "num_channels", 3) == 1 and pre.channels == 3:
        pre = replace(pre, channels=1)  # the processor makes RGB; the model takes grey
    names = class_names if class_names is not None else class_names_from_config(config)
    multi_label = getattr(config, "problem_type", None) == "multi_label_classification" and output_kind is None
    return TorchModel(
        model,
        pre,
        output_kind=output_kind or OutputKind.LOGITS,
        class_names=names,
        batch_size=batch_size,
        sigmoid=multi_label,  # independent classes: sigmoid probabilities, never a softmax across them
    )
