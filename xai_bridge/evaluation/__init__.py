"""Evaluate explanations: faithfulness, localisation and sanity checks in one tidy table."""

from __future__ import annotations

from .metrics import Box, evaluate

__all__ = ["Box", "evaluate"]
