"""The layers of a multi-layer CAM (RefineCAM): ``layers=`` as given, or chosen from the model.

RefineCAM (pytorch-grad-cam's and torchcam's) multiplies the CAMs of several
layers so the coarse map of a deep layer masks the noisy, finer maps of the
earlier ones. The default layers are the automatic CAM layer
(:func:`~xai_bridge.adapters.methods._layers.choose_layer`) and the last
layer of each of the two resolutions before it (on a ResNet: ``layer2``,
``layer3``, ``layer4``, as in torchcam's example). Where every candidate has
one resolution (token grids, a network without downsampling) the default is
the automatic layer and the two candidates before it of the same shape. All
layers share one reshape (the libraries take a single ``reshape_transform``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from xai_bridge.errors import ParameterError

from ._layer_trace import layer_candidates, model_prefix_tokens, trace_layers
from ._layers import TargetLayer, choose_layer

__all__ = ["DEFAULT_DEPTH", "refine_layers"]

#: How many layers the default choice takes.
DEFAULT_DEPTH = 3


def refine_layers(model: Any, net: nn.Module, x0: torch.Tensor, targets: np.ndarray, params: Any) -> list[TargetLayer]:
    """The layers of a request: ``params["layers"]`` (modules or dotted names) or the default choice."""
    reshape = params.get("reshape_transform")
    given = params.get("layers")
    target = int(targets[0, 0])
    if given is None:
        auto = choose_layer(model.module, net, x0, target, None, reshape, model.memo)
        names = _default_names(model.module, net, x0, auto)
        chosen = [
            choose_layer(model.module, net, x0, target, n, reshape or auto.reshape_transform, model.memo) for n in names
        ]
    else:
        if isinstance(given, (str, nn.Module)) or not isinstance(given, Sequence) or len(given) < 2:
            raise ParameterError(
                f"layers: expected a list of two or more layers (modules or dotted names), got {given!r}; "
                "pass e.g. layers=['layer3', 'layer4'] or leave it out for the automatic choice"
            )
        chosen = [choose_layer(model.module, net, x0, target, layer, reshape, model.memo) for layer in given]
    kinds = {type(layer.reshape_transform).__name__ for layer in chosen}
    if len(kinds) > 1:
        raise ParameterError(
            f"layers: RefineCAM needs layers of one layout (one reshape for all), got {[c.name for c in chosen]} "
            f"with {sorted(kinds)}; pass layers of the same kind"
        )
    return chosen


def _default_names(module: nn.Module, net: nn.Module, x0: torch.Tensor, auto: TargetLayer) -> list[str]:
    """The automatic layer and the last layer of each earlier resolution (see the module docstring)."""
    infos, _ = trace_layers(module, net, x0)
    candidates = layer_candidates(infos, model_prefix_tokens(module))
    mine = next((c for c in candidates if c.name == auto.name), None)
    if mine is None:
        return [auto.name]
    same_layout = [c for c in candidates if c.order <= mine.order and len(c.shape) == len(mine.shape)]
    if len(mine.shape) == 4:
        last_per_size: dict[tuple[int, ...], str] = {}
        for c in same_layout:  # forward order: the last one of each resolution wins
            last_per_size.pop(c.shape[2:], None)
            last_per_size[c.shape[2:]] = c.name
        if len(last_per_size) > 1:
            return list(last_per_size.values())[-DEFAULT_DEPTH:]
    return [c.name for c in same_layout if c.shape == mine.shape][-DEFAULT_DEPTH:]
