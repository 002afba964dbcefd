"""The local engine of :func:`xai_bridge.datasets.explain_dataset`: chunks of images explained in this process.

A :class:`Job` is everything a worker needs to explain a chunk and write its
files; the Ray engine (:mod:`.ray_engine`) ships the same job to its actors.
:func:`read_chunks` streams the images, one by one, into chunks of one size.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xai_bridge.errors import ImageInputError
from xai_bridge.images import load_image

__all__ = ["Chunk", "Job", "build_model", "is_factory", "model_factory", "read_chunks"]


def model_factory(fn: Any) -> Any:
    """Mark a zero-argument callable as a model factory (built once per Ray worker)."""
    fn.__xai_bridge_factory__ = True
    return fn


def is_factory(model: Any) -> bool:
    """Whether ``model`` was marked with :func:`model_factory`."""
    return bool(getattr(model, "__xai_bridge_factory__", False))


def build_model(model: Any, factory: bool | None = None) -> Any:
    """The model itself, or what a factory returns (decided on the driver: the mark does not survive pickling)."""
    return model() if (is_factory(model) if factory is None else factory) else model


@dataclass(frozen=True)
class Chunk:
    """Images of one size explained together, with their store keys and source paths."""

    keys: tuple[str, ...]
    paths: tuple[str, ...]
    images: np.ndarray


@dataclass(frozen=True)
class Job:
    """Everything a worker needs to explain a chunk and write its files."""

    plan: list[tuple[str, dict[str, Any]]]
    targets: Any
    seed: int
    size: tuple[int, int] | None
    preprocess: Any

    def run(self, model: Any, chunk: Chunk, root: Path) -> list[dict[str, Any]]:
        """Explain one chunk and write its files; return one index record per image."""
        from xai_bridge.routing import explain_many

        try:
            results = explain_many(model, chunk.images, self.plan, self.targets, seed=self.seed)
        except Exception as exc:
            if len(chunk.keys) == 1:
                return [_failed(chunk.keys[0], chunk.paths[0], f"{type(exc).__name__}: {exc}")]
            return [
                rec
                for i in range(len(chunk.keys))
                for rec in self.run(
                    model, Chunk(chunk.keys[i : i + 1], chunk.paths[i : i + 1], chunk.images[i : i + 1]), root
                )
            ]
        records = []
        for i, (key, path) in enumerate(zip(chunk.keys, chunk.paths, strict=False)):
            files = {}
            for name, exp in results.items():
                # per-image cost: the chunk's evaluations and time shared evenly
                one = replace(
                    exp[i], n_model_evals=exp.n_model_evals // len(chunk.keys), seconds=exp.seconds / len(chunk.keys)
                )
                target = root / name / f"{key}.npz"
                one.save(target)
                files[name] = str(target.relative_to(root))
            records.append({"key": key, "path": path, "status": "done", "files": files})
        return records


def _failed(key: str, path: str, reason: str) -> dict[str, Any]:
    return {"key": key, "path": path, "status": "failed", "reason": reason}


def read_chunks(
    pending: Sequence[tuple[str, Path]], job: Job, chunk_size: int, finished: Callable[[Mapping[str, Any]], None]
) -> Iterator[Chunk]:
    """Load images one by one (bad ones reported through ``finished``) and group same-size runs."""
    keys: list[str] = []
    paths: list[str] = []
    images: list[np.ndarray] = []

    def flush() -> Chunk:
        chunk = Chunk(tuple(keys), tuple(paths), np.stack(images))
        keys.clear()
        paths.clear()
        images.clear()
        return chunk

    for key, path in pending:
        try:
            img = load_image(path, size=job.size)
        except (ImageInputError, OSError) as exc:
            finished(_failed(key, str(path), str(exc)))
            continue
        if images and (img.shape != images[0].shape or len(images) == chunk_size):
            yield flush()
        keys.append(key)
        paths.append(str(path))
        images.append(img)
    if images:
        yield flush()


def __getattr__(name: str) -> Any:
    """``explain_dataset`` moved to :mod:`.run`; importing it from here warns for one release."""
    if name == "explain_dataset":
        warnings.warn(
            "xai_bridge.datasets.local.explain_dataset moved: import it from xai_bridge.datasets",
            DeprecationWarning,
            stacklevel=2,
        )
        from .run import explain_dataset

        return explain_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
