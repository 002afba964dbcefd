"""The Figure every view draws on: shown in Jupyter without pyplot, an empty state, notes under it.

Every text drawn from data uses :data:`TEXT`: never mathtext or LaTeX, so a
label holding ``$`` is drawn as it is instead of failing the draw.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from ._text import shown_label
from .colors import NON_FINITE_NOTE, warn_non_finite

__all__ = ["PANEL_LABEL", "PLOT_MAX_SIDE", "TEXT", "empty_figure", "figure_png", "new_figure", "non_finite_note"]

#: Keyword arguments of every text a figure draws from data: never mathtext or LaTeX (a label may hold ``$``).
TEXT: dict[str, Any] = {"parse_math": False, "usetex": False}
#: Longest side, in pixels, at which figures draw an image and its maps (a 12-MP photo is shrunk first): a
#: 2.4-inch panel saved at 200 dpi is 480 pixels wide, and the figure keeps every panel's pixels in memory.
PLOT_MAX_SIDE = 512
#: Characters of a label drawn above or below one panel (longer ones end in an ellipsis; panels do not overlap).
PANEL_LABEL = 22


@functools.cache
def _figure_class() -> type:
    """A ``Figure`` that Jupyter displays without ``%matplotlib inline`` (it renders itself to PNG)."""
    from matplotlib.figure import Figure

    class XaiBridgeFigure(Figure):  # type: ignore[misc]
        """A matplotlib Figure with ``_repr_png_``, so notebooks show it without pyplot."""

        def _repr_png_(self) -> bytes:
            return figure_png(self, dpi=90)

    return XaiBridgeFigure


def new_figure(figsize: tuple[float, float]) -> Any:
    """A Figure on its own Agg canvas: no pyplot state, no window, shown in Jupyter by itself."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = _figure_class()(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def empty_figure(text: str, panel_size: float = 2.4) -> Any:
    """A one-panel figure that says there is nothing to draw (an Explanation with 0 images or 0 targets)."""
    fig = new_figure((panel_size * 2, panel_size * 0.5))
    fig.text(0.5, 0.5, shown_label(text, 120), ha="center", va="center", fontsize=9, **TEXT)
    return fig


def non_finite_note(fig: Any, view: str, counts: Mapping[str, int]) -> None:
    """Warn once and say under the figure how many values are drawn hatched (NaN or infinite)."""
    bad = warn_non_finite(view, counts)
    if bad:
        fig.text(0.01, 0.005, f"{NON_FINITE_NOTE} ({bad})", fontsize=7, ha="left", va="bottom", **TEXT)


def figure_png(fig: Any, dpi: int = 80) -> bytes:
    """The figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
