"""CLIP-style image-text models as classifiers over prompts (zero-shot classification).

:class:`ZeroShotModel` turns a Hugging Face ``CLIPModel`` / ``SiglipModel`` or an
``open_clip`` model and a list of prompts into a differentiable
:class:`~xai_bridge.models.Model` with one output per prompt: the image-text
similarity the model itself reports (``logits_per_image``: cosine similarity
times ``logit_scale.exp()``, plus ``logit_bias`` for SigLIP). The prompts are the
class names, so ``targets="a photo of a cat"`` works, and every method family
runs on it: gradients reach the pixels through the image tower, CAMs hook the
vision tower's token grid, perturbation methods call ``predict``.

The text tower runs once, when the model is built: the prompts' embeddings are
a fixed tensor afterwards, so an explanation costs image-tower passes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from xai_bridge.errors import ModelInputError
from xai_bridge.models import OutputKind
from xai_bridge.preprocess import Preprocess, require_preprocess

from ._clip_preprocess import preprocess_from_processor
from ._clip_towers import OPEN_CLIP, family_of, image_features, model_dtype, text_features
from .torch import TorchModel

__all__ = ["SimilarityHead", "ZeroShotModel", "preprocess_from_processor"]


class SimilarityHead(nn.Module):
    """Preprocessed pixels -> the image-text similarities of fixed prompts.

    ``logit_scale.exp() * cos(image, prompt)`` (+ ``logit_bias`` when the model
    has one), computed as the model's own forward pass computes
    ``logits_per_image``. The text embeddings are a non-persistent buffer:
    computed once, moved with the module, never part of a ``state_dict``.

    Args:
        model: the user's CLIP-style model (kept as a child, not copied).
        text_embeds: ``(prompts, D)`` text embeddings, L2-normalised.
        family: ``"transformers"`` or ``"open_clip"``.
    """

    text_embeds: torch.Tensor

    def __init__(self, model: nn.Module, text_embeds: torch.Tensor, family: str) -> None:
        super().__init__()
        self.model = model
        self.family = family
        self.register_buffer("text_embeds", text_embeds, persistent=False)
        # the wrapper's own flag only: guards find nothing to switch when the user's model is in eval mode
        self.training = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # noqa: D102
        dtype = model_dtype(self.model)
        feats = image_features(self.model, self.family, pixel_values.to(dtype))
        feats = feats / feats.norm(p=2, dim=-1, keepdim=True)
        scale = cast(torch.Tensor, self.model.logit_scale)
        logits = feats @ self.text_embeds.to(feats.dtype).t() * scale.exp()
        bias = getattr(self.model, "logit_bias", None)
        if isinstance(bias, torch.Tensor):
            logits = logits + bias
        return logits.float()


class ZeroShotModel(TorchModel):
    """A CLIP-style model over prompts as a differentiable :class:`~xai_bridge.models.Model`.

    Outputs, one per prompt, are the model's ``logits_per_image`` for that
    prompt: ``logit_scale.exp() * cos(image_embedding, text_embedding)``, plus
    ``logit_bias`` for SigLIP. ``class_names`` are the prompts. Inputs go
    through the model's own image preprocessing (read from its processor:
    shortest-edge resize, centre crop, mean/std), applied differentiably to
    ``[0, 255]`` pixels, so maps are on the image as given.

    The text tower runs once here, under ``no_grad`` and in eval mode; the
    embeddings are kept in :attr:`text_embeddings`. CAM layers are named inside
    the user's model (``model.module`` is the user's model), e.g.
    ``"vision_model.encoder.layers.1.layer_norm1"``; the automatic choice picks
    the vision tower's last token grid whose patch tokens reach the score.
    The user's model is never modified (mode, ``requires_grad``, hooks).

    Args:
        model: a Hugging Face ``CLIPModel`` / ``SiglipModel`` (anything with
            ``get_image_features``, ``get_text_features`` and ``logit_scale``)
            or an ``open_clip`` model (``encode_image``, ``encode_text``).
        prompts: the texts to score, e.g. ``["a photo of a cat", "a photo of a dog"]``.
        processor: Hugging Face: the model's processor (``CLIPProcessor``;
            its ``tokenizer`` and ``image_processor`` are used). open_clip: the
            preprocess transform from ``create_model_and_transforms``.
        tokenizer: the text tokenizer when ``processor`` has none (open_clip:
            ``open_clip.get_tokenizer(name)``; Hugging Face: ``CLIPTokenizer``).
        image_processor: the image preprocessing when ``processor`` has none
            (``CLIPImageProcessor``, an open_clip transform).
        preprocess: explicit :class:`~xai_bridge.models.Preprocess`; overrides
            what the processor says.
        output_kind: default ``"logits"`` (softmax over prompts, as CLIP is
            trained), ``"scores"`` for models with a ``logit_bias`` (SigLIP:
            a sigmoid per prompt).
        batch_size: largest batch of images run at once.
        device: must be the model's device (xai-bridge never moves a model).
        softmax: explain softmax probabilities over the prompts instead.
        tune_batch: see :class:`~xai_bridge.adapters.models.TorchModel`.

    Example:
        >>> from transformers import CLIPModel, CLIPProcessor  # doctest: +SKIP
        >>> clip = CLIPModel.from_pretrained(folder)  # doctest: +SKIP
        >>> model = xb.ZeroShotModel(clip, ["a photo of a cat", "a photo of a dog"],
        ...                          processor=CLIPProcessor.from_pretrained(folder))  # doctest: +SKIP
        >>> xb.explain(model, "cat.jpg", "gradcam.GradCAM", targets="a photo of a cat")  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        prompts: Sequence[str],
        processor: Any = None,
        *,
        tokenizer: Any = None,
        image_processor: Any = None,
        preprocess: Preprocess | None = None,
        output_kind: OutputKind | str | None = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        softmax: bool = False,
        tune_batch: bool = True,
    ) -> None:
        family = family_of(model)
        names = _check_prompts(prompts)
        tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ModelInputError(
                "tokenizer: expected the model's tokenizer, got none; pass processor=<its processor> or "
                "tokenizer=" + ("open_clip.get_tokenizer(<model name>)" if family == OPEN_CLIP else "<CLIPTokenizer>")
            )
        if preprocess is None:
            source = image_processor if image_processor is not None else getattr(processor, "image_processor", None)
            if source is None and family == OPEN_CLIP:
                source = (
                    processor
                    if processor is not None
                    else getattr(getattr(model, "visual", None), "preprocess_cfg", None)
                )
            if source is None:
                raise ModelInputError(
                    "processor: expected the model's processor or image processor, got none; pass processor=, "
                    "image_processor= or preprocess=xb.Preprocess(...)"
                )
            preprocess = preprocess_from_processor(source)
        preprocess = require_preprocess(preprocess, "a zero-shot model", "xb.Preprocess(...)")
        embeds = text_features(model, family, tokenizer, names)
        if output_kind is None:
            output_kind = (
                OutputKind.SCORES if isinstance(getattr(model, "logit_bias", None), torch.Tensor) else "logits"
            )
        self._user_model = model
        self.prompts = names
        self.family = family
        self._head = SimilarityHead(model, embeds, family)
        super().__init__(
            self._head,
            preprocess,
            output_kind=output_kind,
            class_names=names,
            batch_size=batch_size,
            device=device,
            softmax=softmax,
            tune_batch=tune_batch,
        )

    @property
    def module(self) -> nn.Module:
        """The user's model (CAM layer names are relative to it)."""
        return self._user_model

    @property
    def text_embeddings(self) -> torch.Tensor:
        """``(prompts, D)`` L2-normalised text embeddings, computed once at construction."""
        return self._head.text_embeds

    def __repr__(self) -> str:
        return (
            f"ZeroShotModel({type(self._user_model).__name__}, prompts={len(self.prompts)}, "
            f"preprocess={self.preprocess}, output_kind={self.output_kind.value!r}, device={self.device})"
        )


def _check_prompts(prompts: Any) -> list[str]:
    if isinstance(prompts, str):
        raise ModelInputError(f"prompts: expected a list of strings, got one string; wrap it: [{prompts!r}]")
    try:
        names = list(prompts)
    except TypeError:
        raise ModelInputError(f"prompts: expected a list of strings, got {type(prompts).__name__}") from None
    if not names or not all(isinstance(p, str) and p.strip() for p in names):
        raise ModelInputError(f"prompts: expected a non-empty list of non-empty strings, got {prompts!r}")
    dupes = sorted({p for p in names if names.count(p) > 1})
    if dupes:
        raise ModelInputError(f"prompts: expected distinct prompts (they are the class names), got {dupes} twice")
    return names
