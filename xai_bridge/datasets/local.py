"""Explain whole folders of images, resumably, locally or on Ray (see :mod:`xai_bridge.datasets.store`).

Images are streamed from a folder, a glob or a list file, batched by size,
and each image's Explanations are written as soon as they are done.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from xai_bridge.errors import ImageInputError, ParameterError
from xai_bridge.explanation import qualified_name
from xai_bridge.images import load_image
from xai_bridge.progress import ProgressArg, session
from xai_bridge.targets import TargetSpec, TopK

from .store import DatasetSummary, Store, image_key, list_sources, model_fingerprint

__all__ = ["build_model", "explain_dataset", "model_factory"]

MethodList = Sequence["str | tuple[str, Mapping[str, Any]]"]


def explain_dataset(
    model: Any,
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    methods: MethodList,
    out: str | os.PathLike[str],
    *,
    targets: TargetSpec = "top1",
    seed: int = 0,
    batch_size: int = 16,
    size: tuple[int, int] | None = None,
    engine: str = "local",
    num_workers: int = 2,
    retry_failed: bool = False,
    progress: ProgressArg = "auto",
    preprocess: Any = None,
    model_id: str | None = None,
) -> DatasetSummary:
    """Explain every image of ``source`` with ``methods`` into the store ``out``.

    Args:
        model: as for :func:`xai_bridge.explain` (a Model, a torch module with
            ``preprocess``, or a callable). With ``engine="ray"`` a zero-argument
            callable returning the model may be passed as ``model`` to build it once
            per worker (mark it with :func:`model_factory`).
        source: a folder, a glob pattern, a list file or a list of paths.
        methods: method names or ``(name, params)`` pairs.
        out: the store folder; an existing store resumes.
        targets: ``"top1"``, ``top_k(k)``, an index or a class name (one spec
            for every image).
        seed: random seed.
        batch_size: images explained per call (consecutive images of the same
            size are batched together).
        size: resize every image to ``(height, width)`` first.
        engine: ``"local"`` (in this process) or ``"ray"`` (``pip install ray``).
        num_workers: Ray actors (ignored locally).
        retry_failed: try images that failed in an earlier run again.
        progress: a bar counting images with rate and ETA, and the model
            evaluations of the running batch beside it: True, False or ``"auto"``
            (in terminals and notebooks, once the run has taken 2 s).
        preprocess: declared preprocessing when ``model`` is a bare torch module.
        model_id: a name for the model, kept in the store instead of its
            fingerprint (by default the class, parameter shapes and a hash of
            the weights of a torch model; a factory run on Ray, or a black
            box, is known only by its qualified name). A resume with another
            model is refused either way.

    Returns:
        A :class:`DatasetSummary`; bad images are listed there, never raised.
    """
    if engine not in ("local", "ray"):
        raise ParameterError(f"engine: expected 'local' or 'ray', got {engine!r}")
    if int(batch_size) < 1:
        raise ParameterError(f"batch_size: expected a positive integer, got {batch_size}")
    if not isinstance(targets, (str, int, TopK)) and targets is not None:
        raise ParameterError("targets: use one spec for all images ('top1', top_k(k), an index or a class name)")
    plan = [(m, {}) if isinstance(m, str) else (m[0], dict(m[1])) for m in methods]
    if not plan:
        raise ParameterError("methods: pass at least one method name")
    start = time.perf_counter()
    from xai_bridge.models import as_model

    wrapped = None  # the local engine's model, built here: its fingerprint is checked before any work
    if engine == "local":
        wrapped = as_model(build_model(model), preprocess=preprocess)
        identity = model_fingerprint(wrapped, model_id)
    elif _is_factory(model) or model_id is not None:
        identity = model_fingerprint(model, model_id) if model_id is not None else {"factory": qualified_name(model)}
    else:
        identity = model_fingerprint(as_model(model, preprocess=preprocess))
    store = Store(Path(out))
    store.check_manifest({"methods": plan, "targets": targets, "seed": seed, "size": size, "model": identity})
    paths = list_sources(source)
    pending, skipped, changed, seen = [], 0, [], set()
    for path in paths:
        key = image_key(path)
        if key in seen:  # listed twice: explained once
            continue
        seen.add(key)
        status = store.status(key)
        if status == "done" or (status == "failed" and not retry_failed):
            skipped += 1
            continue
        if store.replaced_key(str(path), key) is not None:
            changed.append(str(path))
        pending.append((key, path))
    job = _Job(plan=plan, targets=targets, seed=int(seed), size=size, preprocess=preprocess)
    bar_context = session(progress, "explain", total=len(pending), unit="img")
    bar = bar_context.__enter__()  # entered here, left in the finally below: the explain calls join this bar
    failed: list[tuple[str, str]] = []

    def finished(rec: Mapping[str, Any]) -> None:
        store.record(rec)
        if rec["status"] == "failed":
            failed.append((rec["path"], rec["reason"]))
        bar.advance(1)

    try:
        if engine == "ray":
            from .ray_engine import run_ray

            run_ray(
                model,
                job,
                _batches(pending, job, int(batch_size), finished),
                store.root,
                finished,
                num_workers=int(num_workers),
                is_factory=_is_factory(model),
            )
        else:
            for batch in _batches(pending, job, int(batch_size), finished):
                for rec in job.run(wrapped, batch, store.root):
                    finished(rec)
    finally:
        bar_context.__exit__(None, None, None)
    done = len(pending) - len(failed)
    return DatasetSummary(
        done=done,
        skipped=skipped,
        failed=tuple(failed),
        seconds=time.perf_counter() - start,
        store=str(store.root),
        engine=engine,
        changed=tuple(changed),
    )


def model_factory(fn: Any) -> Any:
    """Mark a zero-argument callable as a model factory (built once per Ray worker)."""
    fn.__xai_bridge_factory__ = True
    return fn


def _is_factory(model: Any) -> bool:
    return bool(getattr(model, "__xai_bridge_factory__", False))


def build_model(model: Any, is_factory: bool | None = None) -> Any:
    """The model itself, or what a factory returns (decided on the driver: the mark does not survive pickling)."""
    return model() if (_is_factory(model) if is_factory is None else is_factory) else model


@dataclass(frozen=True)
class _Batch:
    keys: tuple[str, ...]
    paths: tuple[str, ...]
    images: np.ndarray


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to explain a batch and write its files."""

    plan: list[tuple[str, dict[str, Any]]]
    targets: Any
    seed: int
    size: tuple[int, int] | None
    preprocess: Any

    def run(self, model: Any, batch: _Batch, root: Path) -> list[dict[str, Any]]:
        """Explain one batch and write its files; return one index record per image."""
        from xai_bridge.routing import explain_many

        try:
            results = explain_many(model, batch.images, self.plan, self.targets, seed=self.seed)
        except Exception as exc:
            if len(batch.keys) == 1:
                return [_failed(batch.keys[0], batch.paths[0], f"{type(exc).__name__}: {exc}")]
            return [
                rec
                for i in range(len(batch.keys))
                for rec in self.run(
                    model, _Batch(batch.keys[i : i + 1], batch.paths[i : i + 1], batch.images[i : i + 1]), root
                )
            ]
        records = []
        for i, (key, path) in enumerate(zip(batch.keys, batch.paths, strict=False)):
            files = {}
            for name, exp in results.items():
                # per-image cost: the batch's evaluations and time shared evenly
                one = replace(
                    exp[i], n_model_evals=exp.n_model_evals // len(batch.keys), seconds=exp.seconds / len(batch.keys)
                )
                target = root / name / f"{key}.npz"
                one.save(target)
                files[name] = str(target.relative_to(root))
            records.append({"key": key, "path": path, "status": "done", "files": files})
        return records


def _failed(key: str, path: str, reason: str) -> dict[str, Any]:
    return {"key": key, "path": path, "status": "failed", "reason": reason}


def _batches(pending: Sequence[tuple[str, Path]], job: _Job, batch_size: int, finished: Any) -> Iterator[_Batch]:
    """Load images one by one (bad ones reported through ``finished``) and group same-size runs."""
    keys: list[str] = []
    paths: list[str] = []
    images: list[np.ndarray] = []

    def flush() -> _Batch:
        batch = _Batch(tuple(keys), tuple(paths), np.stack(images))
        keys.clear()
        paths.clear()
        images.clear()
        return batch

    for key, path in pending:
        try:
            img = load_image(path, size=job.size)
        except (ImageInputError, OSError) as exc:
            finished(_failed(key, str(path), str(exc)))
            continue
        if images and (img.shape != images[0].shape or len(images) == batch_size):
            yield flush()
        keys.append(key)
        paths.append(str(path))
        images.append(img)
    if images:
        yield flush()
