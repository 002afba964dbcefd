"""Semantic-region shap vs axis-aligned shap at equal cost: deletion and insertion AUC, side by side.

For each picture (chelsea, coffee, astronaut at 224x224 on the bundled
EfficientNet-Lite0, target: the model's top-1 class) and each budget
(``max_evals`` 100, 300, 500), shap's Partition explainer runs twice in one
run, alternating: with shap's axis-aligned partition (the default) and with
``partition=xb.Segmentation("slic", {"n_segments": 100})`` (regions merged by
adjacency and colour). Both use the same masker (``blur(64,64)``) and budget,
and each map is scored with ``xb.evaluate``'s deletion (lower is better) and
insertion (higher is better) curves. Printed per row: both AUCs, the
difference, and both times; at the end the mean over the pictures per budget.

``--quick`` runs the tiny CNN on two of the pictures at 32x32 (a smoke test: its
numbers mean nothing).

    .venv/bin/python benchmarks/bench_regions.py [--budgets 100 300 500] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, setup_threads, table, tiny_net, write

PICTURES = ("chelsea", "coffee", "astronaut")


def setup(quick: bool) -> tuple[Any, np.ndarray, list[str], str]:
    """The model, the images, their names and the masker."""
    from skimage import data

    import xai_bridge as xb

    if quick:
        pre = xb.Preprocess(size=(32, 32), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
        images = xb.load_images([getattr(data, name)() for name in PICTURES[:2]], size=(32, 32))
        return xb.TorchModel(tiny_net(), pre), images, list(PICTURES[:2]), "blur(8,8)"
    from xai_bridge.adapters.models import efficientnet_lite0

    images = xb.load_images([getattr(data, name)() for name in PICTURES], size=(224, 224))
    return efficientnet_lite0(), images, list(PICTURES), "blur(64,64)"


def run(model: Any, image: np.ndarray, budget: int, masker: str, partition: Any) -> tuple[Any, float]:
    import xai_bridge as xb

    start = time.perf_counter()
    exp = xb.explain(
        model, image[None], "shap.Partition", max_evals=budget, masker=masker, partition=partition, progress=False
    )
    return exp, time.perf_counter() - start


def curves(model: Any, exp: Any) -> dict[str, float]:
    import xai_bridge as xb

    frame = xb.evaluate(model, exp, ("deletion", "insertion"), progress=False)
    return {str(m): float(v) for m, v in zip(frame["metric"], frame["value"], strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 300, 500])
    parser.add_argument("--segments", type=int, default=100, help="SLIC's n_segments")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    setup_threads()
    import xai_bridge as xb

    model, images, names, masker = setup(args.quick)
    semantic = xb.Segmentation("slic", {"n_segments": 10 if args.quick else args.segments, "start_label": 0})
    for partition in (None, semantic):  # warm-up: shap's tree, numba, the model's first batches
        run(model, images[0], min(args.budgets), masker, partition)
    rows = []
    for budget in args.budgets:
        for name, image in zip(names, images, strict=True):
            axis_exp, axis_s = run(model, image, budget, masker, None)
            sem_exp, sem_s = run(model, image, budget, masker, semantic)
            axis, sem = curves(model, axis_exp), curves(model, sem_exp)
            rows.append(
                {
                    "image": name,
                    "max_evals": budget,
                    "regions": sem_exp.params["partition"]["count"][0],
                    "del_axis": axis["deletion"],
                    "del_semantic": sem["deletion"],
                    "ins_axis": axis["insertion"],
                    "ins_semantic": sem["insertion"],
                    "axis_s": axis_s,
                    "semantic_s": sem_s,
                }
            )
            print(table(rows[-1:], list(rows[-1])), flush=True)
    means = []
    for budget in args.budgets:
        sel = [r for r in rows if r["max_evals"] == budget]
        means.append({"max_evals": budget, **{k: float(np.mean([r[k] for r in sel])) for k in list(sel[0])[3:]}})
    print("\nper row (deletion: lower is better; insertion: higher is better)")
    print(table(rows, list(rows[0])))
    print("\nmean over the pictures")
    print(table(means, list(means[0])))
    path = write(
        "bench_regions" + ("_quick" if args.quick else ""), {"machine": machine(), "rows": rows, "means": means}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
