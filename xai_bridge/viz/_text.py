"""Labels shared by the figures, the notebook view and the report: target names, scores, probabilities."""

from __future__ import annotations

import unicodedata

import numpy as np

from xai_bridge.explanation import Explanation

#: The extras key where :func:`xai_bridge.explain` keeps the softmax of a logits model's outputs, ``(N, T)``.
PROBABILITY_KEY = "probability"
#: The extras key saying what made those probabilities: ``"softmax"``, ``"sigmoid"`` (multi-label) or ``"model"``.
PROBABILITY_FROM_KEY = "probability_from"


def safe_text(value: object) -> str:
    """``str(value)`` that any UTF-8 writer accepts.

    File names that are not valid UTF-8 reach Python as lone surrogates
    (``os.fsdecode``); they are shown with U+FFFD instead of failing the write.
    """
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


#: Longest label a view draws; longer ones are cut with an ellipsis (a remote API may answer a page of text).
MAX_LABEL = 80
#: Bidirectional embedding, override and isolate controls: they would reorder the text drawn after a label.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def shown_label(value: object, limit: int = MAX_LABEL) -> str:
    """``value`` as one inert line of at most ``limit`` characters, for every view that draws text.

    Labels, captions, tags and answers come from users and remote APIs:
    control characters, line and paragraph separators become spaces,
    bidirectional overrides are dropped (right-to-left letters stay), and a
    long text is cut with an ellipsis. Escaping for HTML, JSON or mathtext
    stays the job of each view; this only makes the text one short line.
    """
    text = safe_text(value)
    cleaned = "".join(
        " " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text if c not in _BIDI_CONTROLS
    )
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "\u2026"


def library_text(explanation: Explanation) -> str:
    """The library and its version, the version left out where it only repeats the name (``builtin``)."""
    version = explanation.library_version
    return explanation.library if version in ("", explanation.library) else f"{explanation.library} {version}"


def probabilities(explanation: Explanation) -> np.ndarray | None:
    """``(N, T)`` class probabilities of the targets, where the model's outputs make them known."""
    value = explanation.extras.get(PROBABILITY_KEY)
    return None if value is None else np.asarray(value, np.float64)


def probability_source(explanation: Explanation, n: int = 0, t: int = 0) -> str | None:
    """What made the probability of target ``t`` of image ``n``: ``"softmax"``, ``"sigmoid"``, ``"model"`` or None."""
    value = explanation.extras.get(PROBABILITY_FROM_KEY)
    return None if value is None else str(value[n, t])


def score_text(explanation: Explanation, n: int, t: int) -> str:
    """``"p=0.62"`` where the probability is known, else ``"score 3.14"`` (empty when there is no score).

    A multi-label model's independent sigmoid is said: ``"p=0.62 (sigmoid)"``,
    so nobody reads it as a share of a softmax that sums to one.
    """
    probs = probabilities(explanation)
    if probs is not None and np.isfinite(probs[n, t]):
        sigmoid = " (sigmoid)" if probability_source(explanation, n, t) == "sigmoid" else ""
        return f"p={probs[n, t]:.2f}{sigmoid}"
    score = float(explanation.scores[n, t])
    return f"score {score:.3g}" if np.isfinite(score) else ""
