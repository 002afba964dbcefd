"""Run :func:`xai_bridge.datasets.explain_dataset` on a Ray cluster.

Actors each hold one copy of the model (built once per actor: the model object
is shipped once with ``ray.put``, or a factory marked with
:func:`xai_bridge.datasets.model_factory` is called in the actor). Actors write
the ``.npz`` files into the shared store folder; the driver appends the index
lines as chunks finish, so the store layout is the local engine's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from xai_bridge.errors import ParameterError

__all__ = ["run_ray"]


def run_ray(
    model: Any,
    job: Any,
    chunks: Iterable[Any],
    root: Path,
    finished: Callable[[Mapping[str, Any]], None],
    num_workers: int = 2,
    is_factory: bool = False,
) -> None:
    """Explain ``chunks`` on ``num_workers`` Ray actors.

    Uses the running Ray instance, or starts a local one (``ray.init()``) and
    shuts it down afterwards.
    """
    try:
        import ray
    except ImportError as exc:
        raise ImportError("engine='ray' needs ray: pip install 'xai-bridge[ray]'") from exc
    if num_workers < 1:
        raise ParameterError(f"num_workers: expected a positive integer, got {num_workers}")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=num_workers, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote(num_cpus=1)
        class Worker:
            def __init__(self, model_ref: Any, job: Any, is_factory: bool) -> None:
                from xai_bridge.datasets.local import build_model
                from xai_bridge.models import as_model

                self.model = as_model(build_model(model_ref, is_factory), preprocess=job.preprocess)
                self.job = job

            def run(self, chunk: Any, root: str) -> list[dict[str, Any]]:
                return self.job.run(self.model, chunk, Path(root))

        model_ref = ray.put(model)
        actor: Any = Worker  # ray.remote adds .remote
        workers = [actor.remote(model_ref, job, is_factory) for _ in range(num_workers)]
        in_flight: list[Any] = []
        for turn, chunk in enumerate(chunks):
            if len(in_flight) >= 2 * num_workers:
                ready, in_flight = ray.wait(in_flight, num_returns=1)
                for rec in ray.get(ready[0]):
                    finished(rec)
            in_flight.append(workers[turn % num_workers].run.remote(chunk, str(root)))
        while in_flight:
            ready, in_flight = ray.wait(in_flight, num_returns=1)
            for rec in ray.get(ready[0]):
                finished(rec)
    finally:
        if started:
            ray.shutdown()
