"""Local vision-language models that answer a prompt about an image, scored by their own language head.

:class:`TransformersVLM` wraps a Hugging Face model that reads an image and a
text prompt (a question) and writes text (the answer):

* ``BlipForQuestionAnswering`` (BLIP VQA): the question goes through BLIP's
  text encoder (cross-attending to the image), the answer through its text
  decoder;
* decoder-only models with image placeholder tokens in the prompt --
  ``LlavaForConditionalGeneration``, ``Blip2ForConditionalGeneration`` and the
  other ``AutoModelForImageTextToText`` / ``AutoModelForVision2Seq`` models
  whose forward takes ``input_ids`` and ``pixel_values`` and returns ``logits``.

It is a :class:`~xai_bridge.adapters.captioners.local.SelfScoringCaptioner`
whose calls take the question as ``prompt``: ``caption(images, prompt=q)``
answers, ``score_images(answer, images, prompt=q)`` teacher-forces an answer:
``log p(a_t | image, q, a_<t)``. The same computation, differentiable in the
pixels, is :meth:`TransformersVLM.answer_model`: a
:class:`~xai_bridge.adapters.models.TorchModel` with one output per answer
token, so gradient methods and CAMs explain answers too. See
:func:`xai_bridge.captions.explain_answer`.

torch and transformers are imported only when this module is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from xai_bridge.adapters._torch import model_guard

from xai_bridge.errors import ModelInputError, ParameterError
from xai_bridge.models import Preprocess

from .local import _check_images
from .scorers import CaptionTokens, TokenScore, _check_reference, _device_of, _tokenize_reference, clean_token
from .vlm_answer import AnswerHead, AnswerModel, convert_log_probs

__all__ = ["AnswerHead", "AnswerModel", "TransformersVLM"]

_BLIP_VQA = "blip_vqa"
_IMAGE_TOKENS = "image_tokens"


class TransformersVLM:
    """A local Hugging Face vision-language model that answers questions, scored by its own language head.

    ``caption(images, prompt=question)`` generates the answers (greedy by
    default); ``score_images(answer, images, prompt=question)`` returns the
    teacher-forced scores of a reference answer's tokens given each (masked)
    image and the question, float32 ``(N, T)``; :meth:`answer_model` is the
    same function of the pixels as a differentiable model. The user's model
    is never modified (mode, ``requires_grad``, hooks).

    Args:
        model: ``BlipForQuestionAnswering``, or a model taking ``input_ids`` with
            image placeholder tokens plus ``pixel_values`` and returning
            ``logits`` (LLaVA, BLIP-2, ...).
        processor: the model's processor (its ``tokenizer`` and
            ``image_processor`` are used; for placeholder-token models it also
            expands the image token); or pass ``tokenizer`` and
            ``preprocess``/``image_processor``.
        tokenizer: the tokenizer when ``processor`` is None.
        preprocess: xai-bridge preprocessing to ``pixel_values`` (applied
            differentiably for gradient methods); default: read from the
            image processor.
        image_processor: a transformers image processor (when ``preprocess`` is None).
        prompt_template: how a question becomes the prompt, with ``{question}``
            and, for placeholder-token models, ``{image}`` where the image
            tokens go. Default: ``"{question}"`` for BLIP VQA, the
            processor's chat template when it has one, else
            ``"{image}"`` + newline + ``"{question}"``.
        generate_kwargs: keyword arguments of ``generate`` (default greedy,
            ``max_new_tokens=10``).
        output: score kind (default log-probability).
        batch_size: images per forward pass.
        device: torch device (default: the model's).

    Example::

        vlm = TransformersVLM(BlipForQuestionAnswering.from_pretrained(folder),
                              BlipProcessor.from_pretrained(folder))
        vlm.caption(images, prompt="what animal is this?")  # -> ["dog", ...]
        [exp] = xb.explain_answer(vlm, "dog.jpg", "what animal is this?", method="builtin.Occlusion")
    """

    def __init__(
        self,
        model: Any,
        processor: Any = None,
        *,
        tokenizer: Any = None,
        preprocess: Preprocess | None = None,
        image_processor: Any = None,
        prompt_template: str | None = None,
        generate_kwargs: Mapping[str, Any] | None = None,
        output: TokenScore | str = TokenScore.LOG_PROB,
        batch_size: int = 16,
        device: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise ModelInputError(f"model: expected a transformers vision-language model, got {type(model).__name__}")
        tokenizer = tokenizer if tokenizer is not None else getattr(processor, "tokenizer", None)
        if tokenizer is None:
            raise ModelInputError("tokenizer: pass processor=<the model's processor> or tokenizer=<its tokenizer>")
        if preprocess is None:
            source = image_processor if image_processor is not None else getattr(processor, "image_processor", None)
            if source is None:
                raise ParameterError(
                    "preprocess: pass processor=, image_processor= or preprocess=xb.Preprocess(...) "
                    "(the model's pixel_values preprocessing)"
                )
            preprocess = Preprocess.from_transformers(source)
        elif not isinstance(preprocess, Preprocess):
            raise ModelInputError(f"preprocess: expected an xai_bridge.Preprocess, got {type(preprocess).__name__}")
        if int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
        self.model: Any = model
        self.processor = processor
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.generate_kwargs = {"max_new_tokens": 10, "do_sample": False, "num_beams": 1, **dict(generate_kwargs or {})}
        self.output = TokenScore(output)
        self.batch_size = int(batch_size)
        self.device = _device_of(model, device)
        config: Any = self.model.config
        if type(model).__name__ == "BlipForQuestionAnswering":
            self.family = _BLIP_VQA
            self._start = int(config.text_config.bos_token_id)
            stops = [config.text_config.sep_token_id, getattr(config.text_config, "eos_token_id", None)]
        else:
            self.family = _IMAGE_TOKENS
            self._start = -1
            gen = getattr(model, "generation_config", None)
            eos = getattr(gen, "eos_token_id", None)
            if eos is None:
                eos = getattr(tokenizer, "eos_token_id", None)
            stops = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        self._stops = {int(s) for s in stops if s is not None}
        self.prompt_template = prompt_template if prompt_template is not None else self._default_template()
        self._prompts: dict[str, torch.Tensor] = {}  # question -> its input ids (tokenised once)

    # -- prompts
    def _default_template(self) -> str:
        if self.family == _BLIP_VQA:
            return "{question}"
        if self.processor is not None and getattr(self.processor, "chat_template", None):
            return ""  # the chat template builds the prompt
        return "{image}\n{question}"

    def _prompt_ids(self, prompt: str | None) -> torch.Tensor:
        """The prompt's input ids, ``(1, P)``, as the model reads them (special and image tokens included)."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ParameterError(
                f"prompt: {type(self.model).__name__} answers a question; pass prompt=<the question>, got {prompt!r}"
            )
        ids = self._prompts.get(prompt)
        if ids is None:
            ids = self._encode_prompt(prompt)
            self._check_length(prompt, int(ids.shape[1]))
            self._prompts[prompt] = ids
        return ids

    def _text_positions(self) -> int | None:
        """Positions of the text tower the question goes through (``max_position_embeddings``), if the config says."""
        config: Any = self.model.config
        text = getattr(config, "text_config", None) or config
        value = getattr(text, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def _check_length(self, prompt: str, length: int) -> None:
        """Refuse a question whose tokens fill the text tower's positions (it would fail deep in an embedding)."""
        limit = self._text_positions()
        if limit is not None and length >= limit:
            raise ParameterError(
                f"question: {length} tokens with the prompt's own, over the {limit} text positions of "
                f"{type(self.model).__name__} (one at least is needed for the answer); shorten the question "
                f"(it starts {prompt[:40]!r})"
            )

    def _encode_prompt(self, prompt: str) -> torch.Tensor:
        if self.family == _BLIP_VQA:
            text = self.prompt_template.format(question=prompt)
            return torch.tensor([self.tokenizer(text)["input_ids"]], dtype=torch.long)
        if self.processor is not None:
            if self.prompt_template:
                image_token = str(getattr(self.processor, "image_token", "<image>"))
                text = self.prompt_template.format(question=prompt, image=image_token)
            else:
                messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
                text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            size = self.preprocess.size or (224, 224)
            dummy = np.zeros((*size, 3), np.uint8)
            ids = self.processor(images=[dummy], text=[text], return_tensors="pt")["input_ids"]
            return torch.as_tensor(ids[:1], dtype=torch.long)
        return torch.tensor([self._placeholder_ids(prompt)], dtype=torch.long)

    def _placeholder_ids(self, prompt: str) -> list[int]:
        """Prompt ids without a processor: BOS, the template's text and one placeholder per image token."""
        config: Any = self.model.config
        image_token = getattr(config, "image_token_id", getattr(config, "image_token_index", None))
        if image_token is None:
            raise ParameterError(
                f"processor: {type(self.model).__name__} has no image_token_id in its config; pass processor="
            )
        count = getattr(config, "num_query_tokens", None)
        if count is None:
            vision = config.vision_config
            count = (vision.image_size // vision.patch_size) ** 2
            if getattr(config, "vision_feature_select_strategy", "default") == "full":
                count += 1
        before, _, after = self.prompt_template.partition("{image}")
        bos = getattr(self.tokenizer, "bos_token_id", None)
        ids = [int(bos)] if bos is not None else []
        ids += self.tokenizer(before.format(question=prompt), add_special_tokens=False)["input_ids"]
        ids += [int(image_token)] * int(count)
        ids += self.tokenizer(after.format(question=prompt), add_special_tokens=False)["input_ids"]
        return ids

    # -- pixels
    def pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(N, H, W, 3)`` -> the model's ``pixel_values`` (``preprocess`` applied, NCHW)."""
        x = self.preprocess.apply(_check_images(images))
        if self.preprocess.layout == "NHWC":
            x = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
        return torch.from_numpy(x).to(self.device)

    # -- answers
    def caption_tokens(self, images: np.ndarray, *, prompt: str | None = None) -> list[CaptionTokens]:
        """The generated answers as :class:`CaptionTokens`: the generated ids themselves, up to the first stop token."""
        images = _check_images(images)
        prompt_ids = self._prompt_ids(prompt).to(self.device)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        result: list[CaptionTokens] = []
        with model_guard(self.model), torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self.pixel_values(images[start : start + self.batch_size])
                ids = prompt_ids.expand(len(pixels), -1)
                mask = torch.ones_like(ids)
                out = self.model.generate(
                    input_ids=ids, pixel_values=pixels, attention_mask=mask, **self.generate_kwargs
                )
                for row in out.cpu().tolist():
                    if self.family == _BLIP_VQA:
                        row = row[1:] if row and row[0] == self._start else row
                    elif row[: ids.shape[1]] == ids[0].tolist():  # decoder-only: the prompt comes back first
                        row = row[ids.shape[1] :]
                    cut = next((k for k, i in enumerate(row) if i in self._stops), len(row))
                    kept = [i for i in row[:cut] if i != pad]
                    text = self.tokenizer.decode(kept, skip_special_tokens=True).strip()
                    result.append(CaptionTokens(text, tuple(kept), tuple(clean_token(self.tokenizer, i) for i in kept)))
        return result

    def caption(self, images: np.ndarray, *, prompt: str | None = None) -> list[str]:
        """One generated answer to ``prompt`` per image."""
        return [tokens.text for tokens in self.caption_tokens(images, prompt=prompt)]

    def tokenize(self, caption: str) -> CaptionTokens:
        """Tokenise a reference answer with the model's tokenizer (no special tokens)."""
        return _tokenize_reference(self.tokenizer, caption)

    def token_log_probs(self, pixel_values: torch.Tensor, reference: CaptionTokens, prompt: str) -> torch.Tensor:
        """``log p(a_t | image, prompt, a_<t)``, float64 ``(N, T)``, differentiable in ``pixel_values``.

        Runs under whatever grad mode and model mode the caller set; the
        teacher-forced forward pass of the model's own language head.
        """
        _check_reference(reference)
        device = pixel_values.device
        prompt_ids = self._prompt_ids(prompt).to(device)
        ref = torch.tensor(reference.ids, dtype=torch.long, device=device)
        n, t = pixel_values.shape[0], len(reference)
        if self.family == _BLIP_VQA:
            logits = _blip_vqa_logits(self.model, pixel_values, prompt_ids.expand(n, -1), self._start, ref)
            log_probs = torch.log_softmax(logits.double(), dim=-1)
        else:
            p = prompt_ids.shape[1]
            ids = torch.cat([prompt_ids[0], ref[:-1]]).expand(n, -1)
            out = self.model(input_ids=ids, pixel_values=pixel_values, attention_mask=torch.ones_like(ids))
            log_probs = torch.log_softmax(out.logits[:, p - 1 : p - 1 + t].double(), dim=-1)
        return log_probs.gather(2, ref.expand(n, -1).unsqueeze(-1)).squeeze(-1)

    def score_images(self, reference: CaptionTokens, images: np.ndarray, *, prompt: str | None = None) -> np.ndarray:
        """Teacher-forced scores of the reference answer's tokens given each image and ``prompt``, float32 ``(N, T)``."""
        images = _check_images(images)
        outs = []
        with model_guard(self.model), torch.no_grad():
            for start in range(0, len(images), self.batch_size):
                pixels = self.pixel_values(images[start : start + self.batch_size])
                outs.append(
                    convert_log_probs(self.token_log_probs(pixels, reference, prompt or ""), self.output).cpu().numpy()
                )
        if not outs:
            return np.zeros((0, len(reference)), np.float32)
        return np.concatenate(outs, axis=0).astype(np.float32)

    def answer_model(self, reference: CaptionTokens | str, prompt: str, batch_size: int | None = None) -> AnswerModel:
        """The reference answer's token scores as a differentiable model of the pixels (see :class:`AnswerModel`)."""
        tokens = reference if isinstance(reference, CaptionTokens) else self.tokenize(str(reference))
        return AnswerModel(self, tokens, prompt, batch_size=batch_size or self.batch_size)

    def describe(self) -> dict[str, Any]:
        """JSON provenance."""
        return {
            "type": type(self).__name__,
            "model": str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__),
            "architecture": type(self.model).__name__,
            "family": self.family,
            "prompt_template": self.prompt_template,
            "generate_kwargs": {
                k: v for k, v in self.generate_kwargs.items() if isinstance(v, (int, float, str, bool))
            },
            "output": self.output.value,
        }

    def __repr__(self) -> str:
        return f"TransformersVLM({type(self.model).__name__}, family={self.family!r}, output={self.output.value!r})"


def _blip_vqa_logits(
    model: Any, pixel_values: torch.Tensor, question: torch.Tensor, start: int, ref: torch.Tensor
) -> torch.Tensor:
    """BLIP VQA's teacher-forced decoder logits, ``(N, T, V)``: what its ``forward`` computes and does not return."""
    image_embeds = model.vision_model(pixel_values=pixel_values)[0]
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    question_mask = torch.ones_like(question)
    question_embeds = model.text_encoder(
        input_ids=question,
        attention_mask=question_mask,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_mask,
    )[0]
    n = pixel_values.shape[0]
    decoder_input = torch.cat([torch.tensor([start], device=ref.device), ref[:-1]]).expand(n, -1)
    return model.text_decoder(
        input_ids=decoder_input,
        encoder_hidden_states=question_embeds,
        encoder_attention_mask=question_mask,
    ).logits
