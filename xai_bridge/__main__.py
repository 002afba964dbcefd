"""The ``xai-bridge`` console script and ``python -m xai_bridge``.

This module needs nothing but the standard library, so a core install
(``pip install xai-bridge``, without the ``cli`` extra) gets the pip command
that adds click and tqdm instead of a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

__all__ = ["main"]

#: What the command needs beyond the core, and the extra that installs it.
NEEDS = (("click", "cli"), ("tqdm", "cli"))


def main(argv: list[str] | None = None) -> Any:
    """Run the command line, or say which extra to install when its libraries are missing."""
    missing = [name for name, _ in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        extras = sorted({extra for name, extra in NEEDS if name in missing})
        print(
            f"error: the xai-bridge command needs {', '.join(missing)}, which is not installed: "
            f"pip install 'xai-bridge[{','.join(extras)}]'",
            file=sys.stderr,
        )
        return 2
    from xai_bridge.cli import main as cli

    return cli.main(args=argv, prog_name="xai-bridge")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
