"""The comparison grid: rows are images, columns the image then each method (and target), on one scale rule.

:func:`comparison_grid` is re-exported by :mod:`xai_bridge.viz.plot`. All
explanations must be of the same images (compared a strip of rows at a
time, so a 12-megapixel stack makes no full-size temporary).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

from ._colour_bars import colour_bars
from ._figure import PANEL_LABEL, PLOT_MAX_SIDE, TEXT, empty_figure, new_figure, non_finite_note
from ._overlay import Style, overlay
from ._text import shown_label
from ._thumbs import at_display_size
from .colors import DEFAULT_OPACITY, ColorRule, non_finite_count, rule_for
from .outlines import draw_outlines

__all__ = ["MapScale", "comparison_grid"]


class MapScale(str, enum.Enum):
    """Which maps share one scale under the normalisation rule."""

    MAP = "map"  # each map its own scale (the same rule everywhere)
    METHOD = "method"  # one scale per method (column) across images
    FIGURE = "figure"  # one scale for the whole figure


def _collect(explanations: Mapping[str, Explanation] | Sequence[Explanation]) -> dict[str, Explanation]:
    if isinstance(explanations, Explanation):
        return {explanations.method: explanations}
    if isinstance(explanations, Mapping):
        return dict(explanations)
    return {exp.method: exp for exp in explanations}


def comparison_grid(
    explanations: Mapping[str, Explanation] | Sequence[Explanation],
    *,
    per_target: bool = False,
    style: Style | str = Style.HEAT,
    norm: Norm | str | None = None,
    percentile: float | None = 99.0,
    scale: MapScale | str = MapScale.MAP,
    cmap: str | None = None,
    alpha: float = DEFAULT_OPACITY,
    panel_size: float = 2.2,
    titles: bool = True,
) -> Any:
    """Rows are images, columns the image then each method (and target with ``per_target``).

    Args:
        explanations: ``{name: Explanation}`` or a list; all over the same images.
        per_target: one column per method and target (else the first target).
        style: overlay style.
        norm: the normalisation of every map; None: each method's own kind
            (signed methods ``Norm.SIGNED``, others ``Norm.ABS``, see
            :func:`~xai_bridge.viz.colors.signed_maps`).
        percentile: clip at this percentile of ``|value|`` before scaling (None: the maximum).
        scale: which maps share one scale (see :class:`MapScale`).
        cmap: a matplotlib colour map for unsigned maps instead of the default sequential scale.
        alpha: opacity at the clip value (HEAT, SIGNED).
        panel_size: inches per panel.
        titles: method (and target) titles on the first row, target names below.

    Returns:
        The ``Figure``; ``fig.xai_bridge_norm`` records the rule used.
    """
    given = _same_images(explanations)
    exps = {name: exp for name, exp in given.items() if exp.n_targets}  # 0 targets: nothing to draw for it
    first = next(iter(given.values()))
    if not exps or not first.n_images:
        return empty_figure(
            f"nothing to show: {first.n_images} image(s), no targets in {len(given) - len(exps)} of {len(given)}"
        )
    scale, style = MapScale(scale), Style(style)
    if style is Style.SIGNED:
        norm = Norm.SIGNED
    rules = {name: rule_for(exp, norm, percentile, scale.value) for name, exp in exps.items()}
    counts = {name: non_finite_count(exp.attributions) for name, exp in exps.items()}
    exps, extent = at_display_size(exps, PLOT_MAX_SIDE)
    columns = [(name, t) for name, exp in exps.items() for t in (range(exp.n_targets) if per_target else [0])]
    normed = _normalised(exps, rules, per_target, scale)
    n_rows, n_cols = first.n_images, 1 + len(columns)
    n_kinds = len({r.signed for r in rules.values()})
    fig = new_figure((panel_size * n_cols + 0.9 * n_kinds, panel_size * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    _draw_panels(axes, exps, columns, normed, rules, per_target, style, cmap, alpha, titles, extent)
    non_finite_note(fig, "comparison_grid", counts)
    if style in (Style.HEAT, Style.SIGNED):
        colour_bars(fig, axes, rules, cmap)
    fig.xai_bridge_norm = _norm_record(rules, percentile, scale)
    return fig


def _norm_record(rules: Mapping[str, ColorRule], percentile: float | None, scale: MapScale) -> dict[str, Any]:
    """What ``fig.xai_bridge_norm`` records: the normalisation (one, or one per method), the clip and the scale."""
    kinds = {r.norm.value for r in rules.values()}
    return {
        "norm": kinds.pop() if len(kinds) == 1 else {n: r.norm.value for n, r in rules.items()},
        "percentile": percentile,
        "scale": scale.value,
    }


def _draw_panels(
    axes: Any,
    exps: Mapping[str, Explanation],
    columns: Sequence[tuple[str, int]],
    normed: Mapping[str, np.ndarray],
    rules: Mapping[str, Any],
    per_target: bool,
    style: Style,
    cmap: str | None,
    alpha: float,
    titles: bool,
    extent: tuple[float, float, float, float] | None = None,
) -> None:
    """Each row: the image, then every (method, target) column's overlay, titled on the first row.

    ``extent``: the original image's pixel coordinates when the images were shrunk (outlines stay in place).
    """
    first = next(iter(exps.values()))
    for i in range(axes.shape[0]):
        axes[i, 0].imshow(first.images[i], extent=extent)
        if titles and i == 0:
            axes[i, 0].set_title("image", fontsize=9, **TEXT)
        for j, (name, t) in enumerate(columns, start=1):
            ax = axes[i, j]
            m = normed[name][i, t if per_target else 0]
            ax.imshow(overlay(first.images[i], m, style, cmap, alpha, signed=rules[name].signed), extent=extent)
            draw_outlines(ax, exps[name], i, t if per_target else 0)
            if titles and i == 0:
                label = shown_label(name, 2 * PANEL_LABEL).replace(".", "\n", 1)  # library on one line, method below
                ax.set_title(label if not per_target else f"{label} [{t}]", fontsize=8, **TEXT)
            ax.set_xlabel(shown_label(exps[name].target_names[i, t], PANEL_LABEL), fontsize=8, **TEXT)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])


def _same_images(explanations: Mapping[str, Explanation] | Sequence[Explanation]) -> dict[str, Explanation]:
    """The named explanations, refusing none and any that explains other images than the first."""
    exps = _collect(explanations)
    if not exps:
        raise ParameterError("explanations: pass at least one Explanation")
    first = next(iter(exps.values()))
    for name, exp in exps.items():
        if not _same_pixels(exp.images, first.images):
            raise ParameterError(f"explanations: {name!r} explains other images than {first.method!r}")
    return exps


def _same_pixels(a: np.ndarray, b: np.ndarray, rows: int = 256) -> bool:
    """Whether two image stacks are equal, compared a strip of rows at a time (no full-size temporary)."""
    if a is b:
        return True
    if a.shape != b.shape:
        return False
    return all(np.array_equal(a[:, r : r + rows], b[:, r : r + rows]) for r in range(0, a.shape[1], rows))


def _normalised(
    exps: Mapping[str, Explanation], rules: Mapping[str, Any], per_target: bool, scale: MapScale
) -> dict[str, np.ndarray]:
    """Each method's shown maps under its rule; with ``MapScale.FIGURE`` one scale per kind of map."""
    normed = {}
    for name, exp in exps.items():
        maps = exp.attributions if per_target else exp.attributions[:, :1]
        normed[name] = rules[name].normalise(maps, shared=scale is not MapScale.MAP)
    if scale is not MapScale.FIGURE:
        return normed
    shape = next(iter(exps.values())).images.shape[1:3]
    for signed in (True, False):  # one scale per kind: a signed and an unsigned scale cannot be shared
        group = [n for n in exps if rules[n].signed is signed]
        if not group:
            continue
        group_maps = [(exps[n].attributions if per_target else exps[n].attributions[:, :1]) for n in group]
        stacked = np.concatenate([m.reshape(-1, *shape) for m in group_maps])
        joint = rules[group[0]].normalise(stacked, shared=True)
        offset = 0
        for name, m in zip(group, group_maps, strict=True):
            size = int(np.prod(m.shape[:2]))
            normed[name] = joint[offset : offset + size].reshape(m.shape)
            offset += size
    return normed
