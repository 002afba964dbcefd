"""What a person looks at: plots, agreement between methods, the HTML report, LIME's mask view.

Each module imports matplotlib / pandas only when it draws or tabulates.
"""

from typing import Any

_SUBMODULES = ("colors", "compare", "masks", "notebook", "plot", "report")


def __getattr__(name: str) -> Any:
    """``xb.viz.plot`` and the other submodules, imported on first access (matplotlib only when drawing)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
