"""A VLM's answer as a differentiable model of the pixels: one output per answer token.

:class:`AnswerModel` is what :meth:`TransformersVLM.answer_model
<xai_bridge.adapters.captioners.vlm.TransformersVLM.answer_model>` returns:
a :class:`~xai_bridge.adapters.models.TorchModel` whose outputs are the
teacher-forced scores of a fixed reference answer, so gradient methods and
CAMs explain answers as they explain classes. Kept apart from
:mod:`.vlm`, which generates and scores answers; this module is the
bridge from that score to xai-bridge's model protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from xai_bridge.adapters.models.torch import TorchModel

from xai_bridge.models import OutputKind

from .scorers import CaptionTokens, TokenScore, _check_reference

if TYPE_CHECKING:  # pragma: no cover
    from .vlm import TransformersVLM

__all__ = ["AnswerHead", "AnswerModel", "convert_log_probs"]


def convert_log_probs(log_probs: torch.Tensor, output: TokenScore) -> torch.Tensor:
    """Float64 log-probabilities to ``output`` (as :func:`~xai_bridge.adapters.captioners.scorers.token_scores`)."""
    if output is TokenScore.LOG_PROB:
        return log_probs
    if output is TokenScore.PROB:
        return log_probs.exp()
    return log_probs - torch.log(-torch.expm1(log_probs))


class AnswerHead(nn.Module):
    """Preprocessed pixels -> the scores of a fixed reference answer's tokens, ``(N, T)`` float32.

    The user's model is a child (not a copy); the wrapper's own ``training``
    flag stays False, so guards find nothing to switch on it.

    Args:
        vlm: the :class:`TransformersVLM`.
        reference: the answer's tokens.
        prompt: the question.
    """

    def __init__(self, vlm: TransformersVLM, reference: CaptionTokens, prompt: str) -> None:
        super().__init__()
        self.model = vlm.model
        self._vlm = vlm
        self.reference = reference
        self.prompt = prompt
        self.training = False

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # noqa: D102
        dtype = next(self.model.parameters()).dtype
        scores = convert_log_probs(
            self._vlm.token_log_probs(pixel_values.to(dtype), self.reference, self.prompt), self._vlm.output
        )
        return scores.float()


class AnswerModel(TorchModel):
    """A reference answer's token scores as a :class:`~xai_bridge.models.DifferentiableModel` of the pixels.

    Outputs, one per answer token, are ``log p(a_t | image, question, a_<t)``
    (or the VLM's ``output`` kind); ``class_names`` are the token strings.
    ``predict`` equals :meth:`TransformersVLM.score_images`; gradient methods
    differentiate the same computation through the declared preprocessing.
    CAM layers are named inside the model's vision tower (``module``: BLIP's
    ``vision_model``, LLaVA's ``vision_tower``), e.g.
    ``"encoder.layers.1.layer_norm1"``: the automatic choice would otherwise
    find the answer tokens' own sequence, which is no image grid.

    Args:
        vlm: the :class:`TransformersVLM`.
        reference: the answer's tokens.
        prompt: the question.
        batch_size: largest batch of images run at once.
    """

    def __init__(self, vlm: TransformersVLM, reference: CaptionTokens, prompt: str, batch_size: int = 16) -> None:
        _check_reference(reference)
        vlm._prompt_ids(prompt)  # fail now on a missing question
        self._user_model = vlm.model
        self.reference = reference
        self.prompt = prompt
        super().__init__(
            AnswerHead(vlm, reference, prompt),
            vlm.preprocess,
            output_kind=OutputKind.SCORES,
            class_names=list(reference.names),
            batch_size=batch_size,
            tune_batch=False,
        )

    @property
    def module(self) -> nn.Module:
        """The model's vision tower (CAM layer names are relative to it), or the whole model if none is found."""
        return _vision_tower(self._user_model)

    @property
    def user_model(self) -> nn.Module:
        """The user's model."""
        return self._user_model

    def __repr__(self) -> str:
        return (
            f"AnswerModel({type(self._user_model).__name__}, answer={self.reference.text!r}, "
            f"T={len(self.reference)}, preprocess={self.preprocess})"
        )


def _vision_tower(model: nn.Module) -> nn.Module:
    """The first submodule named like a vision tower (``vision_model``, ``vision_tower``, ``visual``)."""
    for name, sub in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("vision_model", "vision_tower", "visual"):
            return sub
    return model
