"""OmniXAI's VisionExplainer (gradcam + lime + ig) vs xai-bridge's multi-method call, same settings.

OmniXAI runs in its own virtualenv (``benchmarks/omnixai_env.sh`` creates
``.venv-omnixai``); the two sides alternate in blocks of warm-up + repeats.
Settings matched on both sides: Grad-CAM on ``bn2``; LIME with ``num_samples``
samples in batches of ``batch_size``, one label, black hide colour; IG with
``steps`` steps averaged over 10 random baselines (OmniXAI's default). Target
>= 2x faster.

    bash benchmarks/omnixai_env.sh && .venv/bin/python benchmarks/bench_omnixai.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import chelsea_224, median, setup_threads, table, write  # noqa: E402

import xai_bridge as xb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating blocks per side")
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv-omnixai")
    args = parser.parse_args(argv)
    python = args.venv / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} missing: run bash benchmarks/omnixai_env.sh first")
    setup_threads(2)
    from xai_bridge.adapters.models import efficientnet_lite0

    model = efficientnet_lite0(batch_size=args.batch_size)
    image = chelsea_224()
    methods = [("gradcam.GradCAM", {"layer": "bn2"}),
               ("lime", {"num_samples": args.num_samples, "batch_size": args.batch_size, "hide_color": 0}),
               ("captum.IntegratedGradients", {"n_steps": args.steps, "baselines": ["random"] * 10,
                                               "internal_batch_size": args.batch_size})]
    ours_times: list[float] = []
    omni_times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        np.save(Path(tmp) / "image.npy", image)
        settings = {"image": str(Path(tmp) / "image.npy"), "num_samples": args.num_samples,
                    "batch_size": args.batch_size, "steps": args.steps, "warmup": 1, "repeats": args.repeats}
        for _ in range(args.rounds):
            out = subprocess.run([str(python), str(Path(__file__).with_name("_omnixai_side.py")), json.dumps(settings)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"OmniXAI failed:\n{out.stderr[-3000:]}")
            omni_times += json.loads(out.stdout.strip().splitlines()[-1])["times"]
            import time

            for i in range(1 + args.repeats):
                start = time.perf_counter()
                results = xb.explain_many(model, image, methods)
                if i:
                    ours_times.append(time.perf_counter() - start)
    row = {"omnixai_s": median(omni_times), "xai_bridge_s": median(ours_times)}
    row["speedup"] = row["omnixai_s"] / row["xai_bridge_s"]
    per_method = {name: exp.seconds for name, exp in results.items()}
    result = {"methods": [m for m, _ in methods], "settings": settings | {"image": "chelsea 224x224"},
              "omnixai_times": omni_times, "xai_bridge_times": ours_times, "xai_bridge_per_method_s": per_method,
              **row}
    print(table([row], list(row)))
    print("xai-bridge per method:", {k: round(v, 3) for k, v in per_method.items()})
    print(f"-> {write('omnixai', result)}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
