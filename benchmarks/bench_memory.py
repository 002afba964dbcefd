"""Peak memory of Integrated Gradients (200 steps, one 224x224 image) vs ``internal_batch_size``.

Each setting runs in a fresh subprocess (so peaks do not mix) and reports its
peak resident set size (``ru_maxrss``) and the peak above the process'
baseline after loading the model. Prints a table and JSON.

    .venv/bin/python benchmarks/bench_memory.py [--steps 200] [--sizes 200 50 10]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import table, write  # noqa: E402

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {here!r})
from common import chelsea_224, setup_threads
import xai_bridge as xb
from xai_bridge.adapters.models import efficientnet_lite0
setup_threads(2)
model = efficientnet_lite0(batch_size=16)
image = chelsea_224()
model.predict(image[None])
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
exp = xb.explain(model, image, "captum.IntegratedGradients", targets=285, n_steps={steps},
                 internal_batch_size={size})
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
delta = float(exp.extras["convergence_delta"][0, 0]) if "convergence_delta" in exp.extras else None
print(json.dumps({{"peak_mb": peak / 1024, "baseline_mb": base / 1024, "seconds": seconds, "delta": delta}}))
"""


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 50, 10])
    args = parser.parse_args(argv)
    here = str(Path(__file__).resolve().parent)
    rows = []
    for size in args.sizes:
        code = CHILD.format(here=here, steps=args.steps, size=size)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({"internal_batch_size": size, "peak_rss_mb": res["peak_mb"],
                     "above_baseline_mb": res["peak_mb"] - res["baseline_mb"], "seconds": res["seconds"],
                     "convergence_delta": res["delta"]})
        print(table(rows[-1:], list(rows[-1])), flush=True)
    result = {"method": "captum.IntegratedGradients", "n_steps": args.steps, "image": "chelsea 224x224", "rows": rows}
    print()
    print(table(rows, ["internal_batch_size", "peak_rss_mb", "above_baseline_mb", "seconds", "convergence_delta"]))
    print(f"-> {write('memory', result)}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
