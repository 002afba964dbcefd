"""Explain what image-to-text models say: captions, answers to questions, tags.

:func:`explain_caption` (in ``explain.py``) runs any perturbation method on
:class:`CaptionScoreModel` (in ``model.py``), a captioner plus a scorer seen
as a model with one output per caption token; :func:`explain_answer` does the
same for the answer to a question (the question is the captioner's prompt).
:class:`TagModel` (in ``tags.py``) is a tagger seen as a classifier over the
tags it finds, and :func:`estimate_calls` the dry run that counts what
explaining a paid API costs. Only numpy and Pillow are imported here.
"""

from __future__ import annotations

from .explain import BUDGET_PARAMS, explain_answer, explain_caption
from .model import CaptionScoreModel, fit_max_side
from .tags import CallEstimate, TagModel, estimate_calls

__all__ = [
    "BUDGET_PARAMS",
    "CallEstimate",
    "CaptionScoreModel",
    "TagModel",
    "estimate_calls",
    "explain_answer",
    "explain_caption",
    "fit_max_side",
]
