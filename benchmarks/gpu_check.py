"""A short GPU check: every installed method once on CUDA, then the benchmarks in short form.

Run it whenever a GPU is available (about 5 minutes on one GPU, model load included)::

    .venv/bin/python benchmarks/gpu_check.py                      # --device cuda
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick  # the smoke test of the script itself

It prints torch's and CUDA's versions and the device's name, then, on the
bundled EfficientNet-Lite0 (``--quick``: a tiny CNN at 32x32) with its module on
the device, runs every method of ``available_methods(installed_only=True)``
once on 2 images and checks that

* the attributions are finite and of shape ``(2, targets, H, W)`` (one target
  asked for; ``gradcam.DeepFeatureFactorization`` returns its components);
* every input the model's pixel module received was on the model's device
  (a forward pre-hook records them: a method building inputs on the host and
  handing them over would show here);
* the module's parameters are still on the device and bit-identical.

A table gives each method's seconds (the device synchronised before the
clock is read), the share of them inside the model's forward passes
(``in_forward``: low values on a GPU mean host work between the passes) and
``ok``. Then ``bench_overhead`` (a handful of methods, one repeat),
``bench_batching`` (one repeat) and ``bench_memory`` run as subprocesses with
the same ``--device``, and their ratio figures are printed. Everything goes to
``benchmarks/results/gpu_check[-quick][-cuda].json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, load_setup, machine, setup_threads, suffix, synchronize, table, write

HERE = Path(__file__).resolve().parent

#: Short budgets: each method costs well under a second of GPU time on 2 images at 224x224.
BUDGETS: dict[str, dict[str, Any]] = {
    "builtin.Occlusion": {"window": 32, "stride": 32},
    "builtin.RISE": {"n_masks": 500},
    "shap.Partition": {"max_evals": 200, "masker": "blur(64,64)"},
    "shap.Gradient": {"nsamples": 16},
    "lime.Lime": {"num_samples": 200},
    "captum.IntegratedGradients": {"n_steps": 32},
    "captum.GradientShap": {"n_samples": 8},
    "captum.DeepLiftShap": {"baselines": ["random"] * 4},
    "captum.Occlusion": {"window": 32, "stride": 32},
    "captum.ShapleyValueSampling": {"n_samples": 2},
    "captum.KernelShap": {"n_samples": 64},
    "captum.Lime": {"n_samples": 64},
    "gradcam.ScoreCAM": {"batch_size": 64},
    "gradcam.AblationCAM": {"batch_size": 64},
    "gradcam.DeepFeatureFactorization": {"n_components": 2},
    "torchcam.SSCAM": {"num_samples": 4},
    "torchcam.ISCAM": {"num_samples": 4},
    "torchcam.SmoothGradCAMpp": {"num_samples": 4},
    "torchcam.FinerCAM": {"num_references": 2},
    "gradcam.FinerCAM": {"comparison_categories": (1, 2)},
}
#: bench_overhead's methods in the short form (its names).
OVERHEAD_METHODS = (
    "builtin.Saliency",
    "captum.Saliency",
    "captum.IntegratedGradients",
    "gradcam.GradCAM",
    "lime",
    "rise",
)


class InputProbe:
    """Forward hooks on the pixel module: devices of its inputs, and seconds inside its forward passes."""

    def __init__(self, module: Any, device: str) -> None:
        self.device = device
        self.devices: set[str] = set()
        self.seconds = 0.0
        self._start = 0.0
        self._handles = [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._exit)]

    def reset(self) -> None:
        self.devices.clear()
        self.seconds = 0.0

    def _enter(self, _module: Any, args: tuple[Any, ...]) -> None:
        self.devices.update(str(a.device) for a in args if hasattr(a, "device"))
        synchronize(self.device)
        self._start = time.perf_counter()

    def _exit(self, *_: Any) -> None:
        synchronize(self.device)
        self.seconds += time.perf_counter() - self._start

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def versions(device: str) -> dict[str, Any]:
    """torch, CUDA and cuDNN versions and the device's name."""
    import torch

    out: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "device": device,
    }
    if device.startswith("cuda"):
        out["device_name"] = torch.cuda.get_device_name(device)
        out["cudnn"] = torch.backends.cudnn.version()
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    return out


def check_methods(s: Any, images: np.ndarray, quick: bool, only: list[str] | None) -> list[dict[str, Any]]:
    """Each installed method once on ``images``: seconds, share in forward passes, and the checks."""
    import torch

    import xai_bridge as xb

    model, device = s.model, s.device
    want = str(model.device)
    before = {k: v.detach().clone() for k, v in model.module.state_dict().items()}
    probe = InputProbe(model.pixel_module(), device)
    rows: list[dict[str, Any]] = []
    try:
        for name in xb.available_methods(installed_only=True):
            if only is not None and name not in only:
                continue
            probe.reset()
            row: dict[str, Any] = {"method": name}
            try:
                synchronize(device)
                start = time.perf_counter()
                # --quick: each method's own cheapest run (MethodSpec.quick), the one the contract test makes
                params = dict(xb.default_registry().spec(name).quick) if quick else BUDGETS.get(name, {})
                exp = xb.explain(model, images, name, targets=[[s.target], [s.target]], seed=0, **params)
                synchronize(device)
                row["seconds"] = time.perf_counter() - start
                row["in_forward"] = probe.seconds / row["seconds"] if row["seconds"] > 0 else None
                problems = []
                shape = (len(images), exp.targets.shape[1], *images.shape[1:3])  # some methods add targets
                if exp.attributions.shape != shape:
                    problems.append(f"shape {exp.attributions.shape} != {shape}")
                if not np.isfinite(exp.attributions).all():
                    problems.append("non-finite attributions")
                if probe.devices - {want}:
                    problems.append(f"inputs on {sorted(probe.devices)}, model on {want}")
                row["inputs_on"] = ",".join(sorted(probe.devices)) or "no forward seen"
                row["ok"] = "; ".join(problems) or "ok"
            except xb.MethodNotApplicableError as exc:  # e.g. LRP on a layer it has no rule for: not a failure
                row["ok"] = "n/a: " + (str(exc).splitlines() or [""])[0][:120]
            except Exception as exc:  # one method failing must not hide the others
                row["ok"] = f"FAILED: {type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
            after = model.module.state_dict()
            moved = [k for k, v in after.items() if str(v.device) != want]
            changed = [k for k, v in after.items() if not torch.equal(v, before[k])]
            if moved or changed:
                row["ok"] = f"{row['ok']}; parameters moved {moved[:2]} / changed {changed[:2]}"
            rows.append(row)
            print(table([row], ["method", "seconds", "in_forward", "inputs_on", "ok"]), flush=True)
    finally:
        probe.remove()
    return rows


def run_benchmarks(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """bench_overhead, bench_batching and bench_memory in short form, as subprocesses; their figures."""
    common = ["--device", args.device, "--threads", str(args.threads), "--results", str(folder)]
    common += ["--quick"] if args.quick else []
    runs = {
        "overhead": ["bench_overhead.py", "--repeats", "1", "--no-full-res", "--methods", *OVERHEAD_METHODS],
        "batching": ["bench_batching.py", "--repeats", "1", "--methods", "shap.Partition", "lime.Lime", "builtin.RISE"],
        "memory": ["bench_memory.py", *(["--sizes", "20", "0"] if args.quick else ["--sizes", "200", "50", "0"])],
    }
    out: dict[str, Any] = {}
    for key, command in runs.items():
        print(f"\n=== {' '.join(command)} {' '.join(common)}", flush=True)
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, str(HERE / command[0]), *command[1:], *common],
                capture_output=True,
                text=True,
                timeout=args.bench_timeout,
            )
            tail = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            tail, rc = [], f"timed out after {args.bench_timeout} s"
        print("\n".join(tail), flush=True)
        result_file = folder / f"{key}{suffix(args)}.json"
        figures = json.loads(result_file.read_text()) if rc == 0 and result_file.exists() else None
        out[key] = {"rc": rc, "seconds": time.perf_counter() - start, "figures": summary(key, figures)}
    return out


def summary(key: str, result: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The ratio figures of a benchmark's JSON."""
    if result is None:
        return None
    columns = {
        "overhead": ("method", "xai_bridge_s", "direct_s", "overhead", "efficiency", "in_forward"),
        "batching": ("method", "together_s", "per_image_s", "speedup", "ratio", "in_forward"),
        "memory": ("internal_batch_size", "peak_rss_mb", "gpu_peak_mb", "gpu_above_baseline_mb", "seconds"),
    }[key]
    return [{c: row.get(c) for c in columns} for row in result.get("rows", [])]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, repeats=1)
    parser.set_defaults(device="cuda")  # a string default goes through --device's check too (argparse)
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: every installed one)")
    parser.add_argument("--no-benchmarks", action="store_true", help="the method checks only")
    parser.add_argument("--bench-timeout", type=int, default=240, help="seconds each benchmark may run")
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    import xai_bridge as xb

    info = versions(args.device)
    print("  ".join(f"{k}={v}" for k, v in info.items()), flush=True)
    start = time.perf_counter()
    s = load_setup(args.quick, batch_size=8 if args.quick else 64, device=args.device)
    synchronize(args.device)
    load_s = time.perf_counter() - start
    if args.quick:
        # 4x4 blocks of random colours: pure noise gives segmentation methods a single superpixel
        blocks = np.random.default_rng(1).integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
        images = blocks.repeat(s.image.shape[0] // 4, axis=1).repeat(s.image.shape[1] // 4, axis=2)
    else:
        from skimage import data

        images = xb.load_images([data.chelsea(), data.astronaut()], size=s.image.shape[:2])
    print(f"{s.name} on {s.model.device}, loaded in {load_s:.1f} s; {len(images)} images\n", flush=True)
    rows = check_methods(s, images, args.quick, args.methods)
    failed = [r["method"] for r in rows if r["ok"] != "ok" and not r["ok"].startswith("n/a")]
    n_na = sum(r["ok"].startswith("n/a") for r in rows)
    print(
        f"\n== {len(rows)} methods on {args.device}: {len(rows) - len(failed) - n_na} ok, {n_na} n/a, {len(failed)} failed"
    )
    print(table(rows, ["method", "seconds", "in_forward", "inputs_on", "ok"]))
    benches = {} if args.no_benchmarks else run_benchmarks(args, args.results)
    for key, bench in benches.items():
        print(f"\n== {key} (rc {bench['rc']}, {bench['seconds']:.0f} s)")
        if bench["figures"]:
            print(table(bench["figures"], list(bench["figures"][0])))
    result = {
        "versions": info,
        "setup": s.name,
        "load_s": load_s,
        "machine": machine(args.device),
        "methods": rows,
        "failed": failed,
        "benchmarks": benches,
        "total_s": time.perf_counter() - start,
    }
    print(f"\ntotal {result['total_s']:.0f} s -> {write('gpu_check' + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
