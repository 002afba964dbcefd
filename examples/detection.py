"""Explain an object detector's detections with Grad-CAM, Integrated Gradients and D-RISE.

A torchvision Faster R-CNN (MobileNetV3, 320 px). With ``--weights`` it loads
the COCO weights (downloaded once by torchvision into its cache); without,
a randomly initialised one that still runs every method, to try the calls
offline. Each detection is one target with its own map and box; the script
writes the maps and an HTML report with the boxes drawn.

    python examples/detection.py --image street.jpg --out detection --weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from skimage import data
from torchvision.models import detection

import xai_bridge as xb
from xai_bridge.viz.report import write_report

METHODS = [
    ("gradcam.GradCAM", {}),
    ("captum.IntegratedGradients", {"n_steps": 16}),
    ("builtin.DRISE", {"n_masks": 300}),
]


def main(argv: list[str] | None = None) -> dict[str, xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="an image path (default: scikit-image's astronaut)")
    parser.add_argument("--out", type=Path, default=Path("detection"))
    parser.add_argument("--weights", action="store_true", help="COCO weights (downloaded by torchvision)")
    parser.add_argument("--top", type=int, default=3, help="how many detections to explain")
    args = parser.parse_args(argv)
    weights = detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    torch.manual_seed(0)
    if args.weights:
        detector = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=weights).eval()
    else:  # offline: random weights, every box kept so that there is something to explain
        detector = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, box_score_thresh=0.0
        ).eval()
    image = args.image if args.image is not None else data.astronaut()
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, xb.Explanation] = {}
    for name, params in METHODS:
        [exp] = xb.explain(detector, image, name, targets=xb.top_k(args.top), preprocess=weights, **params)
        exp.save(args.out / f"{name}.npz")
        print(f"{name}: {', '.join(exp.target_names[0])} in {exp.seconds:.1f} s")
        results[name] = exp
    write_report(args.out / "report.html", results)
    print(f"wrote {args.out / 'report.html'}")
    return results


if __name__ == "__main__":
    main()
