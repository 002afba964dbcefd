"""Shared helpers for the benchmarks: the setup, interleaved timing, output.

Timings on a shared machine are noisy, so every comparison runs its sides
alternately (A B A B ...) after a warm-up and reports medians and the ratio
of medians. No benchmark asserts a time: they print a table and write JSON.

Two setups: the real one (the bundled EfficientNet-Lite0, scikit-image's cat
resized to 224x224, target 285 "Egyptian cat", layer ``bn2``) and ``--quick``
(a tiny seeded CNN on a 32x32 image, for the smoke test; its numbers mean
nothing). ``--device cuda`` puts the model on the GPU (the benchmark plays the
user, who moves the module before wrapping it) and the direct side's tensors
with it; timers are read after :func:`synchronize`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def add_common_args(parser: argparse.ArgumentParser, repeats: int = 3) -> None:
    """The flags every benchmark takes: ``--quick``, ``--repeats``, ``--threads``, ``--results``, ``--device``."""
    parser.add_argument("--quick", action="store_true", help="tiny model and image, few samples (smoke test)")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per side (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for the JSON results")
    parser.add_argument("--device", type=device_arg, default="cpu", help="torch device of the model: cpu, cuda, cuda:1")


def device_arg(value: str) -> str:
    """``--device``: a torch device name; CUDA without a GPU stops the script with one line (not a traceback)."""
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        sys.exit(f"--device: expected cpu, cuda or cuda:N, got {value!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"--device: {value} asked for, but torch.cuda.is_available() is False here; run with --device cpu")
    if device.type not in ("cpu", "cuda"):
        sys.exit(f"--device: expected cpu, cuda or cuda:N, got {value!r}")
    return str(device)


def synchronize(device: str) -> None:
    """Wait for the device's queued kernels (CUDA runs asynchronously), so a timer read after it is true."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def suffix(args: argparse.Namespace) -> str:
    """Result-file suffix: ``-quick`` and the device when not the CPU (``-cuda``), so runs do not overwrite each other."""
    device = str(getattr(args, "device", "cpu"))
    return ("-quick" if args.quick else "") + ("" if device == "cpu" else "-" + device.replace(":", ""))


def setup_threads(n: int = 2) -> None:
    """Pin torch (and the BLAS libraries of child processes) to ``n`` threads."""
    import torch

    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    torch.set_num_threads(n)


@dataclass(frozen=True)
class Setup:
    """A model, an image at the model's input size, and what the direct side needs.

    Attributes:
        model: the xai-bridge ``TorchModel``.
        image: uint8 ``(S, S, 3)`` at the model's input size (resize is a no-op).
        full_image: the same picture at its own resolution.
        target: class index explained.
        layer: dotted name of the CAM layer.
        mean: per-channel mean of the preprocessing (on [0, 1] pixels).
        std: per-channel std.
        quick: the tiny setup.
        name: a description for the JSON.
        device: where the module is (``"cpu"``, ``"cuda"``).
    """

    model: Any
    image: np.ndarray
    full_image: np.ndarray
    target: int
    layer: str
    mean: np.ndarray
    std: np.ndarray
    quick: bool
    name: str
    device: str = "cpu"

    @property
    def net(self) -> Any:
        """The user's ``nn.Module``."""
        return self.model.module

    def tensor(self, images: np.ndarray) -> Any:
        """What a user writes by hand: uint8/float HWC or NHWC -> normalised NCHW float32 tensor."""
        import torch

        x = np.asarray(images, np.float32)
        if x.ndim == 3:
            x = x[None]
        x = (x / 255.0 - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(self.device)

    def logits_np(self, batch: np.ndarray) -> np.ndarray:
        """A hand-written ``f(x)`` for shap/lime: NHWC pixels in [0, 255] -> logits (numpy)."""
        import torch

        with torch.no_grad():
            return self.net(self.tensor(batch)).cpu().numpy()


def tiny_net(seed: int = 0) -> Any:
    """A 2-conv CNN with 5 outputs and seeded weights (the smoke-test model)."""
    import torch
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    net = nn.Sequential()
    net.add_module(
        "features",
        nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()
        ),
    )
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flatten", nn.Flatten())
    net.add_module("fc", nn.Linear(8, 5))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return net.eval()


def load_setup(
    quick: bool = False, batch_size: int = 16, device: str = "cpu", channels_last: bool | None = None
) -> Setup:
    """The benchmark setup (see the module docstring), its module on ``device``.

    ``channels_last``: the TorchModel option (None: decided once per model, the default).
    """
    import xai_bridge as xb

    if quick:
        mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
        pre = xb.Preprocess(size=(32, 32), mean=mean, std=std)
        model = xb.TorchModel(
            tiny_net().to(device), pre, batch_size=batch_size, device=device, channels_last=channels_last
        )
        full = np.random.default_rng(0).integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        image = xb.load_images(full, size=(32, 32))[0]
        name = "tiny CNN, random 32x32 image"
        mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return Setup(model, image, full, 1, "features.3", mean_a, std_a, True, name, device)
    from skimage import data
    from xai_bridge.adapters.models import efficientnet_lite0

    model = efficientnet_lite0(batch_size=batch_size, device=device, channels_last=channels_last)
    pre = model.preprocess
    full = data.chelsea()
    image = xb.load_images(full, size=(224, 224))[0]
    return Setup(
        model,
        image,
        full,
        285,
        "bn2",
        np.asarray(pre.mean, np.float32),
        np.asarray(pre.std, np.float32),
        False,
        "EfficientNet-Lite0, chelsea 224x224",
        device,
    )


def interleaved(
    sides: Mapping[str, Callable[[], Any]],
    repeats: int = 3,
    warmup: int = 1,
    warm: Sequence[str] = (),
    device: str = "cpu",
) -> dict[str, list[float]]:
    """Run each side ``warmup`` times, then ``repeats`` rounds alternating sides; seconds per run.

    The order of the sides alternates between rounds too (A B, B A, ...), so
    neither side always runs right after the other's memory churn. Sides named
    in ``warm`` were already run by the caller and skip the warm-up. On CUDA
    the device is synchronised before each timer is read.
    """
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            if name not in warm:
                sides[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            synchronize(device)
            start = time.perf_counter()
            sides[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    """Median of ``values``."""
    return float(statistics.median(values))


def best_forward_per_image(
    predict: Callable[[np.ndarray], Any],
    image: np.ndarray,
    batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32),
    rounds: int = 5,
    images_per_run: int = 32,
    device: str = "cpu",
) -> tuple[float, int]:
    """Seconds per image of ``predict`` at its best batch size, and that batch size.

    ``predict`` must run each call as one batch (a ``TorchModel`` with
    ``tune_batch=False`` and a large ``batch_size``). Every size runs
    ``images_per_run`` images per timing (several calls for small sizes), the
    sizes take turns for ``rounds`` rounds after a warm-up, and each size's
    median counts: one pass per size would mostly measure the machine's drift.
    """
    batches = {b: np.repeat(image[None], b, axis=0) for b in batch_sizes}

    def run(b: int) -> None:
        for _ in range(max(1, images_per_run // b)):
            predict(batches[b])

    times: dict[int, list[float]] = {b: [] for b in batch_sizes}
    for b in batch_sizes:
        run(b)
    for r in range(rounds):
        for b in batch_sizes if r % 2 == 0 else batch_sizes[::-1]:
            synchronize(device)
            start = time.perf_counter()
            run(b)
            synchronize(device)
            times[b].append((time.perf_counter() - start) / (max(1, images_per_run // b) * b))
    return min((median(ts), b) for b, ts in times.items())


def machine(device: str = "cpu") -> dict[str, Any]:
    """Where the numbers were taken: CPU count, load, torch threads, versions, the GPU when on one."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    gpu: dict[str, Any] = {}
    if device.startswith("cuda"):
        gpu = {"device": device, "gpu": torch.cuda.get_device_name(device), "cuda": torch.version.cuda}
    return {
        **gpu,
        "cpus": os.cpu_count(),
        "load_avg": [round(v, 2) for v in load] if load else None,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def write(name: str, result: Mapping[str, Any], folder: Path = RESULTS) -> Path:
    """Write ``result`` to ``folder/<name>.json`` and return the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=_jsonable))
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (floats with 3 decimals, missing cells blank)."""

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    widths = [max(len(c), *(len(fmt(r.get(c))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=False))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(fmt(r.get(c)).ljust(w) for c, w in zip(columns, widths, strict=False)) for r in rows]
    return "\n".join(lines)


def verdict(value: float | None, target: float, higher_is_better: bool = False) -> str:
    """``"met"`` / ``"MISSED"`` for a ratio against its target ('' when not measured)."""
    if value is None:
        return ""
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


#: scikit-image's colour pictures the multi-image benchmarks cycle through (seed 000's four first).
PICTURES = (
    "chelsea",
    "astronaut",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
)


def pictures(quick: bool, n: int, size: tuple[int, int]) -> np.ndarray:
    """``n`` uint8 images at the model's input size (scikit-image's colour pictures, cycled)."""
    import xai_bridge as xb

    if quick:
        return np.random.default_rng(0).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)
    from skimage import data

    return xb.load_images([getattr(data, PICTURES[i % len(PICTURES)])() for i in range(n)], size=size)
