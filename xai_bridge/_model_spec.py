"""Build the model a command-line spec names: ``efficientnet_lite0``, ``model.onnx``, ``module:factory`` or ``file.py:factory``.

Kept apart from :mod:`xai_bridge.cli` (which re-exports :func:`load_model_spec`):
importing the user's module, with its failures turned into one-line CLI errors,
is its own idea.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

__all__ = ["load_model_spec", "one_line"]


def one_line(exc: BaseException, limit: int = 600) -> str:
    """``exc``'s message on one line (libraries put newlines in theirs), cut at ``limit`` characters."""
    text = "; ".join(part.strip() for part in str(exc).splitlines() if part.strip()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _on_path(*folders: Path) -> Iterator[None]:
    """Put ``folders`` first on ``sys.path`` for an import, and take them off again.

    A console script does not put the current directory on ``sys.path`` as
    ``python -m`` does, so ``module:factory`` would not find a module there.
    """
    added = [str(f) for f in folders if str(f) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(entry)


def load_model_spec(spec: str, preprocess: str = "imagenet", batch_size: int = 16) -> Any:
    """Build the model named by ``spec`` (see the module docstring)."""
    import xai_bridge as xb

    if spec in ("efficientnet_lite0", "efficientnet-lite0"):  # a bundled model: as_model's table knows it
        return xb.as_model(spec, batch_size=batch_size)
    if spec.lower().endswith(".onnx"):  # as_model's table opens an ONNX file by its path
        if not Path(spec).is_file():
            raise click.BadParameter(f"file {spec!r} does not exist", param_hint="MODEL")
        obj: Any = spec
    else:
        obj = _from_factory(spec)
        if isinstance(obj, xb.Model) and hasattr(obj, "output_kind"):
            return obj
    pre = None
    if preprocess != "none":
        pre = {
            "imagenet": xb.Preprocess.imagenet,
            "inception": xb.Preprocess.inception,
            "caffe": xb.Preprocess.caffe,
            "unit": lambda: xb.Preprocess(scale=xb.Scale.UNIT),
        }[preprocess]()
    try:
        return xb.as_model(obj, preprocess=pre, batch_size=batch_size)
    except xb.ModelInputError as exc:
        raise click.ClickException(f"MODEL: {spec} returned an unusable model: {one_line(exc)}") from exc


def _from_factory(spec: str) -> Any:
    """Call the factory of a ``module:factory`` or ``file.py:factory`` spec and return what it returns."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise click.BadParameter(
            f"{spec!r}: expected efficientnet_lite0, path/to/model.onnx, module:factory or file.py:factory "
            "(see xai-bridge explain --help)",
            param_hint="MODEL",
        )
    module = _import_target(target)
    if not hasattr(module, attr):
        raise click.BadParameter(f"{target!r} has no attribute {attr!r}", param_hint="MODEL")
    try:
        with _on_path(Path.cwd()):
            return getattr(module, attr)()
    except Exception as exc:  # the user's factory: say which one failed and why
        raise click.ClickException(f"MODEL: {spec} raised {type(exc).__name__}: {one_line(exc)}") from exc


def _import_target(target: str) -> Any:
    """Import the module (or ``.py`` file) of a ``module:factory`` spec, turning its failures into CLI errors."""
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.is_file():
                raise click.BadParameter(f"file {target!r} does not exist", param_hint="MODEL")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            if mod_spec is None or mod_spec.loader is None:
                raise click.BadParameter(f"{target!r} cannot be loaded as a Python file", param_hint="MODEL")
            module = importlib.util.module_from_spec(mod_spec)
            with _on_path(path.resolve().parent):
                mod_spec.loader.exec_module(module)
        else:
            with _on_path(Path.cwd()):
                module = importlib.import_module(target)
    except click.ClickException:
        raise
    except ModuleNotFoundError as exc:
        inner = "" if exc.name == target else f" (it imports {exc.name!r}, which is not installed)"
        raise click.BadParameter(f"cannot import {target!r}{inner}: {exc}", param_hint="MODEL") from exc
    except SyntaxError as exc:
        raise click.BadParameter(
            f"{target!r} has a syntax error: {exc.msg} ({exc.filename}, line {exc.lineno})", param_hint="MODEL"
        ) from exc
    except Exception as exc:  # the user's module failed while it was imported
        raise click.BadParameter(
            f"cannot import {target!r}: {type(exc).__name__}: {one_line(exc)}", param_hint="MODEL"
        ) from exc
    return module
