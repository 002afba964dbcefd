"""The one colour rule every figure, notebook view and report uses (numpy only).

Signed maps (evidence for and against a target: Integrated Gradients, shap,
LIME, occlusion) are drawn on a diverging scale centred at zero, red for and
blue against, as shap draws them; unsigned maps (CAMs, |gradient|) on a
sequential scale that uses neither red nor blue, so a colour never means
"for" in one panel and "large" in the next. The opacity of the colour grows
with ``|value|``: a zero-valued pixel shows the image itself, so weak
attributions never tint the picture.

Whether a method's maps are signed comes from the registry
(:attr:`~xai_bridge.registry.MethodSpec.signed`), corrected by its parameters
(a squared noise tunnel or ``abs=True`` makes them unsigned); the user can
always choose a :class:`~xai_bridge.Norm` explicitly instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from xai_bridge.explanation import Explanation
from xai_bridge.normalization import Norm, normalize

__all__ = [
    "BLUE",
    "DEFAULT_OPACITY",
    "NON_FINITE_NOTE",
    "RED",
    "SEQUENTIAL",
    "ColorRule",
    "colorize",
    "mark_non_finite",
    "non_finite_count",
    "rule_for",
    "sequential_lut",
    "signed_maps",
    "warn_non_finite",
]

#: shap's colours: red for the target, blue against it.
RED = (255, 13, 87)
BLUE = (30, 136, 229)
#: Anchors of the sequential scale (the upper part of viridis: teal, green, yellow; neither red nor blue).
SEQUENTIAL = (
    (37, 132, 142),
    (31, 148, 140),
    (33, 165, 133),
    (50, 182, 122),
    (80, 196, 106),
    (119, 209, 83),
    (162, 218, 55),
    (210, 226, 27),
    (253, 231, 37),
)
#: Opacity of a pixel at the clip value (|normalised value| = 1); lower values fade linearly to transparent.
DEFAULT_OPACITY = 0.8
#: What the views say about pixels whose value is NaN or infinite (drawn hatched black and white).
NON_FINITE_NOTE = "hatched: NaN or infinite values"
#: Noise tunnels whose maps are squares or variances, hence never negative.
_UNSIGNED_NOISE = ("smoothgrad_sq", "vargrad")


def sequential_lut(size: int = 256) -> np.ndarray:
    """The sequential scale as a ``(size, 3)`` uint8 table (index 0 = value 0)."""
    anchors = np.asarray(SEQUENTIAL, np.float64)
    x = np.linspace(0, 1, len(anchors))
    t = np.linspace(0, 1, size)
    return np.stack([np.interp(t, x, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def signed_maps(explanation: Explanation) -> bool:
    """Whether ``explanation``'s maps carry a sign, from its method's registry entry and parameters.

    A method that is not registered (or whose maps contain negative values
    although its entry says unsigned) is judged by its values: any negative
    value means signed, so a sign is never hidden.
    """
    from xai_bridge.errors import UnknownMethodError
    from xai_bridge.registry import default_registry

    signed: bool | None
    try:
        signed = default_registry().spec(explanation.method).signed
    except UnknownMethodError:
        signed = None
    params = explanation.params
    nt = params.get("noise_tunnel")
    if isinstance(nt, Mapping) and str(nt.get("kind")) in _UNSIGNED_NOISE:
        signed = False
    if "abs" in params and isinstance(params["abs"], bool):  # captum/builtin Saliency: abs=False keeps the sign
        signed = not params["abs"]
    values = explanation.attributions  # fmin ignores NaN and copies nothing (maps of 12-megapixel photos)
    has_negative = bool(values.size) and float(np.fmin.reduce(values, axis=None)) < 0
    return bool(signed) or has_negative


@dataclass(frozen=True)
class ColorRule:
    """How a set of maps becomes colours: normalisation, clip percentile and which maps share a scale.

    Attributes:
        norm: ``Norm.SIGNED`` draws the diverging red/blue scale; any other
            norm the sequential one.
        percentile: clip at this percentile of ``|value|`` before scaling (None: the maximum).
        scale: ``"map"`` (each map its own scale), ``"method"`` or ``"figure"``.
    """

    norm: Norm = Norm.SIGNED
    percentile: float | None = 99.0
    scale: str = "map"

    @property
    def signed(self) -> bool:
        """Whether the diverging scale is used."""
        return self.norm is Norm.SIGNED

    def label(self) -> str:
        """One line stating the rule, for colour bars and report legends."""
        what = {
            Norm.SIGNED: "signed (red for, blue against)",
            Norm.ABS: "unsigned |value|",
            Norm.POSITIVE: "positive part only",
            Norm.MINMAX: "min-max scaled",
        }[self.norm]
        clip = "not clipped" if self.percentile is None else f"clipped at the {self.percentile:g}th percentile"
        of = " of |value|" if self.norm in (Norm.SIGNED, Norm.ABS) and self.percentile is not None else ""
        shared = {"figure": "one scale for the figure", "tokens": "one scale for every token"}
        return f"{what}, {clip}{of}, {shared.get(self.scale, f'per {self.scale}')}"

    def normalise(self, maps: np.ndarray, shared: bool = False) -> np.ndarray:
        """Scale ``maps`` to [-1, 1] (signed) or [0, 1] by this rule; ``shared``: one scale for all of them.

        NaN and infinite values (half-precision models make them) stay NaN and
        take no part in the scale, so the finite rest is drawn as usual and
        :func:`colorize` marks them.
        """
        maps = np.asarray(maps)
        bad = ~np.isfinite(maps)
        if not bad.any():
            return normalize(maps, self.norm, percentile=self.percentile, axes=None if shared else (-2, -1))
        out = normalize(
            np.where(bad, 0.0, maps), self.norm, percentile=self.percentile, axes=None if shared else (-2, -1)
        )
        out[bad] = np.nan
        return out


def rule_for(
    explanation: Explanation, norm: Norm | str | None = None, percentile: float | None = 99.0, scale: str = "map"
) -> ColorRule:
    """The rule for ``explanation``: ``norm`` if given, else signed or ``|value|`` by :func:`signed_maps`."""
    chosen = Norm(norm) if norm is not None else (Norm.SIGNED if signed_maps(explanation) else Norm.ABS)
    return ColorRule(chosen, percentile, scale)


def colorize(image: np.ndarray, norm_map: np.ndarray, signed: bool, opacity: float = DEFAULT_OPACITY) -> np.ndarray:
    """Blend a normalised map over an image by the one rule.

    Args:
        image: uint8 ``(H, W, 3)``.
        norm_map: ``(H, W)`` in [-1, 1] (signed) or [0, 1].
        signed: diverging red/blue (True) or sequential colours (False).
        opacity: opacity at ``|value| = 1``; it falls linearly to 0 at 0.

    Returns:
        uint8 ``(H, W, 3)``; where the map is 0 the image pixel is unchanged,
        where it is NaN or infinite the pixel is hatched (:func:`mark_non_finite`).
    """
    m = np.asarray(norm_map, np.float64)
    bad = ~np.isfinite(m)
    m = np.where(bad, 0.0, m)
    img = np.asarray(image, np.float64)
    if signed:
        m = np.clip(m, -1.0, 1.0)
        colour = np.where((m >= 0)[..., None], np.asarray(RED, np.float64), np.asarray(BLUE, np.float64))
    else:
        m = np.clip(m, 0.0, 1.0)
        colour = sequential_lut()[np.rint(m * 255).astype(np.int64)].astype(np.float64)
    a = (float(np.clip(opacity, 0.0, 1.0)) * np.abs(m))[..., None]
    return mark_non_finite(np.clip(np.rint(img * (1 - a) + colour * a), 0, 255).astype(np.uint8), bad)


def mark_non_finite(rgb: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """``rgb`` with the ``bad`` pixels hatched black and white (2-pixel diagonal stripes).

    No colour scale here uses black or white stripes, so a NaN or infinite
    value is never read as a strong or a zero attribution. ``rgb`` is uint8
    (0-255) or float (0-1); it is returned as is when no pixel is bad.
    """
    if not bad.any():
        return rgb
    out = np.array(rgb, copy=True)
    rows, cols = np.nonzero(bad)
    white = ((rows + cols) // 2) % 2 == 1
    out[rows, cols] = 0
    out[rows[white], cols[white]] = 255 if out.dtype == np.uint8 else 1.0
    return out


def non_finite_count(maps: np.ndarray) -> int:
    """How many values of ``maps`` are NaN or infinite, one ``(H, W)`` map at a time (no full-size temporary)."""
    flat = np.asarray(maps).reshape(-1, *np.shape(maps)[-2:]) if np.ndim(maps) >= 2 else np.atleast_2d(maps)
    return sum(int(m.size - np.count_nonzero(np.isfinite(m))) for m in flat)


def warn_non_finite(view: str, counts: Mapping[str, int]) -> int:
    """Warn once for the whole view when maps hold NaN or infinite values; returns how many they hold.

    Args:
        view: what is drawn (``"plot"``, ``"_repr_html_"``, ...), named in the warning.
        counts: ``{method: number of non-finite values}`` of the maps the view shows.
    """
    bad = {method: n for method, n in counts.items() if n}
    if bad:
        which = ", ".join(f"{method}: {n}" for method, n in bad.items())
        warnings.warn(
            f"{view}: the maps hold NaN or infinite values ({which}); they are drawn hatched black and white, "
            "and the colour scale is set by the finite values",
            RuntimeWarning,
            stacklevel=3,
        )
    return sum(bad.values())
