"""Seed 004: LIME on a Keras-style InceptionV3 (NHWC, inputs in [-1, 1]).

The seed preprocesses by hand (``inc_net.preprocess_input``), feeds LIME the
preprocessed array and undoes the scaling to plot (``temp / 2 + 0.5``). Here
the model is an :class:`~xai_bridge.ArrayModel` with ``Preprocess.inception``:
LIME sees plain uint8 pixels and xai-bridge feeds the model NHWC floats in
[-1, 1]. Any NHWC numpy callable works the same way (pass ``keras_model.predict``);
the bundled EfficientNet-Lite0 stands in for InceptionV3 offline.

    python examples/seed004_lime.py --out seed004 [--quick]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage import data
from skimage.segmentation import mark_boundaries
from xai_bridge.adapters.models.zoo import imagenet_class_names, load_efficientnet_lite0

import xai_bridge as xb


def keras_style_model() -> xb.ArrayModel:
    """An NHWC callable expecting [-1, 1] inputs, like Keras' InceptionV3."""
    net = load_efficientnet_lite0()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def predict(x: np.ndarray) -> np.ndarray:  # x: (N, 224, 224, 3) in [-1, 1]
        x = ((x + 1) / 2 - mean) / std
        with torch.no_grad():
            return torch.softmax(net(torch.from_numpy(x.transpose(0, 3, 1, 2)).float()), -1).numpy()

    return xb.ArrayModel(predict, xb.Preprocess.inception(224), class_names=imagenet_class_names())


def main(argv: list[str] | None = None) -> xb.Explanation:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("seed004"))
    parser.add_argument("--quick", action="store_true", help="small budget (smoke test)")
    args = parser.parse_args(argv)
    image = xb.load_images(data.chelsea(), size=(224, 224))
    exp = xb.explain(
        keras_style_model(), image, "lime", targets=xb.top_k(5), hide_color=0, num_samples=100 if args.quick else 1000
    )
    print("top 5:", exp.target_names[0].tolist())
    args.out.mkdir(parents=True, exist_ok=True)
    views = {
        "top1_positive_hidden": dict(target=0, positive_only=True, hide_rest=True),
        "top1_positive": dict(target=0, positive_only=True, hide_rest=False),
        "top1_pros_and_cons": dict(target=0, positive_only=False, hide_rest=False),
        "top5_positive_hidden": dict(target=4, positive_only=True, hide_rest=True),
    }
    for name, view in views.items():
        img, mask = xb.masks.image_and_mask(exp, num_features=5, **view)
        Image.fromarray((mark_boundaries(img, mask) * 255).astype(np.uint8)).save(args.out / f"{name}.png")
    exp.save(args.out / "lime.npz")
    return exp


if __name__ == "__main__":
    main()
