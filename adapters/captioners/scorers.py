"""Caption scorers: how much of a reference caption survives in another caption.

A scorer turns the caption of a masked image into one number per token of
the *reference* caption (the caption of the unmasked image), so captioning
becomes a multi-output model that any perturbation method can explain:

* :class:`TeacherForcingScorer` -- the log-probability of each reference token
  under a transformers seq2seq or causal language model, teacher-forced with
  the masked image's caption as context (the idea of shap's ``TeacherForcing``,
  re-implemented here: seed 000 used ``shap.models.TeacherForcingLogits``,
  which no longer exists, shap #2880).
* :class:`EmbeddingSimilarityScorer` -- per-token greedy cosine similarity of
  token embeddings (BERTScore recall, Zhang et al. 2020,
  https://arxiv.org/abs/1904.09675).
* :class:`WordMatchScorer` -- 1 where a reference word occurs in the caption;
  no dependencies, for tests and quick looks.

The scorer protocol and :class:`~xai_bridge.captions.protocols.CaptionTokens`
live in :mod:`xai_bridge.captions.protocols` (re-exported here for older
imports). torch and transformers are imported only when a model scorer is used.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from xai_bridge.adapters._torch import model_guard

from xai_bridge.captions.protocols import CaptionScorer, CaptionTokens
from xai_bridge.errors import ModelInputError, ParameterError

__all__ = [
    "CaptionScorer",
    "CaptionTokens",
    "EmbeddingSimilarityScorer",
    "TeacherForcingScorer",
    "TokenScore",
    "WordMatchScorer",
    "clean_token",
    "token_scores",
]


class TokenScore(str, enum.Enum):
    """What a teacher-forced score is."""

    LOG_PROB = "log_prob"  # log p(token | context)
    PROB = "prob"  # p(token | context)
    LOG_ODDS = "log_odds"  # log p - log(1 - p), as shap's TeacherForcing returns


def token_scores(log_probs: Any, output: TokenScore) -> np.ndarray:
    """Convert float64 log-probabilities to ``output`` (numpy, float64)."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if output is TokenScore.LOG_PROB:
        return lp
    if output is TokenScore.PROB:
        return np.exp(lp)
    with np.errstate(divide="ignore"):
        return lp - np.log(-np.expm1(lp))


def clean_token(tokenizer: Any, token_id: int) -> str:
    """A readable string for one token id: decoded, stripped, no ``Ġ``/``▁``/``##``."""
    text = str(tokenizer.decode([int(token_id)])).strip()
    if text and "\ufffd" not in text:
        return text
    raw = tokenizer.convert_ids_to_tokens(int(token_id))
    raw = str(raw).replace("\u0120", " ").replace("\u2581", " ").removeprefix("##").strip()
    return raw or text or str(int(token_id))


def _device_of(model: Any, device: Any) -> Any:
    import torch

    if device is not None:
        return torch.device(device)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _tokenize_reference(tokenizer: Any, caption: str) -> CaptionTokens:
    if not isinstance(caption, str):
        raise ParameterError(f"caption: expected a str, got {type(caption).__name__}")
    ids = list(tokenizer(caption, add_special_tokens=False)["input_ids"])
    return CaptionTokens(text=caption, ids=tuple(ids), names=tuple(clean_token(tokenizer, i) for i in ids))


def _check_reference(reference: CaptionTokens) -> None:
    if not isinstance(reference, CaptionTokens):
        raise ModelInputError(
            f"reference: expected CaptionTokens (from scorer.tokenize), got {type(reference).__name__}"
        )
    if len(reference) == 0:
        raise ModelInputError("reference: the caption has no tokens; nothing to score")


class TeacherForcingScorer:
    """Teacher-forced token scores of the reference caption given another caption.

    For caption ``c`` of a masked image and reference tokens ``r_1..r_T``, the
    score of token ``t`` is ``log p(r_t | c, r_<t)`` under a language model:

    * seq2seq (BART, T5, ...): ``c`` is the encoder input; the decoder reads
      ``[decoder_start] + r_<t``, exactly like shap's ``TeacherForcing``.
    * causal (GPT-2, ...): the input is ``c + [sep] + r``, where ``sep`` is
      the tokenizer's BOS (else EOS) token, so an empty caption still gives a
      well-defined context.

    Captions are scored in batches of ``batch_size`` in one forward pass each
    (right-padded with attention masks).

    Args:
        model: a transformers ``PreTrainedModel`` with an LM head.
        tokenizer: its tokenizer.
        output: ``"log_prob"`` (default), ``"prob"`` or ``"log_odds"``.
        batch_size: captions per forward pass.
        device: torch device (default: the model's).
        max_context_tokens: longest caption context kept (left-truncated).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        output: TokenScore | str = TokenScore.LOG_PROB,
        batch_size: int = 64,
        device: Any = None,
        max_context_tokens: int = 64,
    ) -> None:
        if not hasattr(model, "config") or not callable(model):
            raise ModelInputError(f"model: expected a transformers PreTrainedModel, got {type(model).__name__}")
        if int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.output = TokenScore(output)
        self.batch_size = int(batch_size)
        self.device = _device_of(model, device)
        self.max_context_tokens = int(max_context_tokens)
        self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
        if self.is_encoder_decoder:
            start = getattr(model.config, "decoder_start_token_id", None)
            if start is None:
                start = getattr(model.config, "bos_token_id", None)
            if start is None:
                raise ModelInputError("model: the seq2seq config has no decoder_start_token_id or bos_token_id")
            self._start = int(start)
        else:
            sep = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
            if sep is None:
                raise ModelInputError("tokenizer: a causal LM scorer needs a BOS or EOS token to separate the captions")
            self._sep = int(sep)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._pad = int(pad) if pad is not None else 0

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs: Any) -> TeacherForcingScorer:
        """Load a seq2seq or causal LM and its tokenizer with transformers' ``from_pretrained``."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        config = AutoConfig.from_pretrained(name_or_path)
        auto = AutoModelForSeq2SeqLM if getattr(config, "is_encoder_decoder", False) else AutoModelForCausalLM
        return cls(auto.from_pretrained(name_or_path).eval(), AutoTokenizer.from_pretrained(name_or_path), **kwargs)

    def tokenize(self, caption: str) -> CaptionTokens:
        """Tokenise the reference caption (no special tokens)."""
        return _tokenize_reference(self.tokenizer, caption)

    def score(self, reference: CaptionTokens, captions: Sequence[str]) -> np.ndarray:
        """Teacher-forced scores, float32 ``(len(captions), T)``."""
        _check_reference(reference)
        captions = [str(c) for c in captions]
        if not captions:
            return np.zeros((0, len(reference)), np.float32)
        out = [
            self._score_batch(reference, captions[i : i + self.batch_size])
            for i in range(0, len(captions), self.batch_size)
        ]
        return token_scores(np.concatenate(out, axis=0), self.output).astype(np.float32)

    def _score_batch(self, reference: CaptionTokens, captions: list[str]) -> np.ndarray:
        import torch

        ref = torch.tensor(reference.ids, dtype=torch.long, device=self.device)
        with model_guard(self.model), torch.no_grad():
            if self.is_encoder_decoder:
                enc = self.tokenizer(
                    captions, padding=True, truncation=True, max_length=self.max_context_tokens, return_tensors="pt"
                ).to(self.device)
                start = torch.tensor([self._start], dtype=torch.long, device=self.device)
                decoder_input = torch.cat([start, ref[:-1]]).expand(len(captions), -1)
                logits = self.model(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=decoder_input
                ).logits
                log_probs = torch.log_softmax(logits.double(), dim=-1)
                picked = log_probs.gather(2, ref.expand(len(captions), -1).unsqueeze(-1)).squeeze(-1)
            else:
                contexts = [
                    ids[-self.max_context_tokens :] if self.max_context_tokens > 0 else []
                    for ids in self.tokenizer(captions, add_special_tokens=False)["input_ids"]
                ]
                rows = [[*list(ids), self._sep, *list(reference.ids)] for ids in contexts]
                width = max(len(r) for r in rows)
                input_ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for i, r in enumerate(rows):
                    input_ids[i, : len(r)] = torch.tensor(r)
                    mask[i, : len(r)] = 1
                logits = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits
                log_probs = torch.log_softmax(logits.double(), dim=-1)
                t = len(reference)
                # row i: reference token j sits at len(context_i) + 1 + j, predicted one position earlier
                pos = torch.tensor([[len(c) + j for j in range(t)] for c in contexts], device=self.device)
                rows_idx = torch.arange(len(rows), device=self.device)[:, None]
                picked = log_probs[rows_idx, pos, ref.expand(len(rows), -1)]
        return picked.cpu().numpy()

    def describe(self) -> dict[str, Any]:
        """JSON provenance (model name, kind, output)."""
        return {
            "type": type(self).__name__,
            "model": str(getattr(self.model.config, "_name_or_path", "") or type(self.model).__name__),
            "architecture": type(self.model).__name__,
            "kind": "seq2seq" if self.is_encoder_decoder else "causal",
            "output": self.output.value,
        }

    def __repr__(self) -> str:
        d = self.describe()
        return f"TeacherForcingScorer({d['architecture']}, kind={d['kind']!r}, output={d['output']!r})"


class EmbeddingSimilarityScorer:
    """Per-token greedy cosine similarity between token embeddings (BERTScore recall).

    Reference token ``t`` scores ``max_j cos(e(r_t), e(c_j))`` over the tokens
    ``c_j`` of the masked image's caption (Zhang et al. 2020,
    https://arxiv.org/abs/1904.09675); 0 for an empty caption. With
    ``layer=None`` the embeddings are the model's input word embeddings (context
    free: a token present in the caption scores exactly 1); with an int, the
    hidden states of that layer (contextual; of the encoder for seq2seq models).

    Args:
        model: a transformers model (BERT, BART, GPT-2, ...).
        tokenizer: its tokenizer.
        layer: hidden-state layer index (default -1, the last), or None.
        batch_size: captions per forward pass.
        device: torch device (default: the model's).
    """

    def __init__(
        self, model: Any, tokenizer: Any, *, layer: int | None = -1, batch_size: int = 64, device: Any = None
    ) -> None:
        if int(batch_size) <= 0:
            raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.layer = None if layer is None else int(layer)
        self.batch_size = int(batch_size)
        self.device = _device_of(model, device)

    def tokenize(self, caption: str) -> CaptionTokens:
        """Tokenise the reference caption (no special tokens)."""
        return _tokenize_reference(self.tokenizer, caption)

    def _forward(self, **inputs: Any) -> Any:
        encoder = self.model.get_encoder() if getattr(self.model.config, "is_encoder_decoder", False) else self.model
        return encoder(**inputs, output_hidden_states=True).hidden_states[self.layer].double()

    def _embed_ids(self, ids: Sequence[int]) -> Any:
        """Unit-norm ``(L, D)`` embeddings of one token list, without special tokens."""
        import torch

        x = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        if self.layer is None:
            emb = self.model.get_input_embeddings()(x[0]).double()
        else:
            emb = self._forward(input_ids=x, attention_mask=torch.ones_like(x))[0]
        return torch.nn.functional.normalize(emb, dim=-1)

    def _embed_texts(self, texts: list[str]) -> list[Any]:
        """Unit-norm ``(L_i, D)`` embeddings of each text's tokens (special tokens give context, then are dropped)."""
        import torch

        result: list[Any] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start : start + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, return_special_tokens_mask=True, return_tensors="pt")
            keep = (enc["attention_mask"] == 1) & (enc["special_tokens_mask"] == 0)
            if self.layer is None:
                hidden = self.model.get_input_embeddings()(enc["input_ids"].to(self.device)).double()
            else:
                hidden = self._forward(
                    input_ids=enc["input_ids"].to(self.device), attention_mask=enc["attention_mask"].to(self.device)
                )
            for i in range(len(chunk)):
                emb = hidden[i, keep[i].to(self.device)]
                result.append(torch.nn.functional.normalize(emb, dim=-1))
        return result

    def score(self, reference: CaptionTokens, captions: Sequence[str]) -> np.ndarray:
        """Greedy-match cosine similarities, float32 ``(len(captions), T)``."""
        import torch

        _check_reference(reference)
        captions = [str(c) for c in captions]
        if not captions:
            return np.zeros((0, len(reference)), np.float32)
        out = np.zeros((len(captions), len(reference)), np.float64)
        with model_guard(self.model), torch.no_grad():
            ref, *cands = self._embed_texts([reference.text, *captions])
            enc = self.tokenizer(reference.text, return_special_tokens_mask=True)
            content = [i for i, m in zip(enc["input_ids"], enc["special_tokens_mask"], strict=True) if not m]
            if content != list(reference.ids):  # the text does not re-tokenise to the same ids
                ref = self._embed_ids(reference.ids)
            for i, cand in enumerate(cands):
                if len(cand):
                    out[i] = torch.matmul(ref, cand.T).max(dim=1).values.cpu().numpy()
        return out.astype(np.float32)

    def describe(self) -> dict[str, Any]:
        """JSON provenance."""
        return {
            "type": type(self).__name__,
            "model": str(
                getattr(getattr(self.model, "config", None), "_name_or_path", "") or type(self.model).__name__
            ),
            "layer": "input" if self.layer is None else self.layer,
        }

    def __repr__(self) -> str:
        return f"EmbeddingSimilarityScorer({type(self.model).__name__}, layer={self.describe()['layer']!r})"


_WORD = re.compile(r"[\w']+")


class WordMatchScorer:
    """1.0 for each reference word that occurs in the caption (case-insensitive), else 0.0.

    Token ids are word positions. No dependencies: for tests and quick looks.
    """

    def tokenize(self, caption: str) -> CaptionTokens:
        """Split the reference caption into words."""
        words = _WORD.findall(str(caption))
        return CaptionTokens(text=str(caption), ids=tuple(range(len(words))), names=tuple(words))

    def score(self, reference: CaptionTokens, captions: Sequence[str]) -> np.ndarray:
        """float32 ``(len(captions), T)`` of 0/1."""
        _check_reference(reference)
        wanted = [n.lower() for n in reference.names]
        out = np.zeros((len(captions), len(wanted)), np.float32)
        for i, caption in enumerate(captions):
            present = {w.lower() for w in _WORD.findall(str(caption))}
            out[i] = [w in present for w in wanted]
        return out

    def describe(self) -> dict[str, Any]:
        """JSON provenance."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        return "WordMatchScorer()"
