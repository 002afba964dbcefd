"""Where CAM methods look: target-layer choice, token-grid reshaping, module-tree safety.

Shared by the pytorch-grad-cam and torchcam backends. Layer names are dotted
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
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from xai_bridge import progress
from xai_bridge.errors import ParameterError

__all__ = [
    "ChannelsLast",
    "LayerInfo",
    "TargetLayer",
    "TokenGrid",
    "choose_layer",
    "layer_candidates",
    "trace_layers",
]

#: Prefix tokens tried when the model does not say how many it has.
_MAX_PREFIX_TOKENS = 8
_CONV_LIKE = (
    nn.Conv2d,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True)
class TokenGrid:
    """``reshape_transform`` for token outputs: ``(N, prefix + h * w, D)`` -> ``(N, D, h, w)``.

    Drops the prefix tokens (class token, ...) and lays the patch tokens out
    row by row, like pytorch-grad-cam's ``vit_reshape_transform``.

    Attributes:
        prefix_tokens: tokens before the patch grid.
        height: grid rows.
        width: grid columns.
    """

    prefix_tokens: int
    height: int
    width: int

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """Reshape ``(N, L, D)`` tokens into a ``(N, D, h, w)`` map."""
        if tensor.ndim != 3 or tensor.shape[1] != self.prefix_tokens + self.height * self.width:
            raise ParameterError(
                f"reshape_transform: expected tokens of shape (N, {self.prefix_tokens + self.height * self.width}, D), "
                f"got {tuple(tensor.shape)}"
            )
        grid = tensor[:, self.prefix_tokens :, :].reshape(tensor.shape[0], self.height, self.width, tensor.shape[2])
        return grid.permute(0, 3, 1, 2)

    @classmethod
    def infer(cls, n_tokens: int, prefix_tokens: int | None = None) -> TokenGrid | None:
        """The square grid of ``n_tokens`` tokens, or None when there is none.

        Args:
            n_tokens: ``L``, tokens per image.
            prefix_tokens: known prefix count (e.g. timm's ``num_prefix_tokens``);
                by default the smallest count in 0..8 leaving a square grid.
        """
        tries = [prefix_tokens] if prefix_tokens is not None else range(_MAX_PREFIX_TOKENS + 1)
        for prefix in tries:
            side = math.isqrt(max(n_tokens - prefix, 0))
            if side >= 2 and side * side == n_tokens - prefix:
                return cls(int(prefix), side, side)
        return None


@dataclass(frozen=True)
class ChannelsLast:
    """``reshape_transform`` for channels-last maps: ``(N, h, w, C)`` -> ``(N, C, h, w)``."""

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        """Move the channel axis of an ``(N, h, w, C)`` map to position 1."""
        if tensor.ndim != 4:
            raise ParameterError(
                f"reshape_transform: expected a channels-last map (N, h, w, C), got {tuple(tensor.shape)}"
            )
        return tensor.permute(0, 3, 1, 2)


@dataclass(frozen=True)
class LayerInfo:
    """One submodule seen in a traced forward pass.

    Attributes:
        name: dotted name inside the user's module.
        module: the submodule.
        shape: its output shape for one image (``()`` when not a tensor).
        calls: how often it ran in one forward pass.
        order: position in the order modules finished.
    """

    name: str
    module: nn.Module = field(repr=False, compare=False)
    shape: tuple[int, ...]
    calls: int
    order: int


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


def trace_layers(module: nn.Module, net: nn.Module, x: torch.Tensor) -> tuple[list[LayerInfo], tuple[int, ...]]:
    """Run ``net(x)`` once (no grad) and record every submodule of ``module``.

    Args:
        module: the user's module (names are relative to it).
        net: the module to run (the pixel module wrapping ``module``).
        x: one input batch.

    Returns:
        ``(layers in the order they finished, shape of net's output)``.
    """
    seen: dict[int, list[Any]] = {}
    counter = iter(range(1 << 62))
    handles = []

    def record(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            entry = seen.setdefault(id(mod), [name, mod, shape, 0, 0])
            entry[2], entry[3], entry[4] = shape, entry[3] + 1, next(counter)

        return hook

    try:
        for name, mod in module.named_modules():
            if name:
                handles.append(mod.register_forward_hook(record(name)))
        with torch.no_grad():
            out = net(x)
    finally:
        for handle in handles:
            handle.remove()
    infos = sorted((LayerInfo(n, m, s, c, o) for n, m, s, c, o in seen.values()), key=lambda i: i.order)
    return infos, tuple(out.shape) if isinstance(out, torch.Tensor) else ()


def _is_spatial(info: LayerInfo) -> bool:
    shape = info.shape
    if _is_channels_last(info):
        return shape[1] * shape[2] > 1
    # ``spatial_layer``: a stand-in for a feature map of a non-torch model (adapters/models/keras.py)
    return (
        len(shape) == 4
        and shape[2] * shape[3] > 1
        and any(isinstance(m, _CONV_LIKE) or getattr(m, "spatial_layer", False) is True for m in info.module.modules())
    )


def _is_channels_last(info: LayerInfo) -> bool:
    """A plain ``nn.LayerNorm`` (it normalises the last axis: channels) with a 4-D output."""
    module = info.module
    return (
        len(info.shape) == 4
        and isinstance(module, nn.LayerNorm)
        and type(module).forward is nn.LayerNorm.forward  # LayerNorm2d & co. permute: channels first
        and tuple(module.normalized_shape) == info.shape[-1:]
    )


def _spatial_reshape(info: LayerInfo) -> ChannelsLast | None:
    return ChannelsLast() if _is_channels_last(info) else None


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "Norm" in type(module).__name__


def _token_grid(info: LayerInfo, prefix_tokens: int | None) -> TokenGrid | None:
    if len(info.shape) != 3 or not _is_norm(info.module):
        return None
    return TokenGrid.infer(info.shape[1], prefix_tokens)


def _prefix_tokens(module: nn.Module) -> int | None:
    value = getattr(module, "num_prefix_tokens", None)  # timm
    if isinstance(value, int):
        return value
    if isinstance(getattr(module, "class_token", None), torch.Tensor):  # torchvision ViT
        return 1
    for sub in module.modules():  # Hugging Face ViT / DeiT / Dinov2: tokens live on the embeddings
        if isinstance(getattr(sub, "cls_token", None), torch.Tensor):
            registers = getattr(sub, "register_tokens", None)
            return (
                1
                + isinstance(getattr(sub, "distillation_token", None), torch.Tensor)
                + (int(registers.shape[1]) if isinstance(registers, torch.Tensor) and registers.ndim == 3 else 0)
            )
    return None


def layer_candidates(infos: Sequence[LayerInfo], prefix_tokens: int | None = None) -> list[LayerInfo]:
    """Layers an automatic choice may pick, in forward order (see the module docstring)."""
    return [i for i in infos if i.calls == 1 and (_is_spatial(i) or _token_grid(i, prefix_tokens) is not None)]


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
    prefix = _prefix_tokens(module)
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
    if _is_channels_last(info):
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
    spatial = [c for c in candidates if _is_spatial(c)]
    tokens = [(c, grid) for c in candidates if not _is_spatial(c) and (grid := _token_grid(c, prefix)) is not None]
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
