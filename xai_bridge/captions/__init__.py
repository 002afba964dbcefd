"""Explain image captions: which pixels make each word of the caption.

:func:`explain_caption` (in ``explain.py``) runs any perturbation method on
:class:`CaptionScoreModel` (in ``model.py``), a captioner plus a scorer seen
as a model with one output per caption token. Only numpy and Pillow are
imported here.
"""

from __future__ import annotations

from .explain import BUDGET_PARAMS, explain_caption
from .model import CaptionScoreModel, fit_max_side

__all__ = ["BUDGET_PARAMS", "CaptionScoreModel", "explain_caption", "fit_max_side"]
