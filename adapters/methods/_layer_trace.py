"""What one traced forward pass says about each submodule: its output shape and calls, and its layout.

:func:`trace_layers` records every submodule's output in one forward pass; the
predicates below read a record as a spatial map, a channels-last map or a
square token grid, and :func:`layer_candidates` keeps the layers an automatic
CAM layer choice may pick (the rules: :mod:`._layers`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._layer_reshapes import TokenGrid

__all__ = [
    "LayerInfo",
    "is_channels_last",
    "is_spatial",
    "layer_candidates",
    "model_prefix_tokens",
    "token_grid",
    "trace_layers",
]

_CONV_LIKE = (
    nn.Conv2d,
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)


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


def is_spatial(info: LayerInfo) -> bool:
    shape = info.shape
    if is_channels_last(info):
        return shape[1] * shape[2] > 1
    # ``spatial_layer``: a stand-in for a feature map of a non-torch model (adapters/models/keras.py)
    return (
        len(shape) == 4
        and shape[2] * shape[3] > 1
        and any(isinstance(m, _CONV_LIKE) or getattr(m, "spatial_layer", False) is True for m in info.module.modules())
    )


def is_channels_last(info: LayerInfo) -> bool:
    """A plain ``nn.LayerNorm`` (it normalises the last axis: channels) with a 4-D output."""
    module = info.module
    return (
        len(info.shape) == 4
        and isinstance(module, nn.LayerNorm)
        and type(module).forward is nn.LayerNorm.forward  # LayerNorm2d & co. permute: channels first
        and tuple(module.normalized_shape) == info.shape[-1:]
    )


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "Norm" in type(module).__name__


def token_grid(info: LayerInfo, prefix_tokens: int | None) -> TokenGrid | None:
    if len(info.shape) != 3 or not _is_norm(info.module):
        return None
    return TokenGrid.infer(info.shape[1], prefix_tokens)


def model_prefix_tokens(module: nn.Module) -> int | None:
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
    return [i for i in infos if i.calls == 1 and (is_spatial(i) or token_grid(i, prefix_tokens) is not None)]
