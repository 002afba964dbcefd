"""griffe extension: Sphinx cross-reference roles in docstrings shown as code.

The docstrings are Google style but name other objects with Sphinx roles
(``:func:`~xai_bridge.load_images```), which Markdown would print as they are.
Each role becomes inline code of the name (the last part where ``~`` asks for
it), as Sphinx itself would display it.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`<]+?)(?:\s*<[^>]*>)?`")


def plain(text: str) -> str:
    """``text`` with every Sphinx role replaced by inline code of its name."""
    return ROLE.sub(lambda m: "`" + (m[2].rsplit(".", 1)[-1] if m[1] else m[2]) + "`", text)


class SphinxRoles(griffe.Extension):
    """Rewrite each object's docstring as it is loaded."""

    def on_instance(self, *, node: Any, obj: Any, agent: Any, **kwargs: Any) -> None:
        """Replace the roles in ``obj``'s docstring."""
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
