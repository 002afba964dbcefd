"""Seed 002: Integrated Gradients averaged over random baselines, with GradVisualizer-style plots.

The Keras tutorial preprocesses by hand, interpolates, differentiates, applies
the trapezoidal rule, repeats it over several random baselines and writes a
visualiser (overlay + outline of the top regions). Here captum's IG is run on
the image's own pixels through the declared preprocessing, ``baselines=["random"]
* k`` averages over k seeded random baselines, and one normalisation rule draws
both the heat overlay and the outline, beside the plain gradients.

    python examples/seed002_integrated_gradients.py --out seed002 [--quick] [--keras]

``--keras`` runs the tutorial's own model, a Keras Xception ("tf" preprocessing:
``Preprocess.inception()``), with gradients computed by TensorFlow. It is
built with ``weights=None`` (nothing is downloaded), so its maps show an
untrained network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from skimage import data
from xai_bridge.adapters.models import efficientnet_lite0

import xai_bridge as xb
from xai_bridge.viz.plot import comparison_grid


def main(argv: list[str] | None = None) -> dict[str, xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("seed002"))
    parser.add_argument("--quick", action="store_true", help="fewer steps and baselines (smoke test)")
    parser.add_argument("--keras", action="store_true", help="Keras Xception (weights=None) on TensorFlow")
    args = parser.parse_args(argv)
    steps, runs = (16, 2) if args.quick else (50, 10)  # the tutorial: 50 steps, 10 random baselines
    if args.keras:
        from xai_bridge._load_order import triton_before_tensorflow

        triton_before_tensorflow()  # TensorFlow 2.21 wheels crash a later `import triton`
        from keras.applications import xception

        model, preprocess, size = xception.Xception(weights=None), xb.Preprocess.inception(299), 299
        chunk = 4  # TensorFlow's tape keeps every activation of Xception at 299 px: ~0.6 GB per image
    else:
        model, preprocess, size = efficientnet_lite0(), None, 224
        chunk = 32
    results = xb.explain_many(
        model,
        xb.load_images(data.chelsea(), size=(size, size)),
        [
            "captum.Saliency",
            (
                "captum.IntegratedGradients",
                {"n_steps": steps, "baselines": ["random"] * runs, "internal_batch_size": chunk},
            ),
        ],
        preprocess=preprocess,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for style in ("heat", "outline"):
        fig = comparison_grid(results, style=style, norm="positive", percentile=99.5)
        fig.savefig(args.out / f"ig_{style}.png", dpi=80, bbox_inches="tight")
    ig = results["captum.IntegratedGradients"]
    gap = float(ig.scores[0, 0] - ig.base_scores[0, 0])
    print(f"{ig.target_names[0, 0]}: sum of attributions {ig.attributions.sum():.3f} vs f(x) - f(baseline) {gap:.3f}")
    return results


if __name__ == "__main__":
    main()
