"""Which public classes a library ships, and what xai-bridge decided about each.

Each method module declares one :class:`LibraryClasses` beside its ``SPECS``:
the module it scans, the classes routed under another name, and the classes
deliberately left out, each with a one-line reason. A class that is none of
these (a library release added it) is *unaccounted*, and the drift test in
``tests/methods/test_drift.py`` fails until someone routes or excludes it.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType

__all__ = ["LibraryClasses"]


@dataclass(frozen=True)
class LibraryClasses:
    """The public classes of one library module and how each is covered.

    Attributes:
        module: the import name scanned (e.g. ``"captum.attr"``).
        library: the registered names' prefix (``"captum"`` in ``captum.Saliency``).
        routed: library class -> registered name, where the names differ.
        excluded: library class -> the one-line reason it is not registered.
    """

    module: str
    library: str
    routed: Mapping[str, str] = field(default_factory=dict)
    excluded: Mapping[str, str] = field(default_factory=dict)

    def public_classes(self, module: ModuleType | None = None) -> list[str]:
        """The module's public classes: its ``__all__``, else the classes defined in the library."""
        mod = module if module is not None else importlib.import_module(self.module)
        top = self.module.split(".")[0]
        names = getattr(mod, "__all__", None)
        if names is None:
            names = [n for n in dir(mod) if not n.startswith("_")]
            names = [n for n in names if str(getattr(getattr(mod, n), "__module__", "")).split(".")[0] == top]
        return sorted(n for n in names if not n.startswith("_") and inspect.isclass(getattr(mod, n, None)))

    def unaccounted(self, registered: Iterable[str], module: ModuleType | None = None) -> list[str]:
        """Public classes neither registered (as ``library.Name`` or through ``routed``) nor excluded."""
        names = set(registered)
        return [
            c
            for c in self.public_classes(module)
            if f"{self.library}.{c}" not in names and self.routed.get(c) not in names and c not in self.excluded
        ]

    def stale(self, registered: Iterable[str], module: ModuleType | None = None) -> list[str]:
        """Entries naming a class the library no longer has, or routed to a name not registered."""
        present = set(self.public_classes(module))
        names = set(registered)
        gone = [c for c in [*self.routed, *self.excluded] if c not in present]
        return gone + [f"{c} -> {n}" for c, n in self.routed.items() if n not in names]
