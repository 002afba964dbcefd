"""What ``xai-bridge explain`` checks before it loads the model: every method, its ``-p`` values, the targets.

A run of several methods used to report a bad ``-p`` of its last method after
the first ones had run for minutes, and a misspelt class name after the model
had loaded. Here every method is resolved (unknown names and missing
libraries fail), and each backend's own parameter checks run on a stand-in
model that stops the backend at its first use of the model: the checks are
the method's own (``check_params`` and its value checks), never a second copy.
A check a method can only make with the real model is made by the run.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from ._model_spec import one_line

__all__ = ["check_plan", "check_targets", "first_image_size"]


class _Stop(BaseException):
    """Raised by the stand-in model at its first use: every check before it passed.

    A ``BaseException`` so that a backend's ``except Exception`` cannot turn it
    into an error of its own.
    """


class _StandIn:
    """A model that stops the backend the moment it is touched (an attribute, a call)."""

    def __getattr__(self, name: str) -> Any:
        raise _Stop(name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise _Stop("__call__")


def first_image_size(files: Sequence[Path], size: tuple[int, int] | None) -> tuple[int, int]:
    """``(height, width)`` the methods will see: ``--size``, else the first image's (read from its header)."""
    if size is not None:
        return size
    from .images import pil_open

    try:
        with pil_open(files[0]) as img:
            return img.height, img.width
    except (OSError, ValueError):  # not an image: loading reports it with the file's name
        return 224, 224


def check_plan(plan: Sequence[tuple[str, dict[str, Any]]], budget: int | None, hw: tuple[int, int], seed: int) -> None:
    """Run each method's own parameter checks on a stand-in model; a refused parameter is one ``--param`` error.

    Args:
        plan: ``(method, params)`` pairs as the command will run them.
        budget: ``--budget`` (mapped onto each method's own budget parameter, as the run does).
        hw: the images' ``(height, width)``, so size-dependent checks (a window larger than the image) match the run.
        seed: ``--seed``.

    Raises:
        click.BadParameter: a parameter a method refuses, naming the method.
        LibraryNotInstalledError: a method's library is missing (with the pip line).
    """
    import xai_bridge as xb
    from xai_bridge._plan import with_budget
    from xai_bridge.contract import ExplainRequest

    registry = xb.default_registry()
    images = np.zeros((1, *hw, 3), np.uint8)
    for name, params in plan:
        spec, backend = registry.load(name)
        try:
            request = ExplainRequest(
                method=spec.name,
                model=_StandIn(),
                images=images,
                targets=np.zeros((1, 1), np.int64),
                params=with_budget(spec, params, budget),
                seed=seed,
                options=spec.options,
                n_outputs=2,
            )
            backend(request)
        except _Stop:
            continue  # reached the model: every check made before it passed
        except xb.ParameterError as exc:
            raise click.BadParameter(f"{name}: {one_line(exc)}", param_hint="--param") from exc
        except Exception:  # a check that needs the real model: the run makes it
            continue


def check_targets(target: Any, model: Any) -> None:
    """Resolve a class index or name against the loaded model's outputs and class names, before anything runs."""
    if not isinstance(target, (int, str)):
        return  # top-k: resolved from the prediction pass
    from xai_bridge.targets import resolve_targets

    count = getattr(model, "output_count", None)
    resolve_targets(target, 1, None, getattr(model, "class_names", None), count if isinstance(count, int) else None)
