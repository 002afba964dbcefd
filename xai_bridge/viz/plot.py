"""Figures with the one colour rule (see :mod:`xai_bridge.viz.colors`) and a colour bar that states it.

Every function returns a ``matplotlib.figure.Figure`` built with the object
API (no pyplot state, nothing shown, no window opened in scripts); it displays
itself in Jupyter (it has ``_repr_png_``), and ``fig.savefig(path)`` saves it.
Libraries normalise differently (shap clips at the 99.9th percentile, captum
at ``outlier_perc=2``, grad-cam min-max per image); here one rule is applied
identically to every map of a figure: signed methods on a diverging red/blue
scale centred at zero, unsigned ones on a sequential scale, near-zero values
transparent. Pass ``norm=`` to choose ``abs``/``positive``/``signed`` yourself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

from ._colour_bars import colour_bars
from ._figure import PANEL_LABEL, PLOT_MAX_SIDE, TEXT, empty_figure, figure_png, new_figure, non_finite_note
from ._grid import MapScale, comparison_grid
from ._overlay import Style, overlay
from ._text import score_text, shown_label
from ._thumbs import at_display_size, display_size, fit_image, fit_map
from .colors import DEFAULT_OPACITY, ColorRule, non_finite_count, rule_for
from .outlines import draw_outlines

__all__ = [
    "PANEL_LABEL",
    "PLOT_MAX_SIDE",
    "MapScale",
    "Style",
    "caption_plot",
    "comparison_grid",
    "explanation_plot",
    "figure_png",
    "overlay",
]


def explanation_plot(
    explanation: Explanation,
    images: int | Sequence[int] | None = None,
    *,
    norm: Norm | str | None = None,
    percentile: float | None = 99.0,
    alpha: float = DEFAULT_OPACITY,
    panel_size: float = 2.4,
    max_images: int = 4,
) -> Any:
    """One Explanation: rows are images, columns the image then each target's map.

    Args:
        explanation: the Explanation.
        images: image indices to draw (default: the first ``max_images``).
        norm: the normalisation (None: the method's own kind, see :func:`comparison_grid`).
        percentile: clip at this percentile of ``|value|``.
        alpha: opacity at the clip value.
        panel_size: inches per panel.
        max_images: how many images are drawn when ``images`` is None.

    Returns:
        The ``Figure`` (titles: target name and probability or score; one colour bar stating the rule).
    """
    rows = list(range(min(explanation.n_images, max_images))) if images is None else list(np.atleast_1d(images))
    if not rows or not explanation.n_targets:
        return empty_figure(
            f"{explanation.method}: nothing to show ({explanation.n_images} image(s) x {explanation.n_targets} target(s))"
        )
    rule = rule_for(explanation, norm, percentile)
    n_cols = 1 + explanation.n_targets
    fig = new_figure((panel_size * n_cols + 1.0, panel_size * len(rows) + 0.5))
    axes = fig.subplots(len(rows), n_cols, squeeze=False)
    h, w = explanation.images.shape[1:3]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)  # original pixel coordinates, so boxes and regions stay in place
    size = display_size(h, w, min(max(h, w), PLOT_MAX_SIDE))
    for r, n in enumerate(rows):
        image = fit_image(explanation.images[n], size)
        axes[r, 0].imshow(image, extent=extent)
        axes[r, 0].set_title("image" if r == 0 else "", fontsize=9)
        normed = rule.normalise(np.stack([fit_map(m, size) for m in explanation.attributions[n]]))
        for t in range(explanation.n_targets):
            ax = axes[r, t + 1]
            ax.imshow(overlay(image, normed[t], alpha=alpha, signed=rule.signed), extent=extent)
            draw_outlines(ax, explanation, n, t)
            title = f"{shown_label(explanation.target_names[n, t], PANEL_LABEL)}\n{score_text(explanation, n, t)}"
            ax.set_title(title, fontsize=8, **TEXT)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"{shown_label(explanation.method, 60)} ({explanation.seconds:.2f} s, {explanation.n_model_evals} evaluations)",
        fontsize=9,
        **TEXT,
    )
    non_finite_note(fig, "plot", {explanation.method: sum(non_finite_count(explanation.attributions[n]) for n in rows)})
    colour_bars(fig, axes, {explanation.method: rule}, None)
    return fig


def caption_plot(
    explanation: Explanation,
    image: int = 0,
    *,
    norm: Norm | str = Norm.SIGNED,
    percentile: float | None = 99.9,
    columns: int = 6,
    panel_size: float = 2.0,
    alpha: float = DEFAULT_OPACITY,
) -> Any:
    """One panel per caption token (seed 000): the image, then each token's map.

    All tokens share one scale (the rule is shap's: signed, clipped at the
    99.9th percentile), so tokens can be compared.
    """
    shown, extent = at_display_size({"": explanation[image]}, PLOT_MAX_SIDE)  # a slice is a view: one image shrunk
    exp = shown[""]
    if not exp.n_targets:
        return empty_figure(f"{exp.method}: nothing to show (0 tokens)")
    bad = non_finite_count(explanation.attributions[image])
    rule = ColorRule(Norm(norm), percentile, "tokens")
    normed = rule.normalise(exp.attributions[0], shared=True)
    n = 1 + exp.n_targets
    rows = -(-n // columns)
    fig = new_figure((panel_size * min(n, columns) + 0.9, panel_size * rows + 0.3))
    axes = fig.subplots(rows, min(n, columns), squeeze=False)
    axes.flat[0].imshow(exp.images[0], extent=extent)
    axes.flat[0].set_title("image", fontsize=9)
    for t in range(exp.n_targets):
        ax = axes.flat[t + 1]
        ax.imshow(overlay(exp.images[0], normed[t], alpha=alpha, signed=rule.signed), extent=extent)
        draw_outlines(ax, exp, 0, t)
        ax.set_title(shown_label(exp.target_names[0, t], PANEL_LABEL), fontsize=9, **TEXT)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    colour_bars(fig, axes, {exp.method: rule}, None)
    non_finite_note(fig, "caption_plot", {exp.method: bad})
    return fig
