"""OmniXAI's VisionExplainer (gradcam + lime + ig) vs xai-bridge's multi-method call, same settings.

OmniXAI lives in its own virtualenv (``bash benchmarks/omnixai_env.sh``
creates ``.venv-omnixai``): its side runs as one long-lived subprocess
(``_omnixai_side.py``) driven over stdin, so the two sides alternate
(A B, B A, ...) after one warm-up each, in one run. Same model, image,
threads and settings on both sides:

* Grad-CAM on ``bn2`` for the top-1 class;
* LIME with ``--num-samples`` samples, ``--batch-size`` images per classifier
  call, black hide colour, one label (quickshift superpixels, lime's default);
* Integrated Gradients with ``--steps`` points on the straight path,
  trapezoid rule (OmniXAI's), averaged over 10 uniform-noise baselines
  (OmniXAI's default when no background data is given).

xai-bridge keeps its own batching defaults (the model's ``batch_size``), as a
user calling ``explain_many`` would, on 1 and on 4 images (``--images``). Two
xai-bridge sides: OmniXAI's settings (IG 50 steps, captum's trapezoid), and IG
to OmniXAI's accuracy: ``n_steps="auto"`` with ``tolerance`` set to OmniXAI's
mean completeness error in its warm-up run. Every run's IG completeness error,
``|sum(map) - (f(x) - mean f(baselines))|`` for the top-1 logit, is measured on
both sides (OmniXAI's from the baselines it drew) and printed with the times.
Target: xai-bridge >= 2x faster at an equal or smaller mean error. Differences
that do not change the work: OmniXAI's LIME explains softmax probabilities
(its ``postprocess``), xai-bridge logits.

    bash benchmarks/omnixai_env.sh && .venv/bin/python benchmarks/bench_omnixai.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from common import (
    PICTURES,
    add_common_args,
    load_setup,
    machine,
    median,
    pictures,
    setup_threads,
    suffix,
    synchronize,
    table,
    verdict,
    write,
)

ROOT = Path(__file__).resolve().parents[1]
SPEEDUP_TARGET = 2.0


class OmniSide:
    """The OmniXAI subprocess: send a command, read its JSON answer."""

    def __init__(self, python: Path, settings: dict[str, Any], stderr: IO[str]) -> None:
        self.stderr = stderr
        self.proc = subprocess.Popen(
            [str(python), str(Path(__file__).with_name("_omnixai_side.py")), json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        self.hello = self._answer("ready")

    def _answer(self, key: str) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue  # a library printed something
            if isinstance(msg, dict) and key in msg:
                return msg
            if isinstance(msg, dict) and "error" in msg:
                raise RuntimeError(msg["error"])
        self.stderr.flush()
        self.stderr.seek(0)
        raise RuntimeError(f"OmniXAI side exited (rc {self.proc.wait()}):\n{self.stderr.read()[-3000:]}")

    def ask(self, command: str, key: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer(key)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError, BrokenPipeError):
                self.ask("quit", "never")
            self.proc.wait(timeout=30)


def errors(results: dict[str, Any]) -> list[float]:
    """|IG completeness error| per image of an ``explain_many`` result: |sum(map) - (f(x) - f(baselines))|."""
    ig = results["captum.IntegratedGradients"]
    return [abs(float(d)) for d in np.asarray(ig.extras["convergence_delta"]).reshape(-1)]


def compare(args: argparse.Namespace, s: Any, python: Path, n_images: int) -> dict[str, Any]:
    """One image count: OmniXAI, xai-bridge with OmniXAI's settings, xai-bridge with IG to OmniXAI's error."""
    import xai_bridge as xb

    images = pictures(False, n_images, (224, 224))
    lime = {"num_samples": args.num_samples, "batch_size": args.batch_size, "hide_color": 0}
    baselines = ["random"] * args.baselines
    same = [
        ("gradcam.GradCAM", {"layer": "bn2"}),
        ("lime", lime),
        ("captum.IntegratedGradients", {"n_steps": args.steps, "method": "riemann_trapezoid", "baselines": baselines}),
    ]
    last: dict[str, Any] = {}

    def ours(methods: list[tuple[str, dict[str, Any]]], key: str) -> float:
        start = time.perf_counter()
        last[key] = xb.explain_many(s.model, images, methods)  # top-1, like OmniXAI
        synchronize(args.device)
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"omnixai": [], "same": [], "auto": []}
    errs: dict[str, list[float]] = {"omnixai": [], "same": [], "auto": []}
    gaps: list[float] = []
    steps: list[int] = []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "omnixai.stderr", "w+") as err:
        np.save(Path(tmp) / "image.npy", images)
        settings = {
            "image": str(Path(tmp) / "image.npy"),
            "num_samples": args.num_samples,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "threads": args.threads,
            "device": args.device,
        }
        omni = OmniSide(python, settings, err)
        try:
            warm = omni.ask("run", "seconds")  # warm-up, each side once
            # xai-bridge's tolerance: OmniXAI's own completeness error on these images (mean |delta|)
            tolerance = float(np.mean([abs(r["delta"]) for r in warm["ig"]]))
            auto = [
                *same[:2],
                ("captum.IntegratedGradients", {"n_steps": "auto", "tolerance": tolerance, "baselines": baselines}),
            ]
            ours(same, "same")
            ours(auto, "auto")

            def omni_run() -> float:
                answer = omni.ask("run", "seconds")
                errs["omnixai"].extend(abs(r["delta"]) for r in answer["ig"])
                gaps.extend(abs(r["gap"]) for r in answer["ig"])
                return float(answer["seconds"])

            def same_run() -> float:
                seconds = ours(same, "same")
                errs["same"].extend(errors(last["same"]))
                return seconds

            def auto_run() -> float:
                seconds = ours(auto, "auto")
                errs["auto"].extend(errors(last["auto"]))
                steps.extend(int(v) for v in last["auto"]["captum.IntegratedGradients"].extras["n_steps"].ravel())
                return seconds

            sides = [("omnixai", omni_run), ("same", same_run), ("auto", auto_run)]
            for r in range(args.repeats):
                for name, fn in sides if r % 2 == 0 else sides[::-1]:
                    times[name].append(float(fn()))
                print(
                    f"{n_images} image(s), round {r + 1}: omnixai {times['omnixai'][-1]:.2f} s, "
                    f"xai-bridge same settings {times['same'][-1]:.2f} s, IG to OmniXAI's error "
                    f"{times['auto'][-1]:.2f} s",
                    flush=True,
                )
            omni_per = omni.ask("per_method", "per_method")["per_method"] if args.per_method else {}
        finally:
            omni.close()
    gap = float(np.mean(gaps)) if gaps else float("nan")
    row: dict[str, Any] = {
        "images": n_images,
        "omnixai_s": median(times["omnixai"]),
        "same_s": median(times["same"]),
        "auto_s": median(times["auto"]),
    }
    row["speedup_same"] = row["omnixai_s"] / row["same_s"]
    row["speedup_auto"] = row["omnixai_s"] / row["auto_s"]
    row["omnixai_err"] = float(np.mean(errs["omnixai"]))
    row["same_err"] = float(np.mean(errs["same"]))
    row["auto_err"] = float(np.mean(errs["auto"]))
    row["tolerance"] = tolerance
    row["omnixai_rel_err"] = row["omnixai_err"] / gap
    row["auto_rel_err"] = row["auto_err"] / gap
    row["auto_points"] = f"{min(steps)}-{max(steps)}" if steps else ""
    row["target_ok"] = verdict(
        row["speedup_auto"] if row["auto_err"] <= row["omnixai_err"] else 0.0, SPEEDUP_TARGET, higher_is_better=True
    )
    per = {name: exp.seconds for name, exp in last["auto"].items()}
    return {
        "row": row,
        "times": times,
        "errors": errs,
        "ig_points_per_baseline": steps,
        "omnixai_per_method": omni_per,
        "xai_bridge_auto_per_method": per,
        "omnixai": omni.hello,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=50, help="LIME's classifier batch (both sides)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--baselines", type=int, default=10, help="random IG baselines (OmniXAI's default 10)")
    parser.add_argument("--images", type=int, nargs="*", default=[1, 4], help="image counts, one comparison each")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-omnixai")
    parser.add_argument("--per-method", action="store_true", help="also time each OmniXAI explainer alone")
    args = parser.parse_args(argv)
    if args.quick:
        raise SystemExit("bench_omnixai.py has no --quick mode: OmniXAI needs the real model (about 3 minutes)")
    python = args.venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: run `bash benchmarks/omnixai_env.sh` first")
    setup_threads(args.threads)
    s = load_setup(device=args.device)
    runs = [compare(args, s, python, n) for n in args.images]
    rows = [r["row"] for r in runs]
    result = {
        "settings": {
            "num_samples": args.num_samples,
            "batch_size": args.batch_size,
            "steps": args.steps,
            "baselines": args.baselines,
            "pictures": [PICTURES[i % len(PICTURES)] for i in range(max(args.images))],
        },
        "machine": machine(args.device),
        "repeats": args.repeats,
        "runs": runs,
        "target": SPEEDUP_TARGET,
    }
    print(
        f"\n== OmniXAI VisionExplainer vs xai_bridge.explain_many (gradcam + lime + ig); target >= {SPEEDUP_TARGET}x "
        "at equal or better IG completeness error (mean |sum(map) - (f(x) - f(baselines))| over images and rounds)"
    )
    print(table(rows, list(rows[0])))
    print(f"-> {write('omnixai' + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
