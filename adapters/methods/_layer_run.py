"""What every layer method (pytorch-grad-cam's and torchcam's CAMs) does around a run.

Reading the layer params (with their aliases), choosing the layer for a request
(:func:`~xai_bridge.adapters.methods._layers.choose_layer`), checking targets
against the model's outputs, stopping gradients below the layer, and cropping
maps back to the image when the preprocessing cropped it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_bridge.errors import ParameterError

from ._layers import TargetLayer, choose_layer

__all__ = ["check_outputs", "check_target_range", "crop_aligned", "gradient_stop", "layer_aliases", "request_layer"]


def layer_aliases(params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` with the libraries' own spellings of ``layer=`` renamed to it.

    pytorch-grad-cam takes ``target_layers=[layer]`` and torchcam
    ``target_layer=layer``; users bring code written for either. A CAM here
    explains one layer per call, so a list must hold exactly one layer.
    """
    out = dict(params)
    given = [k for k in ("layer", "target_layers", "target_layer") if k in out]
    if len(given) > 1:
        raise ParameterError(f"{given[1]}: an alias of layer=, but {given[0]}= was given too; pass only one of them")
    for alias in ("target_layers", "target_layer"):
        if alias in out:
            value = out.pop(alias)
            if isinstance(value, (list, tuple)):
                if len(value) != 1:
                    raise ParameterError(
                        f"{alias}: expected one layer (xai-bridge computes one CAM per layer), got {len(value)}; "
                        f"pass {alias}=[layer] and call once per layer"
                    )
                value = value[0]
            out["layer"] = value
    return out


def crop_aligned(maps: np.ndarray, preprocess: Any) -> np.ndarray:
    """Lay ``(..., H, W)`` CAMs back onto the part of the image the model sees.

    The libraries upsample a layer's map to the size of the tensor they are
    given, the whole image; when the preprocessing centre-crops (resize 256,
    crop 224), the map covers only the crop. It is resampled into the crop's
    box in image coordinates and is zero outside, where the model sees nothing.
    Without a crop the maps are returned as they are.
    """
    height, width = maps.shape[-2:]
    box = preprocess.crop_box(height, width) if hasattr(preprocess, "crop_box") else None
    if box is None:
        return maps
    top, left, bottom, right = (round(v) for v in box)
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(max(bottom, top + 1), height), min(max(right, left + 1), width)
    flat = torch.from_numpy(np.ascontiguousarray(maps, np.float32)).reshape(-1, 1, height, width)
    inner = torch.nn.functional.interpolate(
        flat, size=(bottom - top, right - left), mode="bilinear", align_corners=False
    )
    out = np.zeros(maps.shape, np.float32)
    out[..., top:bottom, left:right] = inner.reshape(*maps.shape[:-2], bottom - top, right - left).numpy()
    return out


def check_target_range(targets: np.ndarray, n_outputs: int) -> None:
    """Raise when a target index is outside ``0 .. n_outputs - 1``."""
    bad = targets[(targets < 0) | (targets >= n_outputs)]
    if bad.size:
        raise ParameterError(f"targets: class {int(bad[0])} is out of range for a model with {n_outputs} outputs")


@contextmanager
def gradient_stop(layer: TargetLayer | None) -> Iterator[bool]:
    """Cut the autograd graph below a CAM layer while the context is open.

    Gradient CAMs need the target score's gradient at the layer's output only.
    A forward hook (run before the libraries' own hooks) hands the rest of the
    network a copy of that output that starts a fresh graph: with the
    parameters frozen and the input not requiring grad, nothing before the
    layer is recorded and the backward pass runs through the head alone. The
    values, and the gradients at the layer, are the same. The copy is a clone
    of a detached leaf, so in-place ops after the layer behave as before.

    Args:
        layer: the target layer; None (no layer) or a layer that runs more
            than once per forward pass gets no stop.

    Yields:
        Whether the stop is in place (when False the caller must make the
        input require grad as usual).
    """
    if layer is None or layer.calls != 1:
        yield False
        return

    def hook(_mod: nn.Module, _args: Any, out: Any) -> Any:
        if isinstance(out, torch.Tensor) and torch.is_grad_enabled() and out.is_floating_point():
            return out.detach().requires_grad_(True).clone()
        return None

    handle = layer.module.register_forward_hook(hook, prepend=True)
    try:
        yield True
    finally:
        handle.remove()


def request_layer(model: Any, net: nn.Module, x0: torch.Tensor, targets: np.ndarray, params: Any) -> TargetLayer:
    """The CAM layer of a request: ``params["layer"]`` / ``["reshape_transform"]`` or the automatic choice.

    Traces the first image ``x0`` for the first target, and caches the choice
    in ``model.memo`` per input size (see :func:`choose_layer`). A model with a
    ``cam_layer(net, x0, layer, reshape_transform)`` method chooses first (None:
    the usual rules).
    """
    own = getattr(model, "cam_layer", None)  # a model with its own layer rules (detectors: a dict of maps)
    chosen = own(net, x0, params["layer"], params["reshape_transform"]) if callable(own) else None
    return chosen or choose_layer(
        model.module, net, x0, int(targets[0, 0]), params["layer"], params["reshape_transform"], model.memo
    )


def check_outputs(net: nn.Module, x0: torch.Tensor, targets: np.ndarray, n_outputs: int | None) -> None:
    """Check targets against the output count; one forward pass only when the count is unknown.

    ``explain()`` knows it already; a backend called directly does not.
    """
    if n_outputs is None:
        with torch.no_grad():
            n_outputs = int(net(x0).shape[-1])
    check_target_range(targets, n_outputs)
