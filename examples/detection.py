"""Explain an object detector's detections with Grad-CAM, Integrated Gradients and D-RISE.

A torchvision Faster R-CNN (MobileNetV3, 320 px). With ``--weights`` it loads
the COCO weights (downloaded once by torchvision into its cache); without,
a randomly initialised one that still runs every method, to try the calls
offline (its box regressors zeroed, so its boxes are its anchors: random
regressors give boxes a fraction of a pixel high). Each detection is one
target with its own map and box; the script writes the maps, a figure per
method and an HTML report with the boxes drawn.

The image is resized to ``--size`` (320 px, the size the detector's own
transform works at, so nothing is lost) and the budgets are small, so the
offline run takes 2-3 minutes on 2 shared cores.

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
    ("captum.IntegratedGradients", {"n_steps": 8}),
    ("builtin.DRISE", {"n_masks": 120}),
    ("shap.Partition", {"max_evals": 200}),
]


def main(argv: list[str] | None = None) -> dict[str, xb.Explanation]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=None, help="an image path (default: scikit-image's astronaut)")
    parser.add_argument("--out", type=Path, default=Path("detection"))
    parser.add_argument("--weights", action="store_true", help="COCO weights (downloaded by torchvision)")
    parser.add_argument("--top", type=int, default=2, help="how many detections to explain")
    parser.add_argument("--size", type=int, default=320, help="the image is resized to size x size")
    args = parser.parse_args(argv)
    weights = detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1
    torch.manual_seed(0)
    if args.weights:
        detector = detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=weights).eval()
    else:  # offline: random weights, every box kept so that there is something to explain
        detector = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
            weights=None, weights_backbone=None, box_score_thresh=0.0
        ).eval()
        with torch.no_grad():
            for layer in (detector.rpn.head.bbox_pred, detector.roi_heads.box_predictor.bbox_pred):
                layer.weight.zero_()
                layer.bias.zero_()
    source = args.image if args.image is not None else data.astronaut()
    image = xb.load_images(source, size=(args.size, args.size))
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, xb.Explanation] = {}
    for name, params in METHODS:
        [exp] = xb.explain(detector, image, name, targets=xb.top_k(args.top), preprocess=weights, **params)
        exp.save(args.out / f"{name}.npz")
        exp.plot().savefig(args.out / f"{name}.png", dpi=80)
        print(f"{name}: {', '.join(exp.target_names[0])} in {exp.seconds:.1f} s", flush=True)
        results[name] = exp
    write_report(args.out / "report.html", results)
    print(f"wrote {args.out / 'report.html'}")
    return results


if __name__ == "__main__":
    main()
