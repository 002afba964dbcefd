"""Local captioners: transformers captioning models (the protocols live in :mod:`xai_bridge.captions.protocols`).

The protocol is one method, ``caption(images) -> list[str]`` on uint8
``(N, H, W, 3)`` arrays (:class:`~xai_bridge.captions.protocols.Captioner`).
A captioner that reads an instruction with the image (a question: the
caption is then the answer) also takes ``prompt=`` in ``caption`` -- and,
when self-scoring, in ``caption_tokens`` and ``score_images``.
Implementations:

* :class:`~xai_bridge.captions.protocols.FunctionCaptioner` -- any Python
  function (re-exported here, as are the protocols, for older imports);
* :class:`TransformersCaptioner` -- a local transformers captioning model
  (``VisionEncoderDecoderModel``, BLIP) which can also score a caption with
  *its own* language head given a masked image (:class:`SelfScoringCaptioner`),
  so no external scorer model is needed (the improvement seed 000 names,
  shap #1739);
* :class:`~xai_bridge.adapters.captioners.vlm.TransformersVLM` -- a local
  vision-language model answering a prompt (BLIP VQA, LLaVA, BLIP-2);
* remote APIs (Azure AI Vision, OpenAI-compatible, Hugging Face) in
  :mod:`xai_bridge.adapters.captioners.remote` (one module per provider).

torch and transformers are imported only when a transformers captioner runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from xai_bridge.adapters._torch import model_guard

from xai_bridge.captions.protocols import (
    Captioner,
    CaptionTokens,
    FunctionCaptioner,
    SelfScoringCaptioner,
    as_captioner,
    captions_of,
    describe,
)
from xai_bridge.captions.protocols import check_images as _check_images
from xai_bridge.errors import ModelInputError, ParameterError
from xai_bridge.models import Preprocess

from .scorers import TokenScore, clean_token, token_scores

__all__ = [
    "Captioner",
    "FunctionCaptioner",
    "SelfScoringCaptioner",
    "TransformersCaptioner",
    "as_captioner",
    "captions_of",
    "describe",
]


class TransformersCaptioner:
    """A local transformers image-captioning model, scored with its own language head.

    Works with ``VisionEncoderDecoderModel`` (ViT-GPT2, TrOCR-style, ...) and
    ``BlipForConditionalGeneration``. ``caption`` runs ``model.generate``;
    ``score_images`` teacher-forces the reference caption through the
    decoder given each (masked) image: ``log p(r_t | image, r_<t)``.

    Args:
        model: the transformers model.
        tokenizer: its tokenizer (or a processor with ``decode``).
        preprocess: xai-bridge preprocessing to the model's ``pixel_values``
            (e.g. ``Preprocess(size=(224, 224), mean=(.5,)*3, std=(.5,)*3)``);
            or pass ``image_processor``.
        image_processor: a transformers image processor (used when
            ``preprocess`` is None).
        generate_kwargs: keyword arguments for ``generate`` (default greedy,
            ``max_new_tokens=20``).
        output: score kind of ``score_images`` (default log-probability).
        batch_size: images per forward pass.
        device: torch device (default: the model's).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        preprocess: Preprocess | None = None,
        image_processor: Any = None,
        generate_kwargs: Mapping[str, Any] | None = None,
        output: TokenScore | str = TokenScore.LOG_PROB,
        batch_size: int = 16,
        device: Any = None,
    ) -> None:
        if (preprocess is None) == (image_processor is None):
            raise ModelInputError("preprocess: pass exactly one of preprocess=Preprocess(...) or image_processor=...")
        if preprocess is not None and not isinstance(preprocess, Preprocess):
            raise ModelInputError(f"preprocess: expected an xai_bridge.Preprocess, got {type(preprocess).__name__}")
        if int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
        from .scorers import _device_of

        self.model = model
        self.tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # accept a processor
        self.preprocess = preprocess
        self.image_processor = image_processor
        self.generate_kwargs = {"max_new_tokens": 20, "do_sample": False, "num_beams": 1, **dict(generate_kwargs or {})}
        self.output = TokenScore(output)
        self.batch_size = int(batch_size)
        self.device = _device_of(model, device)
        config = model.config
        self._blip = getattr(config, "model_type", "") == "blip"
        if self._blip:
            start = getattr(config.text_config, "bos_token_id", None)
        else:
            start = getattr(config, "decoder_start_token_id", None)
            if start is None:
                start = getattr(getattr(config, "decoder", None), "bos_token_id", None)
        if start is None:
            raise ModelInputError(
                "model: the config has no decoder_start_token_id; set model.config.decoder_start_token_id"
            )
        self._start = int(start)

    def _pixels(self, images: np.ndarray) -> Any:
        import torch

        if self.preprocess is not None:
            x = self.preprocess.apply(images)
            if self.preprocess.layout == "NHWC":
                x = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
            return torch.from_numpy(x).to(self.device)
        return self.image_processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)

    def caption_tokens(self, images: np.ndarray) -> list[CaptionTokens]:
        """Generated captions as :class:`CaptionTokens`: the generated ids themselves, up to the first EOS."""
        import torch

        images = _check_images(images)
        stops = self._stop_ids()
        pad = getattr(self.tokenizer, "pad_token_id", None)
        result: list[CaptionTokens] = []
        with model_guard(self.model), torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self._pixels(images[start : start + self.batch_size])
                generated = self.model.generate(pixel_values=pixels, **self.generate_kwargs)
                for row in generated.cpu().tolist():
                    # [start] + tokens + [eos] + padding: keep exactly the tokens generated, in their context
                    row = row[1:] if row and row[0] == self._start else row
                    cut = next((k for k, i in enumerate(row) if i in stops), len(row))
                    ids = [i for i in row[:cut] if i != pad]
                    text = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
                    result.append(CaptionTokens(text, tuple(ids), tuple(clean_token(self.tokenizer, i) for i in ids)))
        return result

    def _stop_ids(self) -> set[int]:
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = getattr(self.tokenizer, "eos_token_id", None)
        return {int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None}

    def caption(self, images: np.ndarray) -> list[str]:
        """One generated caption per image."""
        return [tokens.text for tokens in self.caption_tokens(images)]

    def tokenize(self, caption: str) -> CaptionTokens:
        """Tokenise a reference caption with the model's tokenizer (no special tokens)."""
        from .scorers import _tokenize_reference

        return _tokenize_reference(self.tokenizer, caption)

    def score_images(self, reference: CaptionTokens, images: np.ndarray) -> np.ndarray:
        """Teacher-forced scores of the reference tokens given each image, float32 ``(N, T)``."""
        import torch

        from .scorers import _check_reference

        _check_reference(reference)
        images = _check_images(images)
        ref = torch.tensor(reference.ids, dtype=torch.long, device=self.device)
        decoder_input = torch.cat([torch.tensor([self._start], device=self.device), ref[:-1]])
        outs = []
        with model_guard(self.model), torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self._pixels(images[start : start + self.batch_size])
                tokens = decoder_input.expand(len(pixels), -1)
                if self._blip:
                    logits = self.model(pixel_values=pixels, input_ids=tokens).logits
                else:
                    logits = self.model(pixel_values=pixels, decoder_input_ids=tokens).logits
                log_probs = torch.log_softmax(logits.double(), dim=-1)
                outs.append(log_probs.gather(2, ref.expand(len(pixels), -1).unsqueeze(-1)).squeeze(-1).cpu().numpy())
        if not outs:
            return np.zeros((0, len(reference)), np.float32)
        return token_scores(np.concatenate(outs, axis=0), self.output).astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """JSON provenance."""
        return {
            "type": type(self).__name__,
            "model": str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__),
            "architecture": type(self.model).__name__,
            "generate_kwargs": {
                k: v for k, v in self.generate_kwargs.items() if isinstance(v, (int, float, str, bool))
            },
            "output": self.output.value,
        }

    def __repr__(self) -> str:
        return f"TransformersCaptioner({type(self.model).__name__}, output={self.output.value!r})"
