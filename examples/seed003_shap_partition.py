"""Seed 003: shap's Partition explainer on an ImageNet classifier, top-4 classes.

The seed wraps a Keras ResNet50 in a hand-written ``f(x)`` doing the
preprocessing, builds ``shap.maskers.Image("inpaint_telea")`` and asks for
``outputs=shap.Explanation.argsort.flip[:4]``. Here the bundled EfficientNet-Lite0
declares its preprocessing once, ``top_k(4)`` picks the classes, and the
result converts back to shap for ``shap.image_plot``. A second, finer run uses
the faster blur masker, as the seed does.

    python examples/seed003_shap_partition.py --out seed003 [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a script: no window
import matplotlib.pyplot as plt
import shap
from skimage import data
from xai_bridge.adapters.models import efficientnet_lite0

import xai_bridge as xb


def main(argv: list[str] | None = None) -> dict[str, xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("seed003"))
    parser.add_argument("--quick", action="store_true", help="small budgets (smoke test)")
    args = parser.parse_args(argv)
    model = efficientnet_lite0()
    images = xb.load_images([data.chelsea(), data.coffee()], size=(224, 224))
    budgets = {"inpaint_telea": 100, "blur(128,128)": 300 if args.quick else 1000}
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for masker, max_evals in budgets.items():
        exp = xb.explain(
            model, images, "shap.Partition", targets=xb.top_k(4), masker=masker, max_evals=max_evals, batch_size=50
        )
        shap.image_plot(exp.to_shap(), show=False)
        plt.savefig(args.out / f"partition_{masker.split('(')[0]}.png", dpi=80, bbox_inches="tight")
        plt.close("all")
        exp.save(args.out / f"partition_{masker.split('(')[0]}.npz")
        print(f"{masker}: {exp.target_names.tolist()}  ({exp.n_model_evals} evaluations, {exp.seconds:.1f}s)")
        results[masker] = exp
    return results


if __name__ == "__main__":
    main()
