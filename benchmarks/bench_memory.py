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

``--keras`` measures instead the README's one-line Keras Integrated Gradients
call (``xb.explain(keras_model, image, "captum.IntegratedGradients",
preprocess=xb.Preprocess.inception(299))``, every other setting at its
default) against the Keras tutorial's own eager-tape loop (seed 002: one
interpolated image per ``tf.GradientTape``) at the same steps, and against
that loop in a process that has imported torch and captum (the fixed
footprint of the torch bridge that every other Keras gradient method runs
through; the IG call itself computes captum's rule in TensorFlow and imports
neither: the xai-bridge rows report ``torch_loaded`` and the library version
the Explanation records), on
``keras.applications.Xception(weights=None)`` (random weights cost the
memory of trained ones) and one 299x299 image. The two sides alternate, each
in a fresh subprocess, ``--repeats`` times; the ratio of the peaks is printed.

    .venv/bin/python benchmarks/bench_memory.py --keras [--steps 50] [--repeats 2]
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


KERAS_CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
side, steps = {side!r}, {steps}
import numpy as np
import keras
if side != "tutorial":
    import xai_bridge as xb  # imported before TensorFlow runs, as a user's script would
if side == "tutorial+torch":
    import torch, captum.attr  # the libraries xai-bridge's gradient path loads, nothing of them run
import tensorflow as tf
keras.utils.set_random_seed(0)
model = keras.applications.Xception(weights=None)
image = np.random.default_rng(0).integers(0, 256, (299, 299, 3), dtype=np.uint8)
pre = lambda x: x / 127.5 - 1.0
top = int(np.argmax(model(pre(image[None].astype(np.float32)), training=False)[0]))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if side.startswith("tutorial"):
    img = image.astype(np.float32)
    baseline = np.zeros_like(img)
    path = np.array([baseline + (s / steps) * (img - baseline) for s in range(steps + 1)], np.float32)
    grads = []
    for x in pre(path):
        x = tf.expand_dims(x, axis=0)
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = model(x)[:, top]
        grads.append(tape.gradient(score, x)[0])
    grads = tf.convert_to_tensor(grads)
    ig = (img - baseline) * tf.reduce_mean((grads[:-1] + grads[1:]) / 2.0, axis=0)
else:
    exp = xb.explain(model, image, "captum.IntegratedGradients", preprocess=xb.Preprocess.inception(299),
                     targets=top, n_steps=steps)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
row = {{"side": side, "peak_mb": peak / 1024, "baseline_mb": base / 1024, "seconds": seconds,
       "load": round(os.getloadavg()[0], 1), "torch_loaded": "torch" in sys.modules}}
if not side.startswith("tutorial"):
    row["library"] = exp.library + " " + exp.library_version
print(json.dumps(row))
"""


def keras_main(steps: int, repeats: int, results: str | None) -> dict[str, Any]:
    """The README's Keras IG call vs the tutorial's eager-tape loop, alternating fresh subprocesses."""
    rows: list[dict[str, Any]] = []
    for repeat in range(repeats):
        sides = ("tutorial", "xai-bridge", "tutorial+torch")
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            code = KERAS_CHILD.format(side=side, steps=steps)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if out.returncode != 0:
                rows.append({"side": side, "note": f"failed (rc {out.returncode}): {out.stderr.strip()[-300:]}"})
            else:
                res = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({**res, "above_baseline_mb": res["peak_mb"] - res["baseline_mb"]})
            print(rows[-1], flush=True)
    peaks = {
        side: max(r["peak_mb"] for r in rows if r["side"] == side and "peak_mb" in r)
        for side in ("tutorial", "xai-bridge", "tutorial+torch")
        if any(r["side"] == side and "peak_mb" in r for r in rows)
    }
    ratio = peaks["xai-bridge"] / peaks["tutorial"] if {"xai-bridge", "tutorial"} <= set(peaks) else None
    same = peaks["xai-bridge"] / peaks["tutorial+torch"] if {"xai-bridge", "tutorial+torch"} <= set(peaks) else None
    print(f"\n== Keras Xception 299x299, IG {steps} steps: peak RSS (fresh process each, {repeats} each)")
    print(
        table(rows, ["side", "peak_mb", "baseline_mb", "above_baseline_mb", "seconds", "load", "torch_loaded", "note"])
    )
    print("xai-bridge's library:", {r.get("library") for r in rows if r["side"] == "xai-bridge"})
    print(f"peak RSS ratio xai-bridge / tutorial (worst of each): {ratio and round(ratio, 3)} (target <= 1.2)")
    print(f"peak RSS ratio xai-bridge / tutorial with torch and captum imported: {same and round(same, 3)}")
    result = {
        "setup": "keras Xception(weights=None), 299x299",
        "n_steps": steps,
        "rows": rows,
        "ratio": ratio,
        "ratio_same_imports": same,
        "machine": machine("cpu"),
    }
    print(f"-> {write('memory_keras', result, results)}")
    return result


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
    parser.add_argument("--keras", action="store_true", help="Keras IG call vs the tutorial's loop (see above)")
    args = parser.parse_args(argv)
    if args.keras:
        return keras_main(args.steps or 50, args.repeats, args.results)
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
