"""Shared helpers for the benchmarks: interleaved timing, the real model, output.

Timings on a shared machine are noisy, so every comparison runs its two sides
alternately (A B A B ...) after a warm-up and reports medians and the ratio
of medians. No benchmark asserts a time: they print.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def setup_threads(n: int = 2) -> None:
    """Pin torch to ``n`` threads (the benchmarks' stated setting)."""
    import torch

    torch.set_num_threads(n)


def chelsea_224() -> np.ndarray:
    """scikit-image's cat resized to 224x224 uint8 (so resizing is a no-op on both sides)."""
    from skimage import data

    import xai_bridge as xb

    return xb.load_images(data.chelsea(), size=(224, 224))[0]


def to_tensor(image: np.ndarray) -> Any:
    """What a user writes by hand: HWC uint8 -> normalised NCHW float tensor."""
    import torch

    x = (image.astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x.transpose(2, 0, 1)[None].copy())


def interleaved(sides: dict[str, Callable[[], Any]], repeats: int = 3, warmup: int = 1) -> dict[str, list[float]]:
    """Run each side ``warmup`` times, then ``repeats`` rounds alternating sides; seconds per run."""
    for _ in range(warmup):
        for fn in sides.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def best_forward_per_image(predict: Callable[[np.ndarray], Any], image: np.ndarray,
                           batch_sizes: tuple[int, ...] = (1, 8, 16, 32, 64)) -> tuple[float, int]:
    """Fastest seconds per image of ``predict`` over several batch sizes, and that batch size."""
    best = (float("inf"), 1)
    for b in batch_sizes:
        batch = np.repeat(image[None], b, axis=0)
        predict(batch)
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            predict(batch)
            runs.append((time.perf_counter() - start) / b)
        best = min(best, (min(runs), b))
    return best


def write(name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` to benchmarks/results/<name>.json and return the path."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table of ``rows``."""
    def fmt(v: Any) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)
