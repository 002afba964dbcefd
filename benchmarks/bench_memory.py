"""Peak memory of Integrated Gradients (200 steps, one 224x224 image) vs ``internal_batch_size``.

Each setting runs ``xai_bridge.explain(..., "captum.IntegratedGradients")`` in a
fresh subprocess (so peaks do not mix) and reports its peak resident set size
(``resource.getrusage(...).ru_maxrss``), the peak above the process' own
baseline after loading the model, the time and captum's convergence delta
(the same for every setting: batching must not change the result). Settings
run from the smallest batch up; a setting whose peak, extrapolated linearly
from the smaller ones, would not fit in 85% of the available memory is
skipped and reported as such. ``0`` means ``internal_batch_size=None``
(xai-bridge's default: the model's ``batch_size``). With ``--device cuda`` each
row also reports ``torch.cuda.max_memory_allocated`` above what the loaded
model holds (``gpu_above_baseline_mb``), and the skip rule uses the GPU's free
memory and those figures.

    .venv/bin/python benchmarks/bench_memory.py [--steps 200] [--sizes 200 50 10 0] [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, machine, suffix, table, write

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {here!r})
from common import load_setup, setup_threads
setup_threads({threads})
import torch
import xai_bridge as xb
device = {device!r}
cuda = device.startswith("cuda")
s = load_setup({quick!r}, batch_size={batch}, device=device)
s.model.predict(s.image[None])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if cuda:
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    gpu_base = torch.cuda.memory_allocated(device)
start = time.perf_counter()
exp = xb.explain(s.model, s.image, "captum.IntegratedGradients", targets=s.target, n_steps={steps},
                 internal_batch_size={size})
if cuda:
    torch.cuda.synchronize(device)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
delta = float(exp.extras["convergence_delta"][0, 0]) if "convergence_delta" in exp.extras else None
row = {{"peak_mb": peak / 1024, "baseline_mb": base / 1024, "seconds": seconds, "delta": delta,
       "internal_batch_size": exp.params["internal_batch_size"]}}
if cuda:
    row["gpu_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    row["gpu_baseline_mb"] = gpu_base / 2**20
print(json.dumps(row))
"""


def available_mb(device: str = "cpu") -> float | None:
    """MemAvailable from /proc/meminfo in MiB, or the GPU's free memory on CUDA (None where unknown)."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.mem_get_info(device)[0] / 2**20
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def predicted_mb(rows: list[dict[str, Any]], size: int, key: str = "above_baseline_mb") -> float | None:
    """Peak above baseline (``key``) at ``size``, extrapolated linearly from the measured rows (None: too few)."""
    pts = [(r["effective_batch"], r[key]) for r in rows if key in r]
    if len(pts) < 2 or pts[-1][0] == pts[0][0]:
        return None
    (x0, y0), (x1, y1) = pts[0], pts[-1]
    slope = (y1 - y0) / (x1 - x0)
    return y1 + slope * (size - x1)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, repeats=1)
    parser.add_argument("--steps", type=int, default=None, help="IG steps (200; 20 with --quick)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=None, help="internal_batch_size values, 0 = None (default 200 50 10 0)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="the model's batch_size (used by size 0)")
    args = parser.parse_args(argv)
    steps = args.steps or (20 if args.quick else 200)
    sizes = args.sizes or ([20, 5, 0] if args.quick else [200, 50, 10, 0])
    order = sorted(sizes, key=lambda v: v or args.batch_size)
    here = str(Path(__file__).resolve().parent)
    rows: list[dict[str, Any]] = []
    cuda = args.device.startswith("cuda")
    for size in order:
        effective = size or args.batch_size
        guess = predicted_mb(rows, effective, "gpu_above_baseline_mb" if cuda else "above_baseline_mb")
        free = available_mb(args.device)
        if guess is not None and free is not None and guess > 0.85 * free:
            rows.append(
                {
                    "internal_batch_size": size or "None",
                    "effective_batch": effective,
                    "note": f"skipped: needs ~{guess:.0f} MiB, {free:.0f} MiB available",
                }
            )
            print(rows[-1], flush=True)
            continue
        code = CHILD.format(
            here=here,
            threads=args.threads,
            quick=args.quick,
            batch=args.batch_size,
            steps=steps,
            size=size or None,
            device=args.device,
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode != 0:
            rows.append(
                {
                    "internal_batch_size": size or "None",
                    "effective_batch": effective,
                    "note": f"failed (rc {out.returncode}): {out.stderr.strip().splitlines()[-1:]}",
                }
            )
            print(rows[-1], flush=True)
            continue
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(
            {
                "internal_batch_size": size or "None",
                "effective_batch": res["internal_batch_size"],
                "peak_rss_mb": res["peak_mb"],
                "above_baseline_mb": res["peak_mb"] - res["baseline_mb"],
                "mb_per_step_in_batch": (res["peak_mb"] - res["baseline_mb"]) / res["internal_batch_size"],
                "seconds": res["seconds"],
                "convergence_delta": res["delta"],
            }
        )
        if "gpu_peak_mb" in res:
            rows[-1]["gpu_peak_mb"] = res["gpu_peak_mb"]
            rows[-1]["gpu_above_baseline_mb"] = res["gpu_peak_mb"] - res["gpu_baseline_mb"]
        print(table(rows[-1:], list(rows[-1])), flush=True)
    result = {
        "method": "captum.IntegratedGradients",
        "n_steps": steps,
        "setup": "quick" if args.quick else "EfficientNet-Lite0, chelsea 224x224",
        "threads": args.threads,
        "device": args.device,
        "machine": machine(args.device),
        "rows": rows,
    }
    print(f"\n== IG {steps} steps, one image: peak RSS vs internal_batch_size (fresh process each)")
    print(
        table(
            rows,
            [
                "internal_batch_size",
                "effective_batch",
                "peak_rss_mb",
                "above_baseline_mb",
                "mb_per_step_in_batch",
                *(["gpu_peak_mb", "gpu_above_baseline_mb"] if cuda else []),
                "seconds",
                "convergence_delta",
                "note",
            ],
        )
    )
    print(f"-> {write('memory' + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
