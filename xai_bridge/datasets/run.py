"""``explain_dataset``: explain whole folders of images, resumably, on the local or Ray engine.

Images are streamed from a folder, a glob or a list file, grouped into chunks
of one size, and each image's Explanations are written as soon as they are
done (see :mod:`.store` for the layout, :mod:`.local` and :mod:`.ray_engine`
for the engines).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from xai_bridge.errors import ParameterError
from xai_bridge.explanation import qualified_name
from xai_bridge.progress import ProgressArg, session
from xai_bridge.targets import TargetSpec, TopK

from .local import Job, build_model, is_factory, read_chunks
from .store import DatasetSummary, Store, image_key, list_sources, model_fingerprint

__all__ = ["explain_dataset"]

MethodList = Sequence["str | tuple[str, Mapping[str, Any]]"]

#: Marks a keyword left out (``targets`` may be given positionally or by name, not both).
_UNSET: Any = object()


def explain_dataset(
    model: Any,
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    methods: MethodList,
    /,
    *args: Any,
    out: str | os.PathLike[str] | None = None,
    targets: TargetSpec = _UNSET,
    budget: int | None = None,
    seed: int = 0,
    chunk_size: int | None = None,
    size: tuple[int, int] | None = None,
    engine: str = "local",
    num_workers: int = 2,
    retry_failed: bool = False,
    progress: ProgressArg = "auto",
    preprocess: Any = None,
    model_id: str | None = None,
    batch_size: int | None = None,
) -> DatasetSummary:
    """Explain every image of ``source`` with ``methods`` into the store ``out``.

    The shape of :func:`xai_bridge.explain_many`: ``explain_dataset(model,
    source, methods, targets="top1", *, out, ...)``. ``out`` as the fourth
    positional argument and ``batch_size=`` still work for one release, with
    a ``DeprecationWarning``.

    Args:
        model: as for :func:`xai_bridge.explain` (a Model, a torch module with
            ``preprocess``, or a callable). With ``engine="ray"`` a zero-argument
            callable returning the model may be passed as ``model`` to build it once
            per worker (mark it with :func:`model_factory`).
        source: a folder, a glob pattern, a list file or a list of paths.
        methods: method names or ``(name, params)`` pairs.
        *args: ``targets`` given positionally (or, deprecated, ``out``).
        out: the store folder; an existing store resumes.
        targets: ``"top1"``, ``top_k(k)``, an index or a class name (one spec
            for every image).
        budget: model evaluations per image, as in :func:`xai_bridge.explain`
            (mapped onto each method's own budget parameter, and recorded so in
            the store's manifest).
        seed: random seed.
        chunk_size: images per chunk explained and written together (consecutive
            images of the same size share a chunk); 16 by default.
        size: resize every image to ``(height, width)`` first.
        engine: ``"local"`` (in this process) or ``"ray"`` (``pip install ray``).
        num_workers: Ray actors (ignored locally).
        retry_failed: try images that failed in an earlier run again.
        progress: a bar counting images with rate and ETA, and the model
            evaluations of the running chunk beside it: True, False or ``"auto"``
            (in terminals and notebooks, once the run has taken 2 s).
        preprocess: declared preprocessing when ``model`` is a bare torch module.
        model_id: a name for the model, kept in the store instead of its
            fingerprint (by default the class, parameter shapes and a hash of
            the weights of a torch model; a factory run on Ray, or a black
            box, is known only by its qualified name). A resume with another
            model is refused either way.
        batch_size: deprecated name of ``chunk_size``.

    Returns:
        A :class:`DatasetSummary`; bad images are listed there, never raised.
    """
    out, targets = _out_and_targets(args, out, targets)
    chunk = _chunk_size(chunk_size, batch_size)
    if engine not in ("local", "ray"):
        raise ParameterError(f"engine: expected 'local' or 'ray', got {engine!r}")
    if not isinstance(targets, (str, int, TopK)) and targets is not None:
        raise ParameterError("targets: use one spec for all images ('top1', top_k(k), an index or a class name)")
    plan = _plan(methods, budget)
    start = time.perf_counter()
    wrapped, identity = _model_identity(model, engine, preprocess, model_id)
    store = Store(Path(out))
    store.check_manifest({"methods": plan, "targets": targets, "seed": seed, "size": size, "model": identity})
    pending, skipped, changed = _pending(store, list_sources(source), retry_failed)
    job = Job(plan=plan, targets=targets, seed=int(seed), size=size, preprocess=preprocess)
    run = (engine, model, wrapped, int(num_workers))
    failed = _explain_pending(run, job, store, pending, chunk, progress)
    return DatasetSummary(
        done=len(pending) - len(failed),
        skipped=skipped,
        failed=tuple(failed),
        seconds=time.perf_counter() - start,
        store=str(store.root),
        engine=engine,
        changed=tuple(changed),
    )


def _explain_pending(
    run: tuple[str, Any, Any, int],
    job: Job,
    store: Store,
    pending: list[tuple[str, Path]],
    chunk_size: int,
    progress: ProgressArg,
) -> list[tuple[str, str]]:
    """Explain the pending images under one progress bar, recording each; returns the ``(path, reason)`` failures.

    ``run`` is ``(engine, model as given, the local engine's wrapped model, Ray workers)``.
    """
    failed: list[tuple[str, str]] = []
    with session(progress, "explain", total=len(pending), unit="img") as bar:  # the explain calls join this bar

        def finished(rec: Mapping[str, Any]) -> None:
            store.record(rec)
            if rec["status"] == "failed":
                failed.append((rec["path"], rec["reason"]))
            bar.advance(1)

        engine, model, wrapped, num_workers = run
        chunks = read_chunks(pending, job, chunk_size, finished)
        _run_engine(engine, model, wrapped, job, chunks, store.root, finished, num_workers)
    return failed


def _out_and_targets(args: tuple[Any, ...], out: Any, targets: Any) -> tuple[Any, Any]:
    """Sort the positional extras into ``out`` and ``targets``, warning on the old ``out`` position."""
    if len(args) > 1:
        raise ParameterError(
            f"explain_dataset: expected at most 4 positional arguments (model, source, methods, targets), got "
            f"{3 + len(args)}; pass out= and the rest by keyword"
        )
    if args and out is None:
        warnings.warn(
            "explain_dataset(model, source, methods, out) is deprecated: pass the store as a keyword, "
            "explain_dataset(model, source, methods, out=...)",
            DeprecationWarning,
            stacklevel=3,
        )
        out = args[0]
    elif args:
        if targets is not _UNSET:
            raise ParameterError("targets: given both positionally and as a keyword; pass it once")
        targets = args[0]
    if out is None:
        raise ParameterError("out: expected the store folder, got nothing; pass out='path/to/store'")
    return out, "top1" if targets is _UNSET else targets


def _chunk_size(chunk_size: int | None, batch_size: int | None) -> int:
    """``chunk_size``, or the deprecated ``batch_size`` with a warning; 16 when neither is given."""
    if batch_size is not None:
        if chunk_size is not None:
            raise ParameterError("chunk_size: given together with its deprecated name batch_size; pass only chunk_size")
        warnings.warn(
            "explain_dataset(batch_size=...) is deprecated: pass chunk_size=... (images per chunk written); "
            "batch_size means images per model call elsewhere in xai-bridge",
            DeprecationWarning,
            stacklevel=3,
        )
        chunk_size = batch_size
    chunk = 16 if chunk_size is None else int(chunk_size)
    if chunk < 1:
        name = "batch_size" if batch_size is not None else "chunk_size"
        raise ParameterError(f"{name}: expected a positive integer, got {chunk}")
    return chunk


def _plan(methods: MethodList, budget: int | None) -> list[tuple[str, dict[str, Any]]]:
    """``(name, params)`` per method, with ``budget`` folded into each method's own budget parameter.

    Folding it here (not passing it per chunk) records the real parameters in
    the manifest, and refuses a method without a budget before any image runs.
    """
    from xai_bridge._plan import checked_budget as _checked_budget
    from xai_bridge._plan import with_budget
    from xai_bridge.registry import default_registry

    plan = [(m, {}) if isinstance(m, str) else (m[0], dict(m[1])) for m in methods]
    if not plan:
        raise ParameterError("methods: pass at least one method name")
    budget = _checked_budget(budget)
    if budget is None:
        return plan
    registry = default_registry()
    folded = []
    for name, params in plan:
        spec = registry.spec(name)
        if spec.budget is None:
            raise ParameterError(
                f"budget: {spec.name} has no evaluation budget, its cost is set by its own parameters; "
                f"drop budget={budget} and set those in (name, params) pairs"
            )
        folded.append((name, with_budget(spec, params, budget)))
    return folded


def _model_identity(model: Any, engine: str, preprocess: Any, model_id: str | None) -> tuple[Any, Any]:
    """The local engine's wrapped model (built here, so its fingerprint is checked before any work) and the identity."""
    from xai_bridge.models import as_model

    if engine == "local":
        wrapped = as_model(build_model(model), preprocess=preprocess)
        return wrapped, model_fingerprint(wrapped, model_id)
    if is_factory(model) or model_id is not None:
        identity = model_fingerprint(model, model_id) if model_id is not None else {"factory": qualified_name(model)}
        return None, identity
    return None, model_fingerprint(as_model(model, preprocess=preprocess))


def _pending(store: Store, paths: Iterable[Path], retry_failed: bool) -> tuple[list[tuple[str, Path]], int, list[str]]:
    """The images still to explain (each once), how many were skipped, and the paths whose file changed."""
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
    return pending, skipped, changed


def _run_engine(
    engine: str,
    model: Any,
    wrapped: Any,
    job: Job,
    chunks: Iterable[Any],
    root: Path,
    finished: Callable[[Mapping[str, Any]], None],
    num_workers: int,
) -> None:
    """Run every chunk on the chosen engine, reporting each image's record through ``finished``."""
    if engine == "ray":
        from .ray_engine import run_ray

        run_ray(model, job, chunks, root, finished, num_workers=int(num_workers), is_factory=is_factory(model))
        return
    for chunk in chunks:
        for rec in job.run(wrapped, chunk, root):
            finished(rec)
