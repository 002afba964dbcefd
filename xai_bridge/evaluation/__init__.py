"""Evaluate explanations: faithfulness, localisation and sanity checks in one tidy table."""

from __future__ import annotations

from .metrics import evaluate

__all__ = ["evaluate"]
