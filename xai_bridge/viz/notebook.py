"""How an :class:`~xai_bridge.Explanation` shows itself in Jupyter (numpy and Pillow only, no matplotlib).

``_repr_html_`` is a compact table per image (targets by name, score and
probability, inline overlay thumbnails, the method and its cost) and
``_repr_png_`` a strip of the same thumbnails for frontends without HTML.
Both use the one colour rule of :mod:`xai_bridge.viz.colors`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from xai_bridge.explanation import Explanation

from ._text import library_text, safe_text, score_text, shown_label
from ._thumbs import display_size, fit_image, fit_map
from .colors import NON_FINITE_NOTE, colorize, non_finite_count, rule_for, warn_non_finite
from .outlines import outline_mask

__all__ = ["explanation_html", "explanation_png", "thumbnail"]

#: Images shown inline; the rest are counted.
MAX_IMAGES = 4
#: Targets shown per image inline.
MAX_TARGETS = 8


def thumbnail(array: np.ndarray, side: int) -> Image.Image:
    """``array`` (uint8 HxWx3) resized so that its longer side is ``side`` pixels (work bounded by ``side``)."""
    h, w = np.shape(array)[:2]
    return Image.fromarray(fit_image(np.asarray(array), display_size(h, w, side)))


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _tiles(exp: Explanation, n: int, side: int) -> tuple[Image.Image, list[Image.Image]]:
    """Image ``n`` and its targets' overlays at the displayed size: shrunk first, then coloured.

    The clip percentile is taken over the displayed map, so a huge photo
    costs what its thumbnail costs (the colour rule is the same).
    """
    image = thumbnail(exp.images[n], side)
    t_shown = min(exp.n_targets, MAX_TARGETS)
    if not t_shown:
        return image, []
    rule = rule_for(exp)
    maps = np.stack([fit_map(exp.attributions[n, t], image.size) for t in range(t_shown)])
    normed = rule.normalise(maps)
    pixels = np.asarray(image)
    overlays = []
    for t in range(t_shown):
        tile = colorize(pixels, normed[t], rule.signed)
        edges = outline_mask(exp, n, t, tile.shape[:2])
        if edges is not None:  # a detection's box and keypoints, a region's border: white, as the report draws them
            tile[edges] = 255
        overlays.append(Image.fromarray(tile))
    return image, overlays


def _shown_non_finite(exp: Explanation, rows: Sequence[int]) -> int:
    """NaN and infinite values in the maps the view shows (the first images and targets)."""
    return sum(non_finite_count(exp.attributions[n, :MAX_TARGETS]) for n in rows)


def _empty(exp: Explanation) -> str | None:
    """The empty state's text, or None when there is something to show."""
    if exp.n_images and exp.n_targets:
        return None
    return f"nothing to show: {exp.n_images} image(s) x {exp.n_targets} target(s)"


def explanation_html(exp: Explanation, side: int = 128) -> str:
    """The notebook view: one table row per image, one cell per target with its overlay."""
    esc = lambda v: html.escape(safe_text(v))  # noqa: E731
    label = lambda v: f"<bdi>{html.escape(shown_label(v))}</bdi>"  # noqa: E731
    rule = rule_for(exp)
    bad = warn_non_finite("_repr_html_", {exp.method: _shown_non_finite(exp, range(min(exp.n_images, MAX_IMAGES)))})
    note = f" &middot; {NON_FINITE_NOTE} ({bad})" if bad else ""
    head = (
        f"<b>{label(exp.method)}</b> ({label(library_text(exp))}) &middot; "
        f"{exp.n_images} image(s) x {exp.n_targets} target(s) &middot; {exp.seconds:.2f} s &middot; "
        f"{exp.n_model_evals} model evaluations<br><small>colours: {esc(rule.label())}{note}</small>"
    )
    empty = _empty(exp)
    if empty is not None:
        return f"<div class='xai-bridge'><p>{head}</p><p><i>{empty}</i></p></div>"
    rows = []
    for n in range(min(exp.n_images, MAX_IMAGES)):
        image, overlays = _tiles(exp, n, side)
        cells = [
            f"<td style='text-align:center'><img src='data:image/png;base64,{_png_b64(image)}' alt='image {n}'><br>image {n}</td>"
        ]
        for t, over in enumerate(overlays):
            name = exp.target_names[n, t]
            cells.append(
                f"<td style='text-align:center;max-width:{side + 40}px;overflow-wrap:anywhere'>"
                f"<img src='data:image/png;base64,{_png_b64(over)}' alt='{html.escape(shown_label(name))}'>"
                f"<br><bdi><b>{html.escape(shown_label(name))}</b></bdi><br>{esc(score_text(exp, n, t))}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = exp.n_images - MAX_IMAGES
    tail = f"<p>... and {more} more image(s); exp[i] shows one</p>" if more > 0 else ""
    return f"<div class='xai-bridge'><p>{head}</p><table>{''.join(rows)}</table>{tail}</div>"


def _text_png(text: str, width: int = 360, height: int = 24) -> bytes:
    canvas = Image.new("RGB", (width, height), "white")
    _draw_text(ImageDraw.Draw(canvas), (4, 5), text)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str) -> None:
    """Draw ``text`` in PIL's default font; where that is the Latin-1 bitmap font, other characters become ``?``."""
    try:
        draw.text(xy, text, fill=(0, 0, 0))
    except UnicodeError:
        draw.text(xy, text.replace("\u2026", "...").encode("latin-1", "replace").decode("latin-1"), fill=(0, 0, 0))


def explanation_png(exp: Explanation, side: int = 160) -> bytes:
    """A strip per image (the image, then each target's overlay, names below), as PNG bytes."""
    empty = _empty(exp)
    if empty is not None:
        return _text_png(f"{shown_label(exp.method, 40)}: {empty}")
    label_h = 14
    rows = list(range(min(exp.n_images, MAX_IMAGES)))
    bad = warn_non_finite("_repr_png_", {exp.method: _shown_non_finite(exp, rows)})
    tiles = [[image, *overlays] for image, overlays in (_tiles(exp, n, side) for n in rows)]
    names = [
        ["image", *(shown_label(exp.target_names[n, t], 24) for t in range(len(tiles[r]) - 1))]
        for r, n in enumerate(rows)
    ]
    width = max(sum(t.width + 4 for t in row) for row in tiles)
    height = sum(max(t.height for t in row) + label_h + 4 for row in tiles) + (label_h if bad else 0)
    canvas = Image.new("RGB", (max(width, 240 if bad else 1), height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row, labels in zip(tiles, names, strict=True):
        x = 0
        for tile, text in zip(row, labels, strict=True):
            canvas.paste(tile, (x, y))
            _draw_text(draw, (x + 2, y + tile.height + 1), text)
            x += tile.width + 4
        y += max(t.height for t in row) + label_h + 4
    if bad:
        _draw_text(draw, (2, y), f"{NON_FINITE_NOTE} ({bad})")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
