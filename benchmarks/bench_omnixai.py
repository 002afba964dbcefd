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
user calling ``explain_many`` would. Target: xai-bridge >= 2x faster.
Differences that do not change the work: OmniXAI's LIME explains softmax
probabilities (its ``postprocess``), xai-bridge logits.

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
    add_common_args,
    load_setup,
    machine,
    median,
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=50, help="LIME's classifier batch (both sides)")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--baselines", type=int, default=10, help="random IG baselines (OmniXAI's default 10)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-omnixai")
    parser.add_argument("--no-per-method", action="store_true", help="skip OmniXAI's per-method timing")
    args = parser.parse_args(argv)
    if args.quick:
        raise SystemExit("bench_omnixai.py has no --quick mode: OmniXAI needs the real model (about 3 minutes)")
    python = args.venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: run `bash benchmarks/omnixai_env.sh` first")
    setup_threads(args.threads)
    import xai_bridge as xb

    s = load_setup(device=args.device)
    methods = [
        ("gradcam.GradCAM", {"layer": "bn2"}),
        ("lime", {"num_samples": args.num_samples, "batch_size": args.batch_size, "hide_color": 0}),
        (
            "captum.IntegratedGradients",
            {"n_steps": args.steps, "method": "riemann_trapezoid", "baselines": ["random"] * args.baselines},
        ),
    ]
    import xai_bridge.adapters.models as xm

    # xai-bridge as installed, and with TorchModel(channels_last=True) (an option OmniXAI has no equivalent of)
    fast = xm.TorchModel(
        s.net, s.model.preprocess, class_names=s.model.class_names, batch_size=s.model.batch_size, channels_last=True
    )
    last: dict[str, Any] = {}

    def ours(model: Any = s.model, key: str = "results") -> float:
        start = time.perf_counter()
        last[key] = xb.explain_many(model, s.image, methods)  # top-1, like OmniXAI
        synchronize(args.device)
        return time.perf_counter() - start

    omni_times: list[float] = []
    ours_times: list[float] = []
    fast_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "omnixai.stderr", "w+") as err:
        np.save(Path(tmp) / "image.npy", s.image)
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
            omni.ask("run", "seconds")  # warm-up, each side once
            ours()
            ours(fast, "fast")
            sides = [
                (omni_times, lambda: omni.ask("run", "seconds")["seconds"]),
                (ours_times, ours),
                (fast_times, lambda: ours(fast, "fast")),
            ]
            for r in range(args.repeats):
                for times, fn in sides if r % 2 == 0 else sides[::-1]:
                    times.append(float(fn()))
                print(
                    f"round {r + 1}: omnixai {omni_times[-1]:.2f} s, xai-bridge {ours_times[-1]:.2f} s, "
                    f"channels_last {fast_times[-1]:.2f} s",
                    flush=True,
                )
            omni_per = {} if args.no_per_method else omni.ask("per_method", "per_method")["per_method"]
        finally:
            omni.close()
    ours_per = {name: exp.seconds for name, exp in last["results"].items()}
    row: dict[str, Any] = {"omnixai_s": median(omni_times), "xai_bridge_s": median(ours_times)}
    row["speedup"] = row["omnixai_s"] / row["xai_bridge_s"]
    row["target_ok"] = verdict(row["speedup"], SPEEDUP_TARGET, higher_is_better=True)
    row["channels_last_s"] = median(fast_times)
    row["speedup_channels_last"] = row["omnixai_s"] / row["channels_last_s"]
    row["channels_last_ok"] = verdict(row["speedup_channels_last"], SPEEDUP_TARGET, higher_is_better=True)
    per_rows = [
        {"method": m, "omnixai_alone_s": omni_per.get(o), "xai_bridge_in_call_s": ours_per.get(m)}
        for m, o in zip([m for m, _ in methods], ["gradcam", "lime", "ig"], strict=False)
    ]
    result = {
        "methods": [m for m, _ in methods],
        "params": dict(methods),
        "settings": {k: v for k, v in settings.items() if k != "image"}
        | {"image": s.name, "baselines": args.baselines},
        "omnixai": omni.hello,
        "machine": machine(args.device),
        "repeats": args.repeats,
        "omnixai_times": omni_times,
        "xai_bridge_times": ours_times,
        "channels_last_times": fast_times,
        "per_method": per_rows,
        "target": SPEEDUP_TARGET,
        **row,
    }
    print(f"\n== OmniXAI VisionExplainer vs xai_bridge.explain_many (gradcam + lime + ig); target >= {SPEEDUP_TARGET}x")
    print(table([row], list(row)))
    print(table(per_rows, ["method", "omnixai_alone_s", "xai_bridge_in_call_s"]))
    print(f"-> {write('omnixai' + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
