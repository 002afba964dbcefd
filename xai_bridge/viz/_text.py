"""Labels shared by the figures, the notebook view and the report: target names, scores, probabilities."""

from __future__ import annotations

import numpy as np

from xai_bridge.explanation import Explanation

#: The extras key where :func:`xai_bridge.explain` keeps the softmax of a logits model's outputs, ``(N, T)``.
PROBABILITY_KEY = "probability"


def safe_text(value: object) -> str:
    """``str(value)`` that any UTF-8 writer accepts.

    File names that are not valid UTF-8 reach Python as lone surrogates
    (``os.fsdecode``); they are shown with U+FFFD instead of failing the write.
    """
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def probabilities(explanation: Explanation) -> np.ndarray | None:
    """``(N, T)`` class probabilities of the targets, where the model's outputs make them known."""
    value = explanation.extras.get(PROBABILITY_KEY)
    return None if value is None else np.asarray(value, np.float64)


def score_text(explanation: Explanation, n: int, t: int) -> str:
    """``"p=0.62"`` where the probability is known, else ``"score 3.14"`` (empty when there is no score)."""
    probs = probabilities(explanation)
    if probs is not None and np.isfinite(probs[n, t]):
        return f"p={probs[n, t]:.2f}"
    score = float(explanation.scores[n, t])
    return f"score {score:.3g}" if np.isfinite(score) else ""
