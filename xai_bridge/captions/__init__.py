"""Explain what image-to-text models say: captions, answers to questions, tags.

``protocols.py`` says what a captioner and a caption scorer are
(:class:`Captioner`, :class:`CaptionScorer`, :class:`CaptionTokens`; the
implementations that need a third-party library live in
:mod:`xai_bridge.adapters.captioners`). :func:`explain_caption` (in
``explain.py``) runs any perturbation method on :class:`CaptionScoreModel`
(in ``model.py``), a captioner plus a scorer seen as a model with one output
per caption token; :func:`explain_answer` does the same for the answer to a
question (the question is the captioner's prompt). :class:`TagModel` (in
``tags.py``) is a tagger seen as a classifier over the tags it finds, and
:func:`estimate_calls` the dry run that counts what explaining a paid API
costs. Only numpy and Pillow are imported here.
"""

from __future__ import annotations

from typing import Any

from .explain import BUDGET_PARAMS, explain_answer, explain_caption
from .model import CaptionScoreModel, fit_max_side
from .protocols import (
    Captioner,
    CaptionScorer,
    CaptionTokens,
    ConcurrentCaptioner,
    FunctionCaptioner,
    SelfScoringCaptioner,
    as_captioner,
)
from .tags import CallEstimate, estimate_calls

__all__ = [
    "BUDGET_PARAMS",
    "CallEstimate",
    "CaptionScoreModel",
    "CaptionScorer",
    "CaptionTokens",
    "Captioner",
    "ConcurrentCaptioner",
    "FunctionCaptioner",
    "SelfScoringCaptioner",
    "TagModel",
    "as_captioner",
    "estimate_calls",
    "explain_answer",
    "explain_caption",
    "fit_max_side",
]


def __getattr__(name: str) -> Any:
    """``TagModel`` (a model adapter, in :mod:`xai_bridge.adapters.models.tags`), imported on first access."""
    if name == "TagModel":
        import importlib

        return importlib.import_module("xai_bridge.adapters.models.tags").TagModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
