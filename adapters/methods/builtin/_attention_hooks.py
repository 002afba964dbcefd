"""Where transformer-native methods look: attention modules, their probabilities, the patch grid.

Shared by the methods of :mod:`~xai_bridge.adapters.methods.attention`. Three
kinds of attention module are recognised, covering timm, torchvision,
open_clip and Hugging Face vision transformers:

* ``timm``: a module with a ``fused_attn`` flag and an ``attn_drop`` dropout
  child (timm's ``Attention`` in ViT, DeiT, BEiT, EVA, Swin...). The flag is
  switched off for the run, so timm computes ``softmax(q k^T / sqrt(d))``
  itself, and the probabilities are the output of ``attn_drop``: the tensor
  that multiplies the values.
* ``mha``: :class:`torch.nn.MultiheadAttention` (torchvision's ViT,
  open_clip). It is asked for per-head weights (``need_weights=True,
  average_attn_weights=False``); when gradients are recorded, the output is
  replayed from those weights, as torchcam's ``LeGrad`` does, so that the
  captured tensor is the one the rest of the model depends on.
* ``hf``: a Hugging Face attention module (``config._attn_implementation``,
  returning ``(output, weights)``). The config is switched to the eager
  implementation for the run, whose weights are the tensor that multiplies
  the values.

Every change is undone in ``finally``: flags and configs are restored and the
hooks removed, so the user's module ends exactly as it was (the model guard
removes the hooks as well).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from xai_bridge.errors import MethodNotApplicableError, ParameterError

__all__ = [
    "AttentionRecorder",
    "AttentionSite",
    "PatchGrid",
    "attention_kind",
    "find_sites",
    "model_sites",
    "recording",
    "select",
]

#: Prefix tokens (class, distillation, register tokens) accepted before the patch grid.
_MAX_PREFIX_TOKENS = 16
_NOT_APPLICABLE = "needs a transformer with attention modules"


@dataclass(frozen=True)
class AttentionSite:
    """One attention module of the model and the transformer block holding it.

    Attributes:
        name: dotted name of the attention module inside the user's module.
        module: the attention module.
        kind: ``"timm"``, ``"mha"`` or ``"hf"`` (see the module docstring).
        block: dotted name of the block (the residual-stream layer) holding it.
        block_module: the block.
    """

    name: str
    module: nn.Module = field(repr=False, compare=False)
    kind: str
    block: str
    block_module: nn.Module = field(repr=False, compare=False)


@dataclass(frozen=True)
class PatchGrid:
    """How the ``N`` attention tokens lay out: ``prefix`` tokens, then ``height x width`` patches row by row."""

    prefix: int
    height: int
    width: int


def attention_kind(module: nn.Module) -> str | None:
    """``"timm"``, ``"mha"``, ``"hf"`` or None: which kind of attention module ``module`` is."""
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if isinstance(getattr(module, "fused_attn", None), bool) and isinstance(
        getattr(module, "attn_drop", None), nn.Dropout
    ):
        return "timm"
    config = getattr(module, "config", None)
    if "Attention" in type(module).__name__ and hasattr(config, "_attn_implementation_internal"):
        return "hf"
    return None


class AttentionRecorder:
    """Records, for each forward pass, the attention probabilities ``(B, heads, N, N)`` of the given sites.

    Use it through :func:`recording`. ``attentions`` holds one tensor per site
    (in site order) from the last forward pass; ``blocks`` the output tokens
    ``(B, N, D)`` of each site's block when ``blocks=True``.
    """

    def __init__(self, sites: Sequence[AttentionSite], blocks: bool = False) -> None:
        self.sites = list(sites)
        self.attentions: list[torch.Tensor | None] = [None] * len(self.sites)
        self.blocks: list[torch.Tensor | None] = [None] * len(self.sites) if blocks else []
        self.calls = [0] * len(self.sites)

    def reset(self) -> None:
        """Forget what the last forward pass recorded."""
        self.attentions = [None] * len(self.sites)
        self.blocks = [None] * len(self.blocks)
        self.calls = [0] * len(self.sites)

    def _store(self, k: int, weights: Any) -> None:
        if isinstance(weights, torch.Tensor) and weights.ndim == 4:
            self.attentions[k] = weights
            self.calls[k] += 1

    def hooks(self, k: int) -> list[Any]:
        """Register the hooks of site ``k``; returns their handles."""
        site = self.sites[k]
        if site.kind == "timm":
            drop: Any = site.module.attn_drop
            handles = [drop.register_forward_hook(lambda _m, _i, out: self._store(k, out))]
        elif site.kind == "mha":
            handles = [
                site.module.register_forward_pre_hook(_ask_weights, with_kwargs=True),
                site.module.register_forward_hook(lambda m, i, kw, out: self._mha(k, m, i, kw, out), with_kwargs=True),
            ]
        else:
            handles = [site.module.register_forward_hook(lambda _m, _i, out: self._store(k, _second(out)))]
        if self.blocks:
            handles.append(site.block_module.register_forward_hook(lambda _m, _i, out: self._block(k, out)))
        return handles

    def _block(self, k: int, out: Any) -> None:
        tokens = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(tokens, torch.Tensor):
            self.blocks[k] = tokens

    def _mha(self, k: int, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        weights = _second(out)
        self._store(k, weights)
        if not (torch.is_grad_enabled() and isinstance(weights, torch.Tensor)):
            return None
        return _replay(module, args, kwargs, weights), weights


def _second(out: Any) -> Any:
    return out[1] if isinstance(out, (tuple, list)) and len(out) > 1 else None


def _ask_weights(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Pre-hook: call ``nn.MultiheadAttention`` with ``need_weights=True, average_attn_weights=False``."""
    args, kwargs = tuple(args[:4]), dict(kwargs)
    kwargs.update(need_weights=True, average_attn_weights=False)
    return args, kwargs


def _replay(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], weights: torch.Tensor) -> torch.Tensor:
    """The attention output recomputed from ``weights``: ``out_proj(weights @ V)``, in the module's layout."""
    value = args[2] if len(args) > 2 else kwargs["value"]
    if not module.batch_first:
        value = value.transpose(0, 1)
    batch, length, dim = value.shape
    if module.in_proj_weight is not None:
        weight, bias = module.in_proj_weight[2 * dim :], module.in_proj_bias
    else:
        weight, bias = module.v_proj_weight, module.in_proj_bias
    v = F.linear(value, weight, None if bias is None else bias[2 * dim :])
    v = v.reshape(batch, length, module.num_heads, dim // module.num_heads).transpose(1, 2)
    out = module.out_proj(torch.matmul(weights, v).transpose(1, 2).reshape(batch, weights.shape[-2], dim))
    return out if module.batch_first else out.transpose(0, 1)


@contextmanager
def recording(sites: Sequence[AttentionSite], blocks: bool = False) -> Iterator[AttentionRecorder]:
    """Context manager: an :class:`AttentionRecorder` on ``sites``; every change undone on exit.

    timm's ``fused_attn`` flags and Hugging Face configs' attention
    implementation are switched for the block and restored in ``finally``.
    """
    recorder = AttentionRecorder(sites, blocks)
    flags = [(s.module.__dict__, s.module.__dict__.get("fused_attn")) for s in sites if s.kind == "timm"]
    hf_configs: list[Any] = [s.module.config for s in sites if s.kind == "hf"]
    configs = {id(c): (c, c._attn_implementation_internal) for c in hf_configs}
    handles: list[Any] = []
    try:
        for state, _ in flags:  # plain attributes: written through __dict__, as the model guard does
            state["fused_attn"] = False
        for config, _ in configs.values():
            config._attn_implementation_internal = "eager"
        for k in range(len(sites)):
            handles.extend(recorder.hooks(k))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
        for state, flag in flags:
            if flag is None:
                state.pop("fused_attn", None)
            else:
                state["fused_attn"] = flag
        for config, implementation in configs.values():
            config._attn_implementation_internal = implementation


def _block_of(name: str, modules: dict[str, nn.Module]) -> str:
    """The deepest ancestor of ``name`` held in a ``ModuleList`` / ``Sequential``: the transformer block."""
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        parent = modules.get(".".join(parts[: cut - 1]))
        if isinstance(parent, (nn.ModuleList, nn.Sequential)):
            return ".".join(parts[:cut])
    return name


def find_sites(
    module: nn.Module, net: nn.Module, x: torch.Tensor, method: str
) -> tuple[list[AttentionSite], PatchGrid]:
    """Every attention module that attends over the image's tokens, in forward order, and their token grid.

    One forward pass of ``x`` (no grad) with every candidate recorded; kept
    are the innermost candidates that ran once and returned ``(B, heads, N, N)``
    self-attention probabilities (SigLIP's pooling head attends from one
    probe token: left out). Raises :class:`MethodNotApplicableError` for a model
    without any, and for windowed attention (Swin), whose ``N`` is a window.
    """
    modules = dict(module.named_modules())
    candidates = [
        AttentionSite(name, m, kind, block := _block_of(name, modules), modules[block])
        for name, m in modules.items()
        if name and (kind := attention_kind(m)) is not None
    ]
    order: list[int] = []
    convs: list[tuple[int, ...]] = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: convs.append(tuple(out.shape[-2:])))
        for m in module.modules()
        if isinstance(m, nn.Conv2d) and m.kernel_size == m.stride and max(m.kernel_size) > 1
    ]
    handles += [s.module.register_forward_hook(lambda *_a, k=k: order.append(k)) for k, s in enumerate(candidates)]
    try:
        with recording(candidates) as recorder, torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    ran = {k for k in order if recorder.calls[k] == 1 and order.count(k) == 1 and _is_self_attention(recorder, k)}
    ran = {k for k in ran if not any(j != k and candidates[j].name.startswith(candidates[k].name + ".") for j in ran)}
    sites = [candidates[k] for k in sorted(ran, key=order.index)]
    if not sites:
        raise MethodNotApplicableError(
            f"model: {method} {_NOT_APPLICABLE}; got {type(module).__name__}, where none ran; use gradcam.GradCAM"
        )
    shapes = {tuple(recorder.attentions[candidates.index(s)].shape[-2:]) for s in sites}  # type: ignore[union-attr]
    return sites, _patch_grid(method, module, shapes, convs)


def model_sites(model: Any, net: nn.Module, x: torch.Tensor, method: str) -> tuple[list[AttentionSite], PatchGrid]:
    """:func:`find_sites` for a model wrapper, cached in ``model.memo`` per input size.

    The sites depend only on the module's structure and the input size, so
    the tracing forward pass runs once, as for a CAM's layer; a cached answer
    is used only while the module still holds every site under its name.
    """
    memo = getattr(model, "memo", None)
    key = ("attention-sites", tuple(x.shape[1:]))
    hit = memo.get(key) if isinstance(memo, dict) else None
    if hit is not None and all(_holds(model.module, site) for site in hit[0]):
        return hit  # type: ignore[no-any-return]
    found = find_sites(model.module, net, x, method)
    if isinstance(memo, dict):
        memo[key] = found
    return found


def _holds(module: nn.Module, site: AttentionSite) -> bool:
    try:
        return module.get_submodule(site.name) is site.module and module.get_submodule(site.block) is site.block_module
    except AttributeError:
        return False


def _is_self_attention(recorder: AttentionRecorder, k: int) -> bool:
    """Whether site ``k`` returned square ``(B, heads, N, N)`` probabilities (not a pooling head's cross-attention)."""
    weights = recorder.attentions[k]
    return weights is not None and weights.shape[-1] == weights.shape[-2]


def _patch_grid(
    method: str, module: nn.Module, shapes: set[tuple[int, ...]], convs: list[tuple[int, ...]]
) -> PatchGrid:
    """The token layout from the patch embedding's output grid (else the smallest prefix leaving a square)."""
    tokens = {n for shape in shapes for n in shape}
    if len(tokens) != 1:
        raise MethodNotApplicableError(
            f"model: {method} needs attention over one token sequence; {type(module).__name__} attends over "
            f"{sorted(tokens)} tokens in different layers (windowed or pooled attention, as in Swin); use "
            "gradcam.GradCAM"
        )
    (n,) = tokens
    if convs:
        h, w = convs[0]
        if 0 <= n - h * w <= _MAX_PREFIX_TOKENS:
            return PatchGrid(n - h * w, h, w)
        raise MethodNotApplicableError(
            f"model: {method} needs attention over all {h}x{w} patches; {type(module).__name__} attends over "
            f"{n} tokens at a time (windowed attention, as in Swin); use gradcam.GradCAM"
        )
    for prefix in range(_MAX_PREFIX_TOKENS + 1):
        side = math.isqrt(max(n - prefix, 0))
        if side >= 2 and side * side == n - prefix:
            return PatchGrid(prefix, side, side)
    raise MethodNotApplicableError(
        f"model: {method} found no patch grid in {n} attention tokens; pass a model with a convolutional patch "
        "embedding or a square grid"
    )


def select(sites: Sequence[AttentionSite], layer: Any) -> list[AttentionSite]:
    """The sites named by ``layer=``: None (all), or a module / dotted name (attention module or block), or a list."""
    if layer is None:
        return list(sites)
    entries = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    if not entries:
        raise ParameterError(
            "layer: expected at least one attention module or block, got an empty list; pass None for all"
        )
    chosen: list[AttentionSite] = []
    for entry in entries:
        if isinstance(entry, str):
            found = [s for s in sites if entry in (s.name, s.block)]
        elif isinstance(entry, nn.Module):
            found = [s for s in sites if entry is s.module or entry is s.block_module]
        else:
            raise ParameterError(f"layer: expected None, a module, a dotted name or a list of them, got {entry!r}")
        if len(found) != 1:
            names = ", ".join(repr(s.name) for s in sites[:12])
            raise ParameterError(
                f"layer: expected an attention module or transformer block of the model, got {entry!r}; "
                f"attention modules: {names}"
            )
        chosen.extend(s for s in found if s not in chosen)
    return sorted(chosen, key=list(sites).index)
