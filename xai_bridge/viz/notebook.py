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

import numpy as np
from PIL import Image, ImageDraw

from xai_bridge.explanation import Explanation

from ._text import safe_text, score_text
from .colors import colorize, rule_for

__all__ = ["explanation_html", "explanation_png", "thumbnail"]

#: Images shown inline; the rest are counted.
MAX_IMAGES = 4
#: Targets shown per image inline.
MAX_TARGETS = 8


def thumbnail(array: np.ndarray, side: int) -> Image.Image:
    """``array`` (uint8 HxWx3) resized so that its longer side is ``side`` pixels."""
    img = Image.fromarray(np.asarray(array, np.uint8))
    scale = side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)


def _png_b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _overlays(exp: Explanation, n: int) -> list[np.ndarray]:
    rule = rule_for(exp)
    normed = rule.normalise(exp.attributions[n, :MAX_TARGETS])
    return [colorize(exp.images[n], normed[t], rule.signed) for t in range(normed.shape[0])]


def explanation_html(exp: Explanation, side: int = 128) -> str:
    """The notebook view: one table row per image, one cell per target with its overlay."""
    esc = lambda v: html.escape(safe_text(v))  # noqa: E731
    rule = rule_for(exp)
    head = (
        f"<b>{esc(exp.method)}</b> ({esc(exp.library)} {esc(exp.library_version)}) &middot; "
        f"{exp.n_images} image(s) x {exp.n_targets} target(s) &middot; {exp.seconds:.2f} s &middot; "
        f"{exp.n_model_evals} model evaluations<br><small>colours: {esc(rule.label())}</small>"
    )
    rows = []
    for n in range(min(exp.n_images, MAX_IMAGES)):
        cells = [
            f"<td style='text-align:center'><img src='data:image/png;base64,{_png_b64(thumbnail(exp.images[n], side))}'"
            f" alt='image {n}'><br>image {n}</td>"
        ]
        for t, over in enumerate(_overlays(exp, n)):
            cells.append(
                f"<td style='text-align:center'><img src='data:image/png;base64,{_png_b64(thumbnail(over, side))}'"
                f" alt='{esc(exp.target_names[n, t])}'><br><b>{esc(exp.target_names[n, t])}</b>"
                f"<br>{esc(score_text(exp, n, t))}</td>"
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = exp.n_images - MAX_IMAGES
    tail = f"<p>... and {more} more image(s); exp[i] shows one</p>" if more > 0 else ""
    return f"<div class='xai-bridge'><p>{head}</p><table>{''.join(rows)}</table>{tail}</div>"


def explanation_png(exp: Explanation, side: int = 160) -> bytes:
    """A strip per image (the image, then each target's overlay, names below), as PNG bytes."""
    label_h = 14
    rows = list(range(min(exp.n_images, MAX_IMAGES)))
    tiles = [[thumbnail(exp.images[n], side), *(thumbnail(o, side) for o in _overlays(exp, n))] for n in rows]
    names = [
        ["image", *(safe_text(exp.target_names[n, t])[:24] for t in range(len(tiles[r]) - 1))]
        for r, n in enumerate(rows)
    ]
    width = max(sum(t.width + 4 for t in row) for row in tiles)
    height = sum(max(t.height for t in row) + label_h + 4 for row in tiles)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row, labels in zip(tiles, names, strict=True):
        x = 0
        for tile, label in zip(row, labels, strict=True):
            canvas.paste(tile, (x, y))
            draw.text((x + 2, y + tile.height + 1), label, fill=(0, 0, 0))
            x += tile.width + 4
        y += max(t.height for t in row) + label_h + 4
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
