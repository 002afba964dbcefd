"""Where CAM methods look: the target-layer choice, automatic or given, and the reshape it needs.

Shared by the pytorch-grad-cam and torchcam backends; the traced forward pass
and what it says of each layer are in :mod:`._layer_trace`, the reshapes
(:class:`TokenGrid`, :class:`ChannelsLast`) in :mod:`._layer_reshapes`. Layer names are dotted
names inside the user's module (``model.module``), e.g. ``"layer4"`` or
``"blocks.11.norm1"``.

Automatic choice (``layer=None``): one forward pass of the first image records
every submodule's output. Candidates are

* spatial layers: modules that are, or contain, a 2-D convolution or a
  channel-first norm (BatchNorm, GroupNorm, InstanceNorm) and output
  ``(N, C, h, w)`` with ``h * w > 1``;
* token grids: normalisation layers that output ``(N, L, D)`` where ``L`` minus
  the prefix tokens (class / distillation / register tokens) is a square grid
  of at least 4 patches. They get a :class:`TokenGrid` ``reshape_transform``.
  The prefix count is read from the model where it says (timm's
  ``num_prefix_tokens``, torchvision's ``class_token``, Hugging Face's
  ``cls_token`` / ``distillation_token`` / ``register_tokens``);
* channels-last maps: ``nn.LayerNorm`` layers that output ``(N, h, w, C)``
  (timm's Swin, ConvNeXt blocks), with a :class:`ChannelsLast` reshape.

Modules called more than once per forward pass (a shared ``ReLU``) are
skipped: hooks on them see several tensors. The candidate finishing last in
the forward pass wins (the last block that keeps spatial dims). Among token
grids, the last one whose patch tokens receive a non-zero gradient from the
target wins: a ViT reads only the class token after its last attention, so its
final norm would give all-zero maps; this picks the last block's first norm,
as pytorch-grad-cam's ViT tutorial does.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xai_bridge import progress
from xai_bridge.errors import ParameterError

from ._layer_reshapes import ChannelsLast, TokenGrid
from ._layer_trace import (
    LayerInfo,
    is_channels_last,
    is_spatial,
    layer_candidates,
    model_prefix_tokens,
    token_grid,
    trace_layers,
)

__all__ = [
    "ChannelsLast",
    "LayerInfo",
    "TargetLayer",
    "TokenGrid",
    "choose_layer",
    "layer_candidates",
    "trace_layers",
]


@dataclass(frozen=True)
class TargetLayer:
    """The layer a CAM method hooks, with the reshape that makes its output a map.

    Attributes:
        name: dotted name inside the user's module.
        module: the submodule.
        shape: its raw output shape for one image.
        reshape_transform: None for ``(N, C, h, w)`` outputs, else a callable
            mapping the output to ``(N, C, h, w)``.
        calls: how often it runs in one forward pass.
    """

    name: str
    module: nn.Module = field(repr=False, compare=False)
    shape: tuple[int, ...]
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    calls: int = 1

    def describe(self) -> dict[str, Any]:
        """The effective ``layer`` / ``reshape_transform`` params (JSON-able)."""
        return {"layer": self.name, "reshape_transform": self.reshape_transform}


def _spatial_reshape(info: LayerInfo) -> ChannelsLast | None:
    return ChannelsLast() if is_channels_last(info) else None


def _patch_gradient_flags(
    net: nn.Module, x: torch.Tensor, target: int, layers: Sequence[tuple[LayerInfo, TokenGrid]]
) -> list[bool]:
    """Whether the target's gradient reaches the patch tokens of each token layer."""
    outputs: dict[int, torch.Tensor] = {}
    handles = [
        info.module.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out))
        for k, (info, _) in enumerate(layers)
    ]
    try:
        with torch.enable_grad():
            score = net(x.detach().clone().requires_grad_(True))[:, target].sum()
            # layers the pixels never reach (e.g. a text tower's embeddings of a fixed prompt) carry no gradient
            keys = sorted(k for k, out in outputs.items() if isinstance(out, torch.Tensor) and out.requires_grad)
            grads = torch.autograd.grad(score, [outputs[k] for k in keys], allow_unused=True) if keys else ()
    finally:
        for handle in handles:
            handle.remove()
    flags = [False] * len(layers)
    for k, grad in zip(keys, grads, strict=False):
        prefix = layers[k][1].prefix_tokens
        flags[k] = grad is not None and bool(grad[:, prefix:].abs().sum() > 0)
    return flags


def _listing(candidates: Sequence[LayerInfo], limit: int = 12) -> str:
    shown = [f"{c.name!r} {c.shape}" for c in candidates[::-1][:limit]]
    more = f" (+{len(candidates) - limit} more)" if len(candidates) > limit else ""
    return ", ".join(shown) + more if shown else "none"


def choose_layer(
    module: nn.Module,
    net: nn.Module,
    x: torch.Tensor,
    target: int,
    layer: nn.Module | str | None = None,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    memo: dict[Any, Any] | None = None,
) -> TargetLayer:
    """Resolve the ``layer`` / ``reshape_transform`` params of a CAM method.

    The choice depends only on the module's structure and the input size, so
    with ``memo`` (the model wrapper's cache) the tracing forward pass runs
    once per layer and input size; a cached choice is used only while the
    module still holds that submodule under that name. An automatic token-grid
    choice depends on the target and is not cached.

    Args:
        module: the user's module.
        net: the pixel module wrapping it.
        x: the first image as a pixel tensor ``(1, 3, H, W)``.
        target: the first target (for the token-grid gradient check).
        layer: None (automatic), a submodule of ``module`` or its dotted name.
        reshape_transform: None (automatic for token grids) or a callable
            mapping the layer output to ``(N, C, h, w)``.
        memo: optional cache dict (see above).

    Returns:
        The :class:`TargetLayer`.

    Raises:
        ValueError: unknown layer, a layer without spatial dims, or no candidate.
        TypeError: ``layer`` or ``reshape_transform`` of the wrong type.
    """
    if reshape_transform is not None and not callable(reshape_transform):
        raise ParameterError(f"reshape_transform: expected a callable or None, got {type(reshape_transform).__name__}")
    if not isinstance(memo, dict) or not (layer is None or isinstance(layer, (str, nn.Module))):
        return _choose(module, net, x, target, layer, reshape_transform)
    key = (
        "cam-layer",
        layer if not isinstance(layer, nn.Module) else id(layer),
        None if reshape_transform is None else id(reshape_transform),
        tuple(x.shape[1:]),
    )
    hit = memo.get(key)
    if (
        isinstance(hit, TargetLayer)
        and hit.reshape_transform is (reshape_transform or hit.reshape_transform)
        and (layer is None or layer is hit.module or layer == hit.name)
        and _holds(module, hit)
    ):
        return hit
    chosen = _choose(module, net, x, target, layer, reshape_transform)
    if not (layer is None and isinstance(chosen.reshape_transform, TokenGrid)):
        memo[key] = chosen
    return chosen


def _holds(module: nn.Module, chosen: TargetLayer) -> bool:
    try:
        return module.get_submodule(chosen.name) is chosen.module
    except AttributeError:
        return False


def _choose(
    module: nn.Module,
    net: nn.Module,
    x: torch.Tensor,
    target: int,
    layer: nn.Module | str | None,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> TargetLayer:
    infos, _ = trace_layers(module, net, x)
    progress.add_to_total(int(x.shape[0]))  # the tracing pass, once per model and input size
    prefix = model_prefix_tokens(module)
    candidates = layer_candidates(infos, prefix)
    if layer is None:
        return _automatic(net, x, target, infos, candidates, prefix, reshape_transform)
    info = _find(module, layer, infos, candidates)
    if reshape_transform is not None:
        probe = reshape_transform(torch.zeros(info.shape)) if info.shape else None
        if probe is None or probe.ndim != 4:
            got = "no tensor" if probe is None else tuple(probe.shape)
            raise ParameterError(
                f"reshape_transform: must map the output of {info.name!r} {info.shape} to (N, C, h, w), got {got}"
            )
        return TargetLayer(info.name, info.module, info.shape, reshape_transform, info.calls)
    if is_channels_last(info):
        return TargetLayer(info.name, info.module, info.shape, ChannelsLast(), info.calls)
    if len(info.shape) == 4 and info.shape[2] * info.shape[3] > 1:
        return TargetLayer(info.name, info.module, info.shape, None, info.calls)
    grid = TokenGrid.infer(info.shape[1], prefix) if len(info.shape) == 3 else None
    if grid is not None:
        return TargetLayer(info.name, info.module, info.shape, grid, info.calls)
    raise ParameterError(
        f"layer: {info.name!r} outputs shape {info.shape or 'no tensor'}, which has no spatial dims; CAM methods "
        f"need a layer that outputs (N, C, h, w) or a square token grid (N, tokens, D), or pass "
        f"reshape_transform=. Candidates (last first): {_listing(candidates)}"
    )


def _automatic(
    net: nn.Module,
    x: torch.Tensor,
    target: int,
    infos: Sequence[LayerInfo],
    candidates: Sequence[LayerInfo],
    prefix: int | None,
    reshape_transform: Callable[[torch.Tensor], torch.Tensor] | None,
) -> TargetLayer:
    if not candidates:
        raise ParameterError(
            "layer: found no layer that outputs (N, C, h, w) with h * w > 1 or a square token grid; pass "
            f"layer=<name> (and reshape_transform= for other layouts). Layers (last first): {_listing(list(infos))}"
        )
    spatial = [c for c in candidates if is_spatial(c)]
    tokens = [(c, grid) for c in candidates if not is_spatial(c) and (grid := token_grid(c, prefix)) is not None]
    if tokens and (not spatial or tokens[-1][0].order > spatial[-1].order):
        flags = _patch_gradient_flags(net, x, target, tokens)
        live = [pair for pair, flag in zip(tokens, flags, strict=False) if flag]
        info, grid = (live or tokens)[-1]
        return TargetLayer(info.name, info.module, info.shape, reshape_transform or grid, info.calls)
    info = spatial[-1]
    return TargetLayer(info.name, info.module, info.shape, reshape_transform or _spatial_reshape(info), info.calls)


def _find(
    module: nn.Module, layer: nn.Module | str, infos: Sequence[LayerInfo], candidates: Sequence[LayerInfo]
) -> LayerInfo:
    by_name = {i.name: i for i in infos}
    if isinstance(layer, str):
        if layer in by_name:
            return by_name[layer]
        names = dict(module.named_modules())
        if layer in names and layer:
            raise ParameterError(
                f"layer: {layer!r} did not run in the forward pass; candidates (last first): {_listing(candidates)}"
            )
        close = difflib.get_close_matches(layer, [n for n in names if n], n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ParameterError(
            f"layer: no submodule named {layer!r}.{hint} Candidates (last first): {_listing(candidates)}"
        )
    if isinstance(layer, nn.Module):
        for info in infos:
            if info.module is layer:
                return info
        inside = any(m is layer for m in module.modules())
        why = "did not run in the forward pass" if inside else "is not part of the model"
        raise ParameterError(
            f"layer: the {type(layer).__name__} given {why}; pass a submodule of model.module or its "
            f"dotted name. Candidates (last first): {_listing(candidates)}"
        )
    raise ParameterError(f"layer: expected None, a submodule or its dotted name, got {type(layer).__name__}")
