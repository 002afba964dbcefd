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

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm

from ._figure import TEXT, empty_figure, figure_png, new_figure, non_finite_note
from ._text import score_text, shown_label
from ._thumbs import at_display_size, display_size, fit_image, fit_map
from .colors import (
    BLUE,
    DEFAULT_OPACITY,
    RED,
    ColorRule,
    colorize,
    mark_non_finite,
    non_finite_count,
    rule_for,
    sequential_lut,
)
from .outlines import draw_outlines

__all__ = ["MapScale", "Style", "caption_plot", "comparison_grid", "explanation_plot", "figure_png", "overlay"]


class Style(str, enum.Enum):
    """How a map is drawn over its image."""

    HEAT = "heat"  # the colour rule: diverging for signed maps, sequential otherwise, opacity growing with |value|
    SIGNED = "signed"  # the diverging red (for) / blue (against) scale, whatever the method
    MASKED = "masked"  # the image dimmed where the map is low
    OUTLINE = "outline"  # the outline of the top region (seed 002's GradVisualizer)


class MapScale(str, enum.Enum):
    """Which maps share one scale under the normalisation rule."""

    MAP = "map"  # each map its own scale (the same rule everywhere)
    METHOD = "method"  # one scale per method (column) across images
    FIGURE = "figure"  # one scale for the whole figure


def overlay(
    image: np.ndarray,
    norm_map: np.ndarray,
    style: Style | str = Style.HEAT,
    cmap: str | None = None,
    alpha: float = DEFAULT_OPACITY,
    top_percent: float = 10.0,
    signed: bool | None = None,
) -> np.ndarray:
    """Blend an already normalised map (in [0, 1], or [-1, 1] when signed) over an image.

    Args:
        image: uint8 ``(H, W, 3)``.
        norm_map: ``(H, W)`` normalised map.
        style: a :class:`Style`.
        cmap: a matplotlib colour map for unsigned HEAT maps instead of the default sequential scale.
        alpha: opacity at ``|value| = 1`` (HEAT, SIGNED); it falls to 0 at 0, so zero shows the image.
        top_percent: share of pixels outlined (OUTLINE).
        signed: HEAT only: diverging (True) or sequential (False); None: signed if any value is negative.

    Returns:
        float ``(H, W, 3)`` RGB in [0, 1].
    """
    m = np.asarray(norm_map, np.float32)
    bad = ~np.isfinite(m)  # NaN / inf: drawn hatched whatever the style
    return mark_non_finite(_overlay(image, np.where(bad, 0, m), Style(style), cmap, alpha, top_percent, signed), bad)


def _overlay(
    image: np.ndarray,
    m: np.ndarray,
    style: Style,
    cmap: str | None,
    alpha: float,
    top_percent: float,
    signed: bool | None,
) -> np.ndarray:
    """:func:`overlay` of a finite map."""
    img = image.astype(np.float32) / 255.0
    if style in (Style.HEAT, Style.SIGNED):
        is_signed = style is Style.SIGNED or (bool((m < 0).any()) if signed is None else signed)
        if cmap is not None and not is_signed:
            from matplotlib import colormaps

            colour = colormaps[cmap](np.clip(m, 0, 1))[..., :3]
            a = float(alpha) * np.clip(m, 0, 1)[..., None]
            return ((1 - a) * img + a * colour).astype(np.float64)
        return colorize(image, m, is_signed, alpha).astype(np.float64) / 255.0
    if style is Style.MASKED:
        return img * np.clip(m, 0, 1)[..., None]
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(m, sigma=max(1.0, min(m.shape) / 56))  # regions, not speckle (GradVisualizer)
    region = smooth >= np.percentile(smooth, 100 - top_percent)
    edge = region & ~ndimage.binary_erosion(region, iterations=max(1, min(m.shape) // 112))
    out = img * 0.8
    out[edge] = (0.0, 1.0, 0.0)
    return out


#: Longest side, in pixels, at which figures draw an image and its maps (a 12-MP photo is shrunk first): a
#: 2.4-inch panel saved at 200 dpi is 480 pixels wide, and the figure keeps every panel's pixels in memory.
PLOT_MAX_SIDE = 512
#: Characters of a label drawn above or below one panel (longer ones end in an ellipsis; panels do not overlap).
PANEL_LABEL = 22


def _bar_cmap(signed: bool, cmap: str | None = None) -> Any:
    """The colour bar's map: how a value looks at full opacity over white (transparent = white)."""
    from matplotlib.colors import ListedColormap

    if signed:
        v = np.linspace(-1, 1, 256)[:, None]
        colour = np.where(v >= 0, np.asarray(RED, float), np.asarray(BLUE, float)) / 255.0
        a = np.abs(v) * DEFAULT_OPACITY
    else:
        v = np.linspace(0, 1, 256)[:, None]
        if cmap is None:
            colour = sequential_lut().astype(float) / 255.0
        else:
            from matplotlib import colormaps

            colour = colormaps[cmap](v[:, 0])[:, :3]
        a = v * DEFAULT_OPACITY
    return ListedColormap((1 - a) + a * colour)


def _colour_bars(fig: Any, axes: Any, rules: Mapping[str, ColorRule], cmap: str | None) -> None:
    """One colour bar per kind of rule in the figure (signed, unsigned), each stating the rule."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    kinds: dict[tuple[bool, str], list[str]] = {}
    for name, rule in rules.items():
        kinds.setdefault((rule.signed, rule.label()), []).append(name)
    for (signed, label), names in kinds.items():
        if len(kinds) > 1:  # mixed figure: say which methods each bar is for
            label = f"{', '.join(shown_label(n.split('.')[-1], 40) for n in names)}:\n{label}"
        bar = fig.colorbar(
            ScalarMappable(Normalize(-1.0 if signed else 0.0, 1.0), _bar_cmap(signed, cmap)),
            ax=axes.ravel().tolist(),
            shrink=0.8,
            pad=0.02,
        )
        bar.set_label(
            label.replace(", clipped", ",\nclipped"), fontsize=7, **TEXT
        )  # two short lines fit beside the bar
        bar.ax.tick_params(labelsize=7)


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
    columns: list[tuple[str, int]] = []
    for name, exp in exps.items():
        columns += [(name, t) for t in (range(exp.n_targets) if per_target else [0])]
    normed = _normalised(exps, rules, per_target, scale)
    n_rows, n_cols = first.n_images, 1 + len(columns)
    n_kinds = len({r.signed for r in rules.values()})
    fig = new_figure((panel_size * n_cols + 0.9 * n_kinds, panel_size * n_rows + 0.4))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    _draw_panels(axes, exps, columns, normed, rules, per_target, style, cmap, alpha, titles, extent)
    non_finite_note(fig, "comparison_grid", counts)
    if style in (Style.HEAT, Style.SIGNED):
        _colour_bars(fig, axes, rules, cmap)
    kinds = {r.norm.value for r in rules.values()}
    fig.xai_bridge_norm = {
        "norm": kinds.pop() if len(kinds) == 1 else {n: r.norm.value for n, r in rules.items()},
        "percentile": percentile,
        "scale": scale.value,
    }
    return fig


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
    _colour_bars(fig, axes, {explanation.method: rule}, None)
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
    shown, extent = at_display_size({"": explanation}, PLOT_MAX_SIDE)  # before slicing: a slice copies
    exp = shown[""][image]
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
    _colour_bars(fig, axes, {exp.method: rule}, None)
    non_finite_note(fig, "caption_plot", {exp.method: bad})
    return fig
