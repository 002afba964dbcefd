"""The colour bars of a figure: one per kind of rule (signed, unsigned), each stating the rule in words.

A bar shows how a value looks at full opacity over white, so it matches the
overlays (:mod:`._overlay`) drawn with the same rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._figure import TEXT
from ._text import shown_label
from .colors import BLUE, DEFAULT_OPACITY, RED, ColorRule, sequential_lut

__all__ = ["colour_bars"]


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


def colour_bars(fig: Any, axes: Any, rules: Mapping[str, ColorRule], cmap: str | None) -> None:
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
