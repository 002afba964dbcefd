"""Demo: explain scikit-image's cat with the bundled EfficientNet-Lite0 (offline).

Run with ``make demo`` (or ``python examples/demo.py --out demo-output``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skimage import data

import xai_bridge as xb
from xai_bridge.adapters.models import efficientnet_lite0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    args = parser.parse_args()
    model = efficientnet_lite0()
    results = xb.explain_many(model, data.chelsea(), ["builtin.saliency", ("builtin.occlusion", {"window": 48})])
    args.out.mkdir(parents=True, exist_ok=True)
    for name, exp in results.items():
        path = exp.save(args.out / f"{name}.npz")
        print(f"{name}: target {exp.target_names[0, 0]} ({exp.targets[0, 0]}), "
              f"{exp.n_model_evals} evaluations, {exp.seconds:.2f}s -> {path}")


if __name__ == "__main__":
    main()
