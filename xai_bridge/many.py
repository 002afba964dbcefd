"""What :func:`~xai_bridge.explain_many` returns: a plain ``dict`` of Explanations that shows itself in notebooks.

Code reads it as the ``{method name: Explanation}`` dict it always was (keys,
equality, pickling, ``json``-free iteration); Jupyter shows a comparison grid
(a row per image: the image, then each method's overlay of the first target)
and a table of methods, targets, model evaluations and seconds. Numpy and
Pillow only, like the Explanation's own view.
"""

from __future__ import annotations

import html
from typing import Any

from .explanation import Explanation

__all__ = ["Explanations", "PerImage"]

#: Images shown in the grid; the rest are counted.
MAX_IMAGES = 4
#: Longer side of a thumbnail, in pixels.
SIDE = 128


class Explanations(dict[str, "Explanation | PerImage"]):
    """``{method name as given: Explanation}`` in the order given; a ``dict`` in every way but its notebook view.

    Example:
        >>> many = xb.explain_many(model, "cat.jpg", ["gradcam.GradCAM", "builtin.RISE"])  # doctest: +SKIP
        >>> many["gradcam.GradCAM"].attributions.shape  # doctest: +SKIP
        (1, 1, 224, 224)
        >>> many  # in Jupyter: the comparison grid and the table  # doctest: +SKIP
    """

    def _repr_html_(self) -> str:
        """The comparison grid and a table of methods, targets, evaluations and seconds."""
        from .viz._text import safe_text
        from .viz.notebook import _png_b64, _tiles, thumbnail

        esc = lambda v: html.escape(safe_text(v))  # noqa: E731
        if not self:
            return "<div class='xai-bridge'><p>no explanations</p></div>"
        first = next(iter(self.values()))
        n_images = len(first)
        head = "<tr><th>image</th>" + "".join(f"<th>{esc(name)}</th>" for name in self) + "</tr>"
        rows = []
        for n in range(min(n_images, MAX_IMAGES)):
            image = _image(first, n)
            cells = [
                f"<td><img src='data:image/png;base64,{_png_b64(thumbnail(image.images[0], SIDE))}' alt='image {n}'></td>"
            ]
            for name, value in self.items():
                exp = _image(value, n)
                if exp.n_targets == 0:
                    cells.append("<td></td>")
                    continue
                label = esc(exp.target_names[0, 0])
                over = _tiles(exp[:, :1], 0, SIDE)[1][0]  # shrunk before colouring (huge photos)
                cells.append(
                    f"<td style='text-align:center'><img src='data:image/png;base64,{_png_b64(over)}'"
                    f" alt='{esc(name)}: {label}'><br>{label}</td>"
                )
            rows.append("<tr>" + "".join(cells) + "</tr>")
        more = n_images - MAX_IMAGES
        tail = f"<p>... and {more} more image(s)</p>" if more > 0 else ""
        return f"<div class='xai-bridge'><table>{head}{''.join(rows)}</table>{tail}{self._table_html(esc)}</div>"

    def _table_html(self, esc: Any) -> str:
        """One row per method: its library, the first image's targets, model evaluations and seconds."""
        from .viz._text import library_text

        rows = ["<tr><th>method</th><th>library</th><th>targets</th><th>model evaluations</th><th>seconds</th></tr>"]
        for name, value in self.items():
            parts = list(value) if isinstance(value, PerImage) else [value]
            exp = _image(value, 0)
            targets = ", ".join(esc(t) for t in exp.target_names[0])
            rows.append(
                f"<tr><td>{esc(name)}</td><td>{esc(library_text(exp))}</td><td>{targets}</td>"
                f"<td style='text-align:right'>{sum(e.n_model_evals for e in parts)}</td>"
                f"<td style='text-align:right'>{sum(e.seconds for e in parts):.2f}</td></tr>"
            )
        return f"<table>{''.join(rows)}</table>"


def _image(value: Explanation | PerImage, n: int) -> Explanation:
    """Image ``n`` of a result as a one-image Explanation (an Explanation's slice, or a PerImage's item)."""
    return value[n]


class PerImage(list[Explanation]):
    """One method's result on images of different sizes: one one-image Explanation per image, in the order given.

    Each item equals what ``explain`` gives for that image alone (its own
    size, its own targets, its own prediction pass). An Explanation holds
    ``(N, T, H, W)`` maps of one size; resizing maps to a common size would
    change them, and padding would invent pixels, so the images stay apart.
    ``result[i]`` is image ``i``, as ``exp[i]`` is for an Explanation.
    """

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"{name}: the images have different sizes, so the result is one Explanation per image; "
            f"read result[i].{name} (or resize them first with xb.load_images(images, size=(height, width)))"
        )

    def _repr_html_(self) -> str:
        """Each image's own view, one after the other."""
        return "".join(exp._repr_html_() for exp in self)
