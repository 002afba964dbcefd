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

__all__ = ["Explanations"]

#: Images shown in the grid; the rest are counted.
MAX_IMAGES = 4


class Explanations(dict[str, Explanation]):
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
        from .viz.notebook import _overlays, _png_b64, thumbnail

        esc = lambda v: html.escape(safe_text(v))  # noqa: E731
        if not self:
            return "<div class='xai-bridge'><p>no explanations</p></div>"
        first = next(iter(self.values()))
        side = 128
        head = "<tr><th>image</th>" + "".join(f"<th>{esc(name)}</th>" for name in self) + "</tr>"
        rows = []
        for n in range(min(first.n_images, MAX_IMAGES)):
            cells = [
                f"<td><img src='data:image/png;base64,{_png_b64(thumbnail(first.images[n], side))}' alt='image {n}'></td>"
            ]
            for name, exp in self.items():
                if n >= exp.n_images or exp.n_targets == 0:
                    cells.append("<td></td>")
                    continue
                over = _overlays(exp, n)[0]
                label = esc(exp.target_names[n, 0])
                cells.append(
                    f"<td style='text-align:center'><img src='data:image/png;base64,{_png_b64(thumbnail(over, side))}'"
                    f" alt='{esc(name)}: {label}'><br>{label}</td>"
                )
            rows.append("<tr>" + "".join(cells) + "</tr>")
        more = first.n_images - MAX_IMAGES
        tail = f"<p>... and {more} more image(s)</p>" if more > 0 else ""
        return f"<div class='xai-bridge'><table>{head}{''.join(rows)}</table>{tail}{self._table_html(esc)}</div>"

    def _table_html(self, esc: Any) -> str:
        """One row per method: its library, the first image's targets, model evaluations and seconds."""
        rows = ["<tr><th>method</th><th>library</th><th>targets</th><th>model evaluations</th><th>seconds</th></tr>"]
        for name, exp in self.items():
            targets = ", ".join(esc(t) for t in exp.target_names[0]) if exp.n_images else ""
            version = "" if exp.library_version in ("", exp.library) else f" {esc(exp.library_version)}"
            rows.append(
                f"<tr><td>{esc(name)}</td><td>{esc(exp.library)}{version}</td><td>{targets}</td>"
                f"<td style='text-align:right'>{exp.n_model_evals}</td>"
                f"<td style='text-align:right'>{exp.seconds:.2f}</td></tr>"
            )
        return f"<table>{''.join(rows)}</table>"
