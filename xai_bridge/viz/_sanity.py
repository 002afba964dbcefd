"""The report's sanity-check section: does each method's map change when the model is randomised?

Adebayo et al. 2018 ("Sanity checks for saliency maps") re-initialise a
network's weights from the top down and compare the maps: a map that stays
the same explains the image (edges, colours), not what the model learned.
:func:`sanity_rows` runs the full cascade
(:func:`~xai_bridge.evaluation._randomisation.cascading_randomisation`) once
per method and :func:`sanity_html` renders the Spearman values, marking the
methods at or above :data:`SIMILAR` as not depending on the model's weights.
It costs one extra explanation per method, so the report runs it only when asked.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation

__all__ = ["SIMILAR", "sanity_html", "sanity_rows"]

#: A mean Spearman at or above this after the full cascade marks a map as unchanged by randomisation.
SIMILAR = 0.5


def sanity_rows(items: Sequence[tuple[str, Explanation]], model: Any, seed: int = 0) -> list[tuple[str, float, bool]]:
    """``(name, mean Spearman after the full cascade, unchanged?)`` per explanation.

    Raises:
        ParameterError: no torch ``model`` to randomise.
    """
    if model is None or not hasattr(model, "pixel_module"):
        got = "nothing" if model is None else type(model).__name__
        raise ParameterError(
            f"model: sanity=True re-runs each method on randomised copies of a torch model, got {got}; "
            "pass model=<the TorchModel the explanations were made with>"
        )
    from xai_bridge.evaluation._randomisation import cascading_randomisation

    rows = []
    for name, exp in items:
        values = cascading_randomisation(model, exp, seed=seed)
        mean = float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")
        rows.append((name, mean, bool(mean >= SIMILAR)))
    return rows


def sanity_html(rows: Sequence[tuple[str, float, bool]]) -> str:
    """The section: one row per method, the unchanged ones marked."""
    if not rows:
        return ""
    body = []
    for name, value, unchanged in rows:
        verdict = (
            "<b style='color:#b00020'>&#9888; unchanged when the model is randomised</b>"
            if unchanged
            else "changes with the weights"
        )
        shown = "n/a (a constant map)" if np.isnan(value) else f"{value:.2f}"
        body.append(f"<tr><th class='l'>{html.escape(name)}</th><td>{shown}</td><td class='l'>{verdict}</td></tr>")
    return (
        "<h2>Sanity check</h2><p class='note'>Cascading randomisation (Adebayo et al. 2018): every layer "
        "of a copy of the model re-initialised from the top down, each method re-run on it, and the Spearman rank "
        "correlation of the maps (summed absolute values over colour channels, as the paper compares them; mean over "
        f"images and targets). At {SIMILAR} or above the map does not depend "
        "on what the model learned.</p><table><tr><th class='l'>method</th><th>Spearman after the full cascade</th>"
        "<th class='l'>verdict</th></tr>" + "".join(body) + "</table>"
    )
