"""mkdocs hook: the method table, generated from the registry's :class:`MethodSpec` entries.

Where a page holds the marker ``<!-- methods-table -->``, the hook puts one table
per family built from ``xai_bridge.default_registry()``, so the docs list exactly
the methods the code registers, with what each spec declares, and cannot drift.
Reading the specs imports no third-party library.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- methods-table -->"

#: Families in the order the page presents them, with the heading each gets.
FAMILIES = {
    "cam": "Class activation maps",
    "gradient": "Gradients",
    "perturbation": "Perturbation",
    "other": "Other",
}

COLUMNS = ("method", "library", "needs", "map", "budget parameter", "what it does")

#: What each ``MethodSpec.model_kind`` asks of the model, as the "needs" column says it.
KINDS = {"transformer": "a vision transformer", "detector": "an object detector"}


def _needs(spec: Any) -> str:
    """What the method needs of the model: gradients, and a kind of model beyond any classifier."""
    needs = ["gradients"] if spec.needs_gradients else []
    if spec.model_kind in KINDS:
        needs.append(KINDS[spec.model_kind])
    return ", ".join(needs) or "outputs only"


def _cell(text: str) -> str:
    """Markdown-table-safe text: pipes escaped, newlines folded."""
    return " ".join(text.split()).replace("|", "\\|")


def _map(spec: Any) -> str:
    """What the map is: raw or normalised (the library gives only min-max scaled maps), and signed or not."""
    kind = "normalised" if getattr(spec, "normalised", False) else "raw"
    return f"{kind}, signed" if spec.signed else kind


def _row(spec: Any) -> str:
    library = spec.name.split(".", 1)[0]
    cells = (
        f"`{spec.name}`",
        library,
        _needs(spec),
        _map(spec),
        f"`{spec.budget}`" if spec.budget else "-",
        _cell(spec.description),
    )
    return "| " + " | ".join(cells) + " |"


def methods_table(registry: Any = None) -> str:
    """Markdown for every registered method, one table per family, sorted by name."""
    if registry is None:
        import xai_bridge

        registry = xai_bridge.default_registry()
    specs = sorted(registry.specs.values(), key=lambda s: s.name.lower())
    families = [*FAMILIES, *sorted({s.family for s in specs} - set(FAMILIES))]
    parts = []
    for family in families:
        rows = [_row(s) for s in specs if s.family == family]
        if not rows:
            continue
        header = "| " + " | ".join(COLUMNS) + " |\n|" + " --- |" * len(COLUMNS)
        title = FAMILIES.get(family, family.capitalize())
        parts.append(f"### {title} ({len(rows)})\n\n{header}\n" + "\n".join(rows))
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace the marker with the generated table."""
    return markdown.replace(MARKER, methods_table()) if MARKER in markdown else markdown
