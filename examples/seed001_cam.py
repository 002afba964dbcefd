"""Seed 001: CAM methods from torchcam and pytorch-grad-cam on one classifier.

The seed learns two APIs: torchcam's ``SmoothGradCAMpp`` + ``overlay_mask``,
and pytorch-grad-cam's Grad-CAM, LayerCAM, Guided Grad-CAM and Deep Feature
Factorization, picking target layers and cleaning hooks by hand. Here one call
runs them all (layer chosen automatically, hooks always removed) and every map
comes back raw at the image's resolution, so they can be compared fairly.

    python examples/seed001_cam.py --out seed001
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image
from skimage import data
from torchcam.utils import overlay_mask
from xai_bridge.adapters.models import efficientnet_lite0

import xai_bridge as xb

METHODS = ["torchcam.SmoothGradCAMpp", "gradcam.GradCAM", "gradcam.LayerCAM", "gradcam.GuidedGradCAM"]


def main(argv: list[str] | None = None) -> dict[str, xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("seed001"))
    args = parser.parse_args(argv)
    model = efficientnet_lite0()
    image = xb.load_images(data.chelsea(), size=(224, 224))
    results = xb.explain_many(model, image, METHODS)
    results["gradcam.DeepFeatureFactorization"] = xb.explain(
        model, image, "gradcam.DeepFeatureFactorization", n_components=4
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name, exp in results.items():
        maps = xb.normalize(exp.attributions[0], xb.Norm.POSITIVE)  # one explicit normalisation for all
        for t, heat in enumerate(maps):
            # torchcam's overlay_mask, as in the seed (alpha = weight of the photo)
            overlay = overlay_mask(Image.fromarray(image[0]), Image.fromarray(heat, mode="F"), alpha=0.7)
            overlay.save(args.out / f"{name}_{t}.png")
        print(f"{name:36s} {exp.target_names[0, 0]!s:44s} layer={exp.params.get('layer')} {exp.seconds:.2f}s")
    return results


if __name__ == "__main__":
    main()
