"""Transformer-native maps on any vision transformer: attention rollout, LeGrad, gradient-weighted attention.

The attention modules are found from the model (timm, torchvision, open_clip
and Hugging Face ViTs, CLIP / SigLIP vision towers through ``ZeroShotModel``;
see :mod:`~xai_bridge.adapters.methods._attention_hooks`), their
probabilities ``A_l`` ``(B, heads, N, N)`` are captured in one forward pass,
and every method reads the row of the class token (token 0; the mean of all
rows for a model without prefix tokens) over the patch keys: prefix tokens
(class, distillation, register tokens) are dropped, the patches laid out on
the grid of the patch embedding and the map upsampled to the image like CAMs
(bilinear, ``align_corners=False``). Maps are raw and non-negative.

``layer=`` chooses the attention layers (attention modules or their blocks,
as modules or dotted names; default: every one that attends over the image's
tokens). Windowed attention (Swin) has no token-to-token map of the whole
image: those models are refused with a one-line error.

What comes from a library: ``builtin.LeGrad`` on a torchvision
``VisionTransformer`` runs torchcam's ``LeGrad`` (torchcam >= 0.5) when it is
installed; everything else here is written for xai-bridge, as no library
offers it for other models.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.registry import MethodSpec

if TYPE_CHECKING:
    import torch

    from ._attention_hooks import AttentionRecorder, AttentionSite, PatchGrid

__all__ = ["SPECS", "attention_rollout", "generic_attention", "legrad"]


@dataclass(frozen=True)
class _Batch:
    """What a method's batch function gets.

    Attributes:
        net: the pixel module.
        x: pixels ``(B, 3, H, W)``.
        idx: targets ``(B, T)`` on the model's device.
        recorder: the attention recorder (recording nothing when the run does not record).
        sites: every attention site of the model, in forward order.
        chosen: indices into ``sites`` of the layers ``layer=`` chose.
        grid: the token layout.
        stack: the run's exit stack (for context managers living across batches).
    """

    net: Any
    x: torch.Tensor
    idx: torch.Tensor
    recorder: AttentionRecorder
    sites: list[AttentionSite]
    chosen: list[int]
    grid: PatchGrid
    stack: ExitStack


#: One batch's maps at token-grid resolution ``(B, T, h, w)``.
_BatchMaps = Callable[[_Batch], "torch.Tensor"]

_FUSIONS = ("mean", "max", "min")


def _torch_model(request: ExplainRequest) -> Any:
    """The request's torch model, or a one-line error naming what to pass."""
    model = request.model
    if not hasattr(model, "pixel_module"):
        raise MethodNotApplicableError(
            f"model: {request.method} needs a torch transformer, got {type(model).__name__}; wrap the module with "
            "TorchModel(module, preprocess=...) or ZeroShotModel"
        )
    return model


def _run(
    request: ExplainRequest, layer: Any, batch_maps: _BatchMaps, blocks: bool = False, record: bool = True
) -> tuple[np.ndarray, int]:
    """Find the attention sites, run ``batch_maps`` on every batch; ``(maps (N, T, H, W), forward images)``.

    ``record=False`` leaves the attention modules alone (a library hooks them itself).
    """
    import torch
    import torch.nn.functional as F
    from xai_bridge.adapters._torch import enter_run

    from .._layer_run import check_outputs, crop_aligned
    from ._attention_hooks import model_sites, recording, select

    model = _torch_model(request)
    images, targets = request.images, request.targets
    net = model.pixel_module()
    maps = np.zeros((*targets.shape, *images.shape[1:3]), np.float32)
    with ExitStack() as stack:
        stack.enter_context(model.guard(freeze_params=True))
        counter = enter_run(stack, model, net)
        x0 = model.pixel_tensor(images[:1])
        sites, grid = model_sites(model, net, x0, request.method)
        chosen = select(sites, layer)
        check_outputs(net, x0, targets, request.n_outputs)
        recorder = stack.enter_context(recording(sites if record else [], blocks=blocks))
        chosen_idx = [sites.index(s) for s in chosen]
        for start in range(0, len(images), model.batch_size):
            x = model.pixel_tensor(images[start : start + model.batch_size])
            idx = torch.as_tensor(targets[start : start + len(x)], device=model.device)
            recorder.reset()
            small = batch_maps(_Batch(net, x, idx, recorder, sites, chosen_idx, grid, stack)).detach().float()
            up = F.interpolate(small, size=images.shape[1:3], mode="bilinear", align_corners=False)
            maps[start : start + len(x)] = up.cpu().numpy()
    return crop_aligned(maps, getattr(model, "preprocess", None)), counter.count


def _patch_row(relevance: torch.Tensor, grid: PatchGrid) -> torch.Tensor:
    """``(B, N, N)`` token relevance -> ``(B, h, w)``: the class token's row (mean row without one) over patches."""
    row = relevance[:, 0] if grid.prefix else relevance.mean(dim=1)
    return row[:, grid.prefix :].reshape(len(relevance), grid.height, grid.width)


def _done(params: dict[str, Any], maps: np.ndarray, evals: int, version: str = "") -> BackendResult:
    import torch

    return BackendResult(
        attributions=maps,
        params={**params, "layer": _layer_names(params["layer"])},
        backend_version=version or torch.__version__,
        n_model_evals=evals,
    )


def _layer_names(layer: Any) -> Any:
    """``layer=`` as recorded (JSON-able): names stay, modules become their class names."""
    if isinstance(layer, (list, tuple)):
        return [_layer_names(entry) for entry in layer]
    return layer if layer is None or isinstance(layer, str) else type(layer).__name__


def attention_rollout(request: ExplainRequest) -> BackendResult:
    """Attention rollout (Abnar & Zuidema 2020, https://arxiv.org/abs/2005.00928).

    ``R = prod_l norm(A_l + I)`` over the layers, last layer leftmost, with
    ``A_l`` fused over heads and ``norm`` making rows sum to 1 (``(A_l + I) / 2``
    for the mean over heads); the map is the class token's row of ``R`` over
    the patches. Target-independent: every target gets the same map, whose
    values are the fractions of the class token's attention flowing from each
    patch (they sum to at most 1).

    Params:
        layer: attention layers to roll out (default: all, see the module docstring).
        head_fusion: ``"mean"`` (default, the paper's), ``"max"`` or ``"min"`` over heads.

    Example:
        >>> exp = xb.explain(vit_model, images, "builtin.AttentionRollout")
    """
    params = check_params(request.method, request.params, {"layer": None, "head_fusion": "mean"})
    if params["head_fusion"] not in _FUSIONS:
        raise ParameterError(f"head_fusion: expected one of {list(_FUSIONS)}, got {params['head_fusion']!r}")
    fusion = params["head_fusion"]

    def batch_maps(run: _Batch) -> torch.Tensor:
        import torch

        with torch.no_grad():
            run.net(run.x)
            steps = []
            for k in run.chosen:
                attention = _captured(run.recorder, k).float()
                fused = attention.mean(dim=1) if fusion == "mean" else getattr(attention, fusion)(dim=1).values
                step = fused + torch.eye(fused.shape[-1], device=fused.device)
                steps.append(step / step.sum(dim=-1, keepdim=True))
            rollout = functools.reduce(lambda product, step: step @ product, steps)
            return _patch_row(rollout, run.grid)[:, None].expand(-1, run.idx.shape[1], -1, -1)

    maps, evals = _run(request, params["layer"], batch_maps)
    return _done(params, maps, evals)


def generic_attention(request: ExplainRequest) -> BackendResult:
    """Gradient-weighted attention (Chefer et al. 2021, https://arxiv.org/abs/2103.15679), self-attention rule.

    ``R = I``, then for each layer ``R += mean_h((dy_t/dA_l * A_l)^+) R``; the
    map is the class token's row of ``R - I`` over the patches, as in the
    authors' ViT code (``R - I``: the same with a class token; without one,
    e.g. SigLIP, the mean row would otherwise add ``1 / N`` everywhere). One
    backward pass per target.

    Params:
        layer: attention layers to propagate through (default: all).

    Example:
        >>> exp = xb.explain(vit_model, images, "builtin.GenericAttention", targets=xb.top_k(3))
    """
    params = check_params(request.method, request.params, {"layer": None})
    require_differentiable(request)

    def batch_maps(run: _Batch) -> torch.Tensor:
        import torch

        n_targets = run.idx.shape[1]
        with torch.enable_grad():
            out = run.net(run.x.requires_grad_(True))
            attentions = [_captured(run.recorder, k) for k in run.chosen]
            eye = torch.eye(attentions[0].shape[-1], device=attentions[0].device)
            per_target = []
            for j in range(n_targets):
                score = out.gather(1, run.idx[:, j : j + 1].to(out.device)).sum()
                grads = torch.autograd.grad(score, attentions, retain_graph=j < n_targets - 1)
                relevance = eye.expand(len(run.x), -1, -1)
                for attention, grad in zip(attentions, grads, strict=True):
                    cam = (grad.float() * attention.float()).clamp(min=0).mean(dim=1)
                    relevance = relevance + cam @ relevance
                per_target.append(_patch_row(relevance - eye, run.grid))  # the identity is no evidence
        return torch.stack(per_target, dim=1)

    maps, evals = _run(request, params["layer"], batch_maps)
    return _done(params, maps, evals)


def legrad(request: ExplainRequest) -> BackendResult:
    """LeGrad (Bousselham et al. 2024, https://arxiv.org/abs/2404.03214).

    For each layer ``l``, the layer's own score ``s_l`` is the model's head
    applied to the tokens after block ``l``; the map is
    ``mean_l mean_{heads, queries} (ds_l,t / dA_l)^+`` over the patch keys
    (the attention values are not multiplied in). On torchvision's
    ``VisionTransformer`` this is torchcam's ``LeGrad``, whose layer score is
    the head on the mean of the tokens. Elsewhere the tokens of every layer go
    through the rest of the model after its last block in one batch (the
    model's own pooling, final norm and head: a CLIP tower's projection and
    prompt similarities too), so no head needs to be named.

    Params:
        layer: attention layers (or blocks) whose maps are averaged (default: all).

    Example:
        >>> exp = xb.explain(vit_model, images, "builtin.LeGrad")
    """
    params = check_params(request.method, request.params, {"layer": None})
    model = require_differentiable(request)
    if _is_torchvision_vit(model.module):
        maps, evals = _run(request, params["layer"], functools.partial(_legrad_torchcam, {}), record=False)
        return _done(params, maps, evals, library_version("torchcam"))
    maps, evals = _run(request, params["layer"], _legrad_batch, blocks=True)
    return _done(params, maps, evals)


def _is_torchvision_vit(module: Any) -> bool:
    """Whether torchcam's LeGrad applies: a torchvision ``VisionTransformer`` with torchcam installed."""
    import importlib.util

    if importlib.util.find_spec("torchcam") is None or importlib.util.find_spec("torchvision") is None:
        return False
    from torchvision.models import VisionTransformer

    return isinstance(module, VisionTransformer)


def _legrad_torchcam(built: dict[str, Any], run: _Batch) -> torch.Tensor:
    """LeGrad by torchcam on the chosen encoder blocks (built on the first batch into ``built``, removed with the run)."""
    import torch
    from torchcam.methods import LeGrad

    extractor = built.get("extractor")
    if extractor is None:
        vit = run.net.model
        extractor = LeGrad(
            run.net,
            [run.sites[k].block_module for k in run.chosen],
            score_projection=lambda tokens: vit.heads(vit.encoder.ln(tokens.mean(dim=1))),
            prefix_tokens=run.grid.prefix,
            grid_shape=(run.grid.height, run.grid.width),
        )
        run.stack.callback(extractor.remove_hooks)
        built["extractor"] = extractor
    n_targets = run.idx.shape[1]
    with torch.enable_grad():
        scores = run.net(run.x)
        maps = [
            extractor([int(t) for t in run.idx[:, j]], scores, normalized=False, retain_graph=j < n_targets - 1)[0]
            for j in range(n_targets)
        ]
    return torch.stack(maps, dim=1)


def _legrad_batch(run: _Batch) -> torch.Tensor:
    """LeGrad maps of one batch: every chosen layer's tokens through the model's tail in one forward pass.

    The last block's output is replaced by its own tokens followed by a
    detached copy of each chosen block's tokens, so the first rows of the
    output are the model's true scores (the ones ``explain`` records) and the
    others the layer scores. The chain rule runs in two steps: one backward
    pass through the tail per target gives ``ds_l / dz_l`` for every layer,
    then each block's tokens are differentiated w.r.t. its own attention only
    (differentiating ``s_l`` in one step would also walk every later block,
    through the tail's copy of the last block's tokens: quadratic in depth).
    """
    import torch

    rec, batch, chosen = run.recorder, len(run.x), run.chosen
    copies: list[torch.Tensor] = []

    def substitute(_m: Any, _i: Any, out: Any) -> Any:
        copies[:] = [_captured(rec, k, rec.blocks).detach().requires_grad_(True) for k in chosen]
        last = _captured(rec, len(rec.sites) - 1, rec.blocks)
        stacked = torch.cat([last, *copies], dim=0 if last.shape[0] == batch else 1)
        return (stacked, *out[1:]) if isinstance(out, tuple) else stacked

    handle = rec.sites[-1].block_module.register_forward_hook(substitute)
    try:
        with torch.enable_grad():
            out = run.net(run.x.requires_grad_(True))
    finally:
        handle.remove()
    if out.shape[0] != batch * (len(chosen) + 1):
        raise MethodNotApplicableError(
            f"model: builtin.LeGrad needs the layers after the last transformer block to take any batch of tokens; "
            f"got {out.shape[0]} outputs for {batch * (len(chosen) + 1)} token sets; use builtin.GenericAttention"
        )
    per_target = []
    with torch.enable_grad():
        for j in range(run.idx.shape[1]):
            score = out[batch:].gather(1, run.idx[:, j : j + 1].repeat(len(chosen), 1).to(out.device)).sum()
            token_grads = torch.autograd.grad(score, copies, retain_graph=True)
            layer_maps = []
            for k, token_grad in zip(chosen, token_grads, strict=True):
                tokens, attention = _captured(rec, k, rec.blocks), _captured(rec, k)
                (grad,) = torch.autograd.grad(tokens, attention, grad_outputs=token_grad, retain_graph=True)
                relevance = grad.float().clamp(min=0).mean(dim=(1, 2))[:, run.grid.prefix :]
                layer_maps.append(relevance.reshape(batch, run.grid.height, run.grid.width))
            per_target.append(torch.stack(layer_maps).mean(dim=0))
    return torch.stack(per_target, dim=1)


def _captured(rec: AttentionRecorder, k: int, store: list[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Site ``k``'s tensor from the last forward pass (attention by default), or a clear error."""
    tensor = (rec.attentions if store is None else store)[k]
    if tensor is None:
        raise MethodNotApplicableError(
            f"model: attention module {rec.sites[k].name!r} did not run in this forward pass; pass layer= to "
            "choose the attention layers"
        )
    return tensor


def _attention_evals(params: Any, n: int, t: int, hw: tuple[int, int]) -> int:
    """One pass over the first image finding the attention sites, then one pass per image (all targets share it)."""
    return n + 1


#: Targets point at the package, which re-exports the functions (one module per library).
_PACKAGE = __name__.rpartition(".")[0]

SPECS = (
    MethodSpec(
        model_kind="transformer",
        name="builtin.AttentionRollout",
        evaluations=_attention_evals,
        target=f"{_PACKAGE}:attention_rollout",
        requires=("torch",),
        extra="torch",
        family="other",
        description="Attention rollout (Abnar & Zuidema 2020) on any ViT: head-fused attention multiplied over layers.",
    ),
    MethodSpec(
        model_kind="transformer",
        name="builtin.LeGrad",
        evaluations=_attention_evals,
        target=f"{_PACKAGE}:legrad",
        requires=("torch",),
        extra="torch",
        family="gradient",
        needs_gradients=True,
        description="LeGrad (Bousselham et al. 2024): positive gradients of each layer's score w.r.t. its attention.",
    ),
    MethodSpec(
        model_kind="transformer",
        name="builtin.GenericAttention",
        evaluations=_attention_evals,
        target=f"{_PACKAGE}:generic_attention",
        requires=("torch",),
        extra="torch",
        family="gradient",
        needs_gradients=True,
        description="Gradient-weighted attention relevance (Chefer et al. 2021, generic attention explainability).",
    ),
)
