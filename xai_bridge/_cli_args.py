"""What the ``xai-bridge`` options mean: ``-p`` items, ``--targets``, ``-m`` names and output paths, checked.

Kept apart from :mod:`xai_bridge.cli` (which re-exports :func:`parse_params`):
reading and refusing what the user typed, before any work is done, is one
idea; running the commands is another.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import click

__all__ = ["check_output", "parse_params", "parse_targets", "require", "unique_methods"]


def require(module: str, extra: str, option: str) -> None:
    """Refuse an option whose optional library is missing before any work is done."""
    if importlib.util.find_spec(module) is None:
        raise click.UsageError(f"{option} needs {module}, which is not installed: pip install 'xai-bridge[{extra}]'")


def check_output(path: Path | None, option: str, folder: bool = False) -> None:
    """Refuse an output path that cannot be written (a file in the way), before any work is done."""
    if path is None:
        return
    if folder and path.exists() and not path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a file; expected a folder", param_hint=option)
    if not folder and path.is_dir():
        raise click.BadParameter(f"{str(path)!r} is a folder; expected a file name", param_hint=option)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise click.BadParameter(f"{str(parent)!r} is a file, not a folder", param_hint=option)
            break


def parse_params(items: tuple[str, ...], methods: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``METHOD:KEY=VALUE`` items -> ``{method: {key: value}}`` (values parsed as JSON when they can be)."""
    out: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for item in items:
        head, eq, raw = item.partition("=")
        method, colon, key = head.rpartition(":")
        if not eq or not colon or not key:
            raise click.BadParameter(f"{item!r}: expected METHOD:KEY=VALUE", param_hint="--param")
        if method not in out:
            raise click.BadParameter(
                f"{item!r}: {method!r} is not one of the methods {list(methods)}", param_hint="--param"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[method][key] = value
    return out


def parse_targets(text: str) -> Any:
    """``--targets``: ``topK`` (K >= 1), a class index or a class name."""
    import xai_bridge as xb

    low = text.strip().lower()
    if low.startswith("top") and low[3:].lstrip("-").isdigit():
        k = int(low[3:].lstrip("-"))
        if k < 1:
            raise click.BadParameter(f"{text!r}: expected top1, top2, ...; K must be >= 1", param_hint="--targets")
        return xb.top_k(k)
    if low.lstrip("-").isdigit():
        if int(low) < 0:
            raise click.BadParameter(f"{text!r}: class indices are >= 0", param_hint="--targets")
        return int(low)
    return text


def unique_methods(methods: tuple[str, ...]) -> tuple[str, ...]:
    """The ``-m`` names, each once; two spellings of one method are refused (their outputs would collide)."""
    import xai_bridge as xb

    registry = xb.default_registry()
    seen: dict[str, str] = {}
    for name in dict.fromkeys(methods):  # -m X -m X runs X once
        try:
            canonical = registry.spec(name).name
        except xb.UnknownMethodError as exc:  # fail before any work (a --dataset run would fail every image)
            raise click.BadParameter(str(exc), param_hint="--method") from exc
        if canonical in seen:
            raise click.BadParameter(
                f"{seen[canonical]!r} and {name!r} are the same method {canonical!r}; give it once",
                param_hint="--method",
            )
        seen[canonical] = name
    return tuple(seen.values())
