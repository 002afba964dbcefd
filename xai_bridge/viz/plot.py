"""Side-by-side figures with one explicit normalisation rule and a colour bar.

Every function returns a ``matplotlib.figure.Figure`` built with the object
API (no pyplot state, nothing shown); save it with ``fig.savefig(path)``.
Style is passed as arguments. Libraries normalise differently (shap clips at
the 99.9th percentile, captum at ``outlier_perc=2``, grad-cam min-max per
image); here one rule (:class:`~xai_bridge.Norm` + percentile + scale) is
applied identically to every map of a figure, and the colour bar shows it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.normalize import Norm, normalize

__all__ = ["Scale", "Style", "caption_plot", "comparison_grid", "figure_png", "overlay"]


class Style(str, enum.Enum):
    """How a map is drawn over its image."""

    HEAT = "heat"  # colour map blended over the image
    SIGNED = "signed"  # red (positive) / blue (negative) over the image
    MASKED = "masked"  # the image dimmed where the map is low
    OUTLINE = "outline"  # the outline of the top region (seed 002's GradVisualizer)


class Scale(str, enum.Enum):
    """Which maps share one scale under the normalisation rule."""

    MAP = "map"  # each map its own scale (the same rule everywhere)
    METHOD = "method"  # one scale per method (column) across images
    FIGURE = "figure"  # one scale for the whole figure


def overlay(
    image: np.ndarray,
    norm_map: np.ndarray,
    style: Style | str = Style.HEAT,
    cmap: str = "jet",
    alpha: float = 0.5,
    top_percent: float = 10.0,
) -> np.ndarray:
    """Blend an already normalised map (in [0, 1], or [-1, 1] for SIGNED) over an image.

    Args:
        image: uint8 ``(H, W, 3)``.
        norm_map: ``(H, W)`` normalised map.
        style: a :class:`Style`.
        cmap: matplotlib colour map for HEAT.
        alpha: weight of the map (HEAT, SIGNED).
        top_percent: share of pixels outlined (OUTLINE).

    Returns:
        float ``(H, W, 3)`` RGB in [0, 1].
    """
    from matplotlib import colormaps

    style = Style(style)
    img = image.astype(np.float32) / 255.0
    m = np.asarray(norm_map, np.float32)
    if style is Style.HEAT:
        colour = colormaps[cmap](np.clip(m, 0, 1))[..., :3]
        return (1 - alpha) * img + alpha * colour
    if style is Style.SIGNED:
        colour = colormaps["bwr"]((np.clip(m, -1, 1) + 1) / 2)[..., :3]
        weight = alpha * np.abs(np.clip(m, -1, 1))[..., None]
        return (1 - weight) * img + weight * colour
    if style is Style.MASKED:
        return img * np.clip(m, 0, 1)[..., None]
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(m, sigma=max(1.0, min(m.shape) / 56))  # regions, not speckle (GradVisualizer)
    region = smooth >= np.percentile(smooth, 100 - top_percent)
    edge = region & ~ndimage.binary_erosion(region, iterations=max(1, min(m.shape) // 112))
    out = img * 0.8
    out[edge] = (0.0, 1.0, 0.0)
    return out


def _collect(explanations: Mapping[str, Explanation] | Sequence[Explanation]) -> dict[str, Explanation]:
    if isinstance(explanations, Explanation):
        return {explanations.method: explanations}
    if isinstance(explanations, Mapping):
        return dict(explanations)
    return {exp.method: exp for exp in explanations}


def _normalised(maps: np.ndarray, norm: Norm, percentile: float | None, shared: bool) -> np.ndarray:
    return normalize(maps, norm, percentile=percentile, axes=None if shared else (-2, -1))


def comparison_grid(
    explanations: Mapping[str, Explanation] | Sequence[Explanation],
    *,
    per_target: bool = False,
    style: Style | str = Style.HEAT,
    norm: Norm | str = Norm.ABS,
    percentile: float | None = 99.0,
    scale: Scale | str = Scale.MAP,
    cmap: str = "jet",
    alpha: float = 0.5,
    panel_size: float = 2.2,
    titles: bool = True,
) -> Any:
    """Rows are images, columns the image then each method (and target with ``per_target``).

    Args:
        explanations: ``{name: Explanation}`` or a list; all over the same images.
        per_target: one column per method and target (else the first target).
        style: overlay style.
        norm: the normalisation rule applied to every map.
        percentile: clip at this percentile before scaling (None: the maximum).
        scale: which maps share one scale (see :class:`Scale`).
        cmap: colour map of HEAT overlays.
        alpha: weight of the map in HEAT overlays.
        panel_size: inches per panel.
        titles: method (and target) titles on the first row, target names below.

    Returns:
        The ``Figure``; ``fig.xai_bridge_norm`` records the rule used.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    exps = _collect(explanations)
    if not exps:
        raise ParameterError("explanations: pass at least one Explanation")
    first = next(iter(exps.values()))
    for name, exp in exps.items():
        if exp.images.shape != first.images.shape or not np.array_equal(exp.images, first.images):
            raise ParameterError(f"explanations: {name!r} explains other images than {first.method!r}")
    norm, scale, style = Norm(norm), Scale(scale), Style(style)
    if style is Style.SIGNED and norm is not Norm.SIGNED:
        norm = Norm.SIGNED
    columns: list[tuple[str, int]] = []
    for name, exp in exps.items():
        columns += [(name, t) for t in (range(exp.n_targets) if per_target else [0])]
    normed = {}
    for name, exp in exps.items():
        maps = exp.attributions if per_target else exp.attributions[:, :1]
        if scale is Scale.MAP:
            normed[name] = _normalised(maps, norm, percentile, shared=False)
        else:
            normed[name] = _normalised(maps, norm, percentile, shared=True)
    if scale is Scale.FIGURE:
        stacked = np.concatenate(
            [
                (exps[n].attributions if per_target else exps[n].attributions[:, :1]).reshape(
                    -1, *first.images.shape[1:3]
                )
                for n in exps
            ]
        )
        joint = _normalised(stacked, norm, percentile, shared=True)
        offset = 0
        for name in exps:
            shape = normed[name].shape
            size = int(np.prod(shape[:2]))
            normed[name] = joint[offset : offset + size].reshape(shape)
            offset += size
    n_rows, n_cols = first.n_images, 1 + len(columns)
    fig = Figure(figsize=(panel_size * n_cols + 0.8, panel_size * n_rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i in range(n_rows):
        axes[i, 0].imshow(first.images[i])
        if titles and i == 0:
            axes[i, 0].set_title("image", fontsize=9)
        for j, (name, t) in enumerate(columns, start=1):
            exp = exps[name]
            ax = axes[i, j]
            m = normed[name][i, t if per_target else 0]
            if norm is Norm.SIGNED and style is Style.HEAT:
                m = (m + 1) / 2  # the colour bar runs from -1: put 0 in the middle of the colour map
            ax.imshow(overlay(first.images[i], m, style, cmap, alpha))
            if titles and i == 0:
                label = name.replace(".", "\n", 1)  # library on one line, method below
                ax.set_title(label if not per_target else f"{label} [{t}]", fontsize=8)
            ax.set_xlabel(str(exp.target_names[i, t]), fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    lo = -1.0 if norm is Norm.SIGNED else 0.0
    bar_cmap = "bwr" if style is Style.SIGNED else cmap
    fig.colorbar(
        ScalarMappable(Normalize(lo, 1.0), bar_cmap),
        ax=axes.ravel().tolist(),
        shrink=0.8,
        label=f"{norm.value}, clip p{percentile}, scale per {scale.value}",
    )
    fig.xai_bridge_norm = {"norm": norm.value, "percentile": percentile, "scale": scale.value}  # type: ignore[attr-defined]
    return fig


def caption_plot(
    explanation: Explanation,
    image: int = 0,
    *,
    norm: Norm | str = Norm.SIGNED,
    percentile: float | None = 99.9,
    columns: int = 6,
    panel_size: float = 2.0,
) -> Any:
    """One panel per caption token (seed 000): the image, then each token's map.

    All tokens share one scale (the rule is shap's: signed, clipped at the
    99.9th percentile), so tokens can be compared.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    exp = explanation[image]
    norm = Norm(norm)
    normed = normalize(exp.attributions[0], norm, percentile=percentile, axes=None)
    n = 1 + exp.n_targets
    rows = -(-n // columns)
    fig = Figure(figsize=(panel_size * min(n, columns) + 0.8, panel_size * rows + 0.3))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, min(n, columns), squeeze=False)
    style = Style.SIGNED if norm is Norm.SIGNED else Style.HEAT
    axes.flat[0].imshow(exp.images[0])
    axes.flat[0].set_title("image", fontsize=9)
    for t in range(exp.n_targets):
        ax = axes.flat[t + 1]
        ax.imshow(overlay(exp.images[0], normed[t], style, alpha=0.6))
        ax.set_title(str(exp.target_names[0, t]), fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        if not ax.images:
            ax.set_axis_off()
    lo = -1.0 if norm is Norm.SIGNED else 0.0
    fig.colorbar(
        ScalarMappable(Normalize(lo, 1.0), "bwr" if style is Style.SIGNED else "jet"),
        ax=axes.ravel().tolist(),
        shrink=0.8,
        label=f"{norm.value}, clip p{percentile}, shared",
    )
    return fig


def figure_png(fig: Any, dpi: int = 80) -> bytes:
    """The figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
