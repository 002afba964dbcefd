"""Detectors: D-RISE and shap Partition against their forward passes, Grad-CAM against pytorch-grad-cam.

On torchvision's Faster R-CNN MobileNetV3 (320 px, random weights with
calibrated batch-norm statistics, every box kept, box regressors zeroed so
its boxes are its anchors: random regressors give degenerate boxes, 0.04 px
high, whose IoU with themselves a 1-ulp change breaks), one 128x128 image,
two target detections:

* D-RISE and shap's Partition explainer (its detector masker, and inpainting
  for reference): time / (model evaluations x the detector's per-image
  forward time at its best batch size among 1-16, timed between the sides);
  target <= 1.1.
* Grad-CAM: ``xb.explain(detector, image, "gradcam.GradCAM", layer=...)`` over
  pytorch-grad-cam called directly as its Faster R-CNN tutorial does (a
  prediction pass for the boxes, then ``GradCAM`` with one
  ``FasterRCNNBoxScoreTarget`` per detection) on the same tensor layer
  (``backbone.body.12``: the library records no gradient on the backbone's
  dict output); target <= 1.05. xai-bridge's default layer (the backbone) is
  timed too, for reference.

Sides run interleaved in one process. ``--quick``: fewer evaluations, one repeat.

``--masks`` instead: D-RISE (200 evaluations, 2 targets) on a Mask R-CNN
(random weights, 128-192 px, 50 detections, a 240x360 image), as
xai-bridge runs it (the perturbed images through the box path only) and with
the whole pass forced by a forward hook on the model (the masks of every
detection of every perturbed image computed and dropped). Each run is a
child process, so each reports its own peak RSS; the sides alternate.

    .venv/bin/python benchmarks/bench_detection.py [--quick] [--repeats 3] [--threads 2] [--device cuda]
    .venv/bin/python benchmarks/bench_detection.py --masks [--quick] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import best_forward_per_image, interleaved, machine, median, setup_threads, table, verdict, write

LAYER = "backbone.body.12"


def detector(device: str) -> Any:
    """The detector (random weights, batch-norm statistics of one random batch, every box kept).

    One class: with several, a box of another class can overlap a target best, and the
    library's target is then a constant its backward pass refuses. The batch-norm
    calibration is tests/detection/test_gradients.py's ``calibrated`` (benchmarks and
    tests import neither the other, and users never need it): change both.
    """
    import torch
    from torchvision.models import detection

    torch.manual_seed(0)
    net = detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        weights=None, weights_backbone=None, num_classes=2, min_size=128, max_size=128, box_score_thresh=0.001
    )
    for mod in net.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None
    net.backbone.train()
    with torch.no_grad():
        net.backbone(torch.rand(8, 3, 128, 128, generator=torch.Generator().manual_seed(0)))
        for layer in (net.rpn.head.bbox_pred, net.roi_heads.box_predictor.bbox_pred):
            layer.weight.zero_()
            layer.bias.zero_()
    return net.eval().to(device)


def library_gradcam(net: Any, image: np.ndarray, device: str, k: int) -> np.ndarray:
    """pytorch-grad-cam's tutorial recipe: predict, then one GradCAM call per detection."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    x = torch.from_numpy(image).permute(2, 0, 1)[None].float().to(device) * (1 / 255.0)
    out = net(x)[0]  # with autograd on, as the tutorial predicts: the boxes GradCAM's own pass finds again
    boxes, labels = out["boxes"][:k].detach().cpu().numpy(), out["labels"][:k].cpu().numpy()
    cam = GradCAM(net, [net.get_submodule(LAYER)])
    try:
        return np.stack(
            [cam(x, targets=[FasterRCNNBoxScoreTarget(labels[j : j + 1], boxes[j : j + 1])])[0] for j in range(k)]
        )
    finally:
        cam.activations_and_grads.release()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side, after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1: no waits on a descheduled thread)")
    parser.add_argument("--masks", action="store_true", help="Mask R-CNN: the box path against the whole pass")
    parser.add_argument("--mask-side", choices=["box path", "whole pass"], help=argparse.SUPPRESS)  # one child run
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    if args.mask_side:
        print(json.dumps(mask_run(args.mask_side, 40 if args.quick else 200)))
        return {}
    if args.masks:
        return mask_rows(args)
    import torch

    import xai_bridge as xb

    net = detector(args.device)
    image = np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)
    image[30:90, 40:100] = 240
    evals, repeats, k = (40, 1, 2) if args.quick else (200, args.repeats, 2)

    def predict(batch: np.ndarray) -> Any:
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().to(args.device) / 255
        with torch.no_grad():
            return net(x)

    per_image, best_batch = best_forward_per_image(predict, image, (1, 2, 4, 8, 16), rounds=3, images_per_run=16)
    rows: list[dict[str, Any]] = []
    sides = {
        "builtin.DRISE": ("builtin.DRISE", {"n_masks": evals}),
        "shap.Partition": ("shap.Partition", {"max_evals": evals}),
        "shap.Partition, masker='inpaint_telea'": ("shap.Partition", {"max_evals": evals, "masker": "inpaint_telea"}),
    }
    runs: dict[str, int] = {}

    def side(name: str) -> Any:
        method, params = sides[name]

        def run() -> None:
            [exp] = xb.explain(net, image, method, targets=xb.top_k(k), progress=False, **params)
            runs[name] = exp.n_model_evals + 1  # + the detection pass on the image itself

        return run

    batch = np.repeat(image[None], best_batch, axis=0)
    passes = -(-evals // best_batch)

    def forwards() -> None:  # the reference, timed between the sides: the load on a shared machine drifts
        for _ in range(passes):
            predict(batch)

    times = interleaved({"forward": forwards} | {name: side(name) for name in sides}, repeats=repeats)
    per_image = median(times["forward"]) / (passes * best_batch)
    for name in sides:
        seconds = median(times[name])
        ratio = seconds / (runs[name] * per_image)
        reference = "inpaint" in name  # the classifier's masker, for reference: an inpainting per evaluation
        rows.append(
            {
                "side": name,
                "seconds": f"{seconds:.2f}",
                "evaluations": runs[name],
                "ratio": f"{ratio:.2f}",
                "target": "(reference)" if reference else verdict(ratio, 1.1),
            }
        )
    print(f"best forward: {per_image * 1000:.1f} ms per image at batch {best_batch} (between the sides)")
    print(table(rows, ["side", "seconds", "evaluations", "ratio", "target"]), flush=True)
    rows += gradcam_rows(net, image, args.device, k, repeats)
    print(table(rows, ["side", "seconds", "evaluations", "ratio", "target"]))
    result = {
        "machine": machine(args.device),
        "threads": args.threads,
        "forward_per_image": per_image,
        "best_batch": best_batch,
        "rows": rows,
    }
    write("detection", result)
    return result


def gradcam_rows(net: Any, image: np.ndarray, device: str, k: int, repeats: int) -> list[dict[str, Any]]:
    """xai-bridge's Grad-CAM over the library's recipe on the same layer, and on the default backbone."""
    import xai_bridge as xb

    rows = []
    sides = {
        "xai-bridge": lambda: xb.explain(
            net, image, "gradcam.GradCAM", targets=xb.top_k(k), layer=LAYER, progress=False
        ),
        "pytorch-grad-cam": lambda: library_gradcam(net, image, device, k),
        "xai-bridge (backbone)": lambda: xb.explain(net, image, "gradcam.GradCAM", targets=xb.top_k(k), progress=False),
    }
    times = {name: median(ts) for name, ts in interleaved(sides, repeats=max(repeats, 2)).items()}
    ratio = times["xai-bridge"] / times["pytorch-grad-cam"]
    rows.append(
        {
            "side": "gradcam.GradCAM / library",
            "seconds": f"{times['xai-bridge']:.2f} / {times['pytorch-grad-cam']:.2f}",
            "evaluations": "",
            "ratio": f"{ratio:.2f}",
            "target": verdict(ratio, 1.05),
        }
    )
    rows.append(
        {
            "side": "gradcam.GradCAM on the backbone",
            "seconds": f"{times['xai-bridge (backbone)']:.2f}",
            "evaluations": "",
            "ratio": "",
            "target": "",
        }
    )
    return rows


def mask_run(side: str, evals: int) -> dict[str, Any]:
    """One D-RISE run on a Mask R-CNN in this process: seconds, and the process's peak RSS (MiB) before and after."""
    import torch
    from torchvision.models import detection

    import xai_bridge as xb

    torch.manual_seed(0)
    net = detection.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        min_size=128,
        max_size=192,
        box_score_thresh=0.0,
        box_detections_per_img=50,
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50,
    ).eval()
    if side == "whole pass":  # a hook on the model keeps torchvision's whole forward for every image
        net.register_forward_hook(lambda module, args, out: out)
    image = np.random.default_rng(0).integers(0, 255, (240, 360, 3), dtype=np.uint8)
    image[60:180, 90:270] = 240
    xb.explain(net, image, "builtin.DRISE", targets=xb.top_k(2), n_masks=2, progress=False)  # warm-up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    xb.explain(net, image, "builtin.DRISE", targets=xb.top_k(2), n_masks=evals, progress=False)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"side": side, "seconds": seconds, "rss_before_mib": before, "peak_rss_mib": peak}


def mask_rows(args: argparse.Namespace) -> dict[str, Any]:
    """The box path and the whole pass, each run in a child process, alternating; medians of seconds and peak RSS."""
    runs: dict[str, list[dict[str, Any]]] = {"box path": [], "whole pass": []}
    for r in range(1 if args.quick else args.repeats):
        for side in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            command = [sys.executable, __file__, "--mask-side", side, "--threads", str(args.threads)]
            out = subprocess.run(command + (["--quick"] if args.quick else []), capture_output=True, text=True)
            if out.returncode:
                sys.exit(f"{side}: the child run failed:\n{out.stderr[-2000:]}")
            runs[side].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = [
        {
            "side": side,
            "seconds": f"{median([r['seconds'] for r in done]):.1f}",
            "peak RSS MiB": f"{median([r['peak_rss_mib'] for r in done]):.0f}",
            "RSS before MiB": f"{median([r['rss_before_mib'] for r in done]):.0f}",
        }
        for side, done in runs.items()
    ]
    print(table(rows, ["side", "seconds", "peak RSS MiB", "RSS before MiB"]))
    result = {
        "machine": machine("cpu"),
        "threads": args.threads,
        "evaluations": 40 if args.quick else 200,
        "rows": rows,
    }
    write("detection_masks", result)
    return result


if __name__ == "__main__":
    main()
