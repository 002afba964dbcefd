"""Evaluate explanations: faithfulness, localisation and sanity checks in one tidy table."""

from __future__ import annotations

from .metrics import Box, estimate_evaluations, evaluate

__all__ = ["Box", "estimate_evaluations", "evaluate"]
