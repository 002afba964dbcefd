"""The two towers of a CLIP-style model, for each family: which one it is, its image and text embeddings.

Hugging Face ``CLIPModel`` / ``SiglipModel`` expose ``get_image_features`` and
``get_text_features`` (a tensor in transformers 4, an output with a
``pooler_output`` in 5); open_clip models expose ``encode_image`` and
``encode_text``. The text tower runs once per model, under ``no_grad`` and in
eval mode restored after; prompts the tokenizer makes identical are refused,
since their scores would be too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from xai_bridge.adapters._torch import model_guard

from xai_bridge.errors import ModelInputError

__all__ = ["HF", "OPEN_CLIP", "family_of", "image_features", "model_dtype", "text_features"]

#: the two families, as :func:`family_of` names them
HF = "transformers"
OPEN_CLIP = "open_clip"


def family_of(model: Any) -> str:
    """``"transformers"`` or ``"open_clip"``: which methods reach the towers; refuses anything else in one line."""
    if not isinstance(model, nn.Module):
        raise ModelInputError(
            f"model: expected a CLIP-style torch model (Hugging Face CLIPModel / SiglipModel or open_clip), "
            f"got {type(model).__name__}"
        )
    if not isinstance(getattr(model, "logit_scale", None), torch.Tensor):
        raise ModelInputError(
            f"model: expected an image-text model with a logit_scale (CLIPModel, SiglipModel, open_clip), got "
            f"{type(model).__name__}; for a vision tower alone (e.g. CLIPVisionModel) load the full model"
        )
    if callable(getattr(model, "get_image_features", None)) and callable(getattr(model, "get_text_features", None)):
        return HF
    if callable(getattr(model, "encode_image", None)) and callable(getattr(model, "encode_text", None)):
        return OPEN_CLIP
    raise ModelInputError(
        f"model: {type(model).__name__} has neither get_image_features/get_text_features (Hugging Face) nor "
        "encode_image/encode_text (open_clip); pass a CLIP-style image-text model"
    )


def model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 without one): the dtype pixels go in as."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _pooled(out: Any) -> torch.Tensor:
    """The embedding from ``get_*_features``: a tensor (transformers 4) or ``pooler_output`` (5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise ModelInputError(f"model: get_*_features returned {type(out).__name__} without a pooler_output tensor")


def image_features(model: nn.Module, family: str, pixel_values: torch.Tensor) -> torch.Tensor:
    """Unnormalised image embeddings of preprocessed ``pixel_values``."""
    if family == HF:
        return _pooled(model.get_image_features(pixel_values=pixel_values))  # type: ignore[operator]
    return model.encode_image(pixel_values)  # type: ignore[operator,no-any-return]


def text_features(model: nn.Module, family: str, tokenizer: Any, prompts: Sequence[str]) -> torch.Tensor:
    """L2-normalised ``(prompts, D)`` text embeddings; one text-tower pass, no grad, model restored after."""
    device = _device(model)
    with model_guard(model, eval_mode=True), torch.no_grad():
        if family == HF:
            encoded = _hf_tokens(model, tokenizer, prompts, device)
            _refuse_same_tokens(prompts, encoded.get("input_ids"), encoded.get("attention_mask"))
            feats = _pooled(model.get_text_features(**encoded))  # type: ignore[operator]
        else:
            tokens = tokenizer(list(prompts))
            if not isinstance(tokens, torch.Tensor):
                raise ModelInputError(
                    f"tokenizer: expected a callable returning token ids (open_clip.get_tokenizer), got "
                    f"{type(tokens).__name__} from {type(tokenizer).__name__}"
                )
            _refuse_same_tokens(prompts, tokens, None)
            feats = model.encode_text(tokens.to(device))  # type: ignore[operator]
    feats = feats.detach().float()
    return feats / feats.norm(p=2, dim=-1, keepdim=True)


def _refuse_same_tokens(prompts: Sequence[str], ids: Any, mask: Any) -> None:
    """Refuse prompts the tokenizer makes identical ("a photo of a cat" and "A photo of a cat ").

    Their outputs would be equal, and a target named by either one ambiguous.
    """
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
        return
    seen: dict[tuple[int, ...], str] = {}
    for i, prompt in enumerate(prompts):
        row = ids[i] if mask is None else ids[i][mask[i].bool()]
        key = tuple(int(t) for t in row.tolist())
        if key in seen:
            raise ModelInputError(
                f"prompts: expected prompts that differ after tokenisation, got {seen[key]!r} and {prompt!r} "
                "(the same tokens, so the same scores); drop one or reword it"
            )
        seen[key] = prompt


def _hf_tokens(model: nn.Module, tokenizer: Any, prompts: Sequence[str], device: torch.device) -> dict[str, Any]:
    if not callable(tokenizer):
        raise ModelInputError(f"tokenizer: expected a Hugging Face tokenizer, got {type(tokenizer).__name__}")
    config = getattr(model, "config", None)
    text_config = getattr(config, "text_config", None)
    max_length = getattr(text_config, "max_position_embeddings", None)
    # SigLIP is trained on prompts padded to the full length, and its processor documents padding="max_length"
    padding: bool | str = "max_length" if "siglip" in str(getattr(config, "model_type", "")) else True
    kwargs: dict[str, Any] = {"padding": padding, "return_tensors": "pt"}
    if isinstance(max_length, int):
        kwargs.update(truncation=True, max_length=max_length)
    encoded = tokenizer(list(prompts), **kwargs)
    keep = ("input_ids", "attention_mask", "position_ids")
    return {k: v.to(device) for k, v in dict(encoded).items() if k in keep and isinstance(v, torch.Tensor)}
