"""timm models: preprocessing from the model's ``pretrained_cfg``, ImageNet names for 1000-class heads.

``timm.data.resolve_data_config`` gives the evaluation settings a timm model
was trained for (input size, ``crop_pct``, ``crop_mode``, interpolation,
mean/std); :func:`preprocess_from_timm` turns them into the
:class:`~xai_bridge.models.Preprocess` that ``timm.data.create_transform``
would apply at evaluation time, so a model with mean/std 0.5 (many ViTs) or
another input size is not silently fed ImageNet statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from xai_bridge.errors import ModelInputError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import Preprocess

from ._kinds import is_torch_module

if TYPE_CHECKING:
    from ._table import ModelRequest

__all__ = ["is_timm_model", "preprocess_from_timm", "recognise", "timm_class_names", "timm_model", "wrap"]


def is_timm_model(obj: Any) -> bool:
    """Whether ``obj`` is a timm model (its class comes from timm, or it carries a ``pretrained_cfg``)."""
    return type(obj).__module__.startswith("timm.") or isinstance(getattr(obj, "pretrained_cfg", None), Mapping)


def recognise(obj: Any) -> bool:
    """``as_model``'s test: a timm torch model."""
    return is_torch_module(obj) and is_timm_model(obj)


def wrap(model: Any, request: ModelRequest) -> Model:
    """``as_model``'s entry for timm models (see :func:`timm_model`)."""
    return timm_model(model, request.preprocess, request.output_kind, request.class_names, request.batch_size)


def preprocess_from_timm(model_or_config: Any) -> Preprocess:
    """The evaluation preprocessing of a timm model, or of its resolved data config.

    Args:
        model_or_config: a timm model, or a dict as returned by
            ``timm.data.resolve_data_config`` (``input_size``, ``crop_pct``,
            ``crop_mode``, ``interpolation``, ``mean``, ``std``).

    Raises:
        ValueError: a setting ``create_transform`` applies that xai-bridge does not
            reproduce (``crop_mode="border"``, a non-square centre crop, an
            unknown interpolation).
    """
    if isinstance(model_or_config, Mapping):
        cfg = dict(model_or_config)
    else:
        import timm.data

        cfg = dict(timm.data.resolve_data_config({}, model=model_or_config))
    _, height, width = (int(v) for v in cfg["input_size"])
    crop_pct = float(cfg.get("crop_pct") or 0.875)
    mode = cfg.get("crop_mode") or "center"
    scaled = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    resize: int | tuple[int, int]
    if mode == "squash":
        resize = scaled
    elif mode == "center" and scaled[0] == scaled[1]:
        resize = scaled[0]  # torchvision's Resize(int): the shorter edge
    else:
        raise ModelInputError(
            f"model: timm's crop_mode={mode!r} with input size {(height, width)} is not reproduced by xai-bridge; "
            "pass preprocess=Preprocess(size=..., resize=..., mean=..., std=..., interpolation=...)"
        )
    interpolation = str(cfg.get("interpolation") or "bilinear")
    if interpolation not in ("nearest", "bilinear", "bicubic"):
        raise ModelInputError(
            f"model: timm interpolation {interpolation!r} is not supported (nearest, bilinear, bicubic); pass "
            "preprocess=Preprocess(..., interpolation='bicubic')"
        )
    return Preprocess(
        size=(height, width),
        resize=None if resize == (height, width) else resize,  # squash at crop_pct 1: a plain resize
        mean=tuple(cfg["mean"]),  # type: ignore[arg-type]
        std=tuple(cfg["std"]),  # type: ignore[arg-type]
        interpolation=interpolation,
        crop_rounding="round",
    )


def timm_class_names(model: Any) -> list[str] | None:
    """ImageNet class names from timm's bundled metadata when the head has 1000 classes, else None."""
    if getattr(model, "num_classes", None) != 1000:
        return None
    import timm.data

    subset = timm.data.infer_imagenet_subset(model) or "imagenet-1k"
    info = timm.data.ImageNetInfo(subset)
    return [info.index_to_description(i) for i in range(1000)]


def timm_model(
    model: Any,
    preprocess: Preprocess | None = None,
    output_kind: OutputKind | str | None = None,
    class_names: Sequence[str] | None = None,
    batch_size: int = 32,
) -> Any:
    """A timm model as a :class:`~xai_bridge.adapters.models.TorchModel`.

    Args:
        model: the timm model.
        preprocess: default: :func:`preprocess_from_timm` of the model.
        output_kind: default logits.
        class_names: default: ImageNet names for a 1000-class head.
        batch_size: largest batch run at once.
    """
    from .torch import TorchModel

    names = class_names if class_names is not None else timm_class_names(model)
    if preprocess is None:
        preprocess = preprocess_from_timm(model)
        if _in_chans(model) == 1:  # timm's data config says 3 channels whatever in_chans was
            preprocess = replace(preprocess, channels=1)
    return TorchModel(
        model,
        preprocess,
        output_kind=output_kind or OutputKind.LOGITS,
        class_names=names,
        batch_size=batch_size,
    )


def _in_chans(model: Any) -> int | None:
    """The channels a timm model takes: ``in_chans``, else its first convolution's input channels."""
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int):
        return chans
    for module in model.modules():
        if type(module).__name__ == "Conv2d":
            return int(module.in_channels)
    return None
