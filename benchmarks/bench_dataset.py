"""Images per second of explain_dataset: local engine vs Ray (local cluster), side by side.

Explains a folder of generated 224x224 images with the bundled EfficientNet-Lite0
and ``builtin.Saliency`` (and Grad-CAM), once in-process and once on Ray
actors (one per core), alternating, into fresh stores. Prints a table and JSON.
With ``--device cuda`` every worker builds its model on the GPU (they share it:
the benchmark tells Ray not to hide the GPU from actors that request none).

    .venv/bin/python benchmarks/bench_dataset.py [--images 32] [--workers 2] [--repeats 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_common_args, machine, suffix, write


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    add_common_args(parser, repeats=1)
    args = parser.parse_args(argv)
    device = args.device
    if device.startswith("cuda"):  # Ray sets CUDA_VISIBLE_DEVICES="" in actors that request no GPU
        os.environ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"] = "1"

    import ray
    import torch

    from xai_bridge.datasets import explain_dataset, model_factory

    if args.quick:
        import xai_bridge as xb

        @model_factory
        def factory():
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Conv2d(3, 4, 3),
                torch.nn.ReLU(),
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
                torch.nn.Linear(4, 3),
            ).eval()
            return xb.TorchModel(net.to(device), xb.Preprocess(scale="unit"), device=device)

        methods, n_images = ["builtin.Saliency"], 8
    else:
        from xai_bridge.adapters.models import efficientnet_lite0

        factory = model_factory(functools.partial(efficientnet_lite0, device=device))
        methods, n_images = ["builtin.Saliency", "gradcam.GradCAM"], args.images
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(n_images):
            Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
        ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
        try:
            for rep in range(args.repeats):
                for engine in ("local", "ray"):
                    out = Path(tmp) / f"{engine}{rep}"
                    start = time.perf_counter()
                    summary = explain_dataset(
                        factory,
                        folder,
                        methods,
                        out,
                        engine=engine,
                        batch_size=8,
                        num_workers=args.workers,
                        progress=False,
                    )
                    seconds = time.perf_counter() - start
                    if summary.failed:
                        print(summary)
                    rows.append(
                        {
                            "engine": engine,
                            "repeat": rep,
                            "images": summary.done,
                            "seconds": seconds,
                            "images_per_s": summary.done / seconds,
                        }
                    )
        finally:
            ray.shutdown()
    best = {e: max(r["images_per_s"] for r in rows if r["engine"] == e) for e in ("local", "ray")}
    result = {
        "methods": methods,
        "images": n_images,
        "workers": args.workers,
        "device": device,
        "machine": machine(device),
        "runs": rows,
        "images_per_s": best,
        "ray_over_local": best["ray"] / best["local"],
    }
    print(f"{'engine':8s} {'images':>7s} {'seconds':>8s} {'images/s':>9s}")
    for r in rows:
        print(f"{r['engine']:8s} {r['images']:7d} {r['seconds']:8.2f} {r['images_per_s']:9.2f}")
    print(f"ray / local: {result['ray_over_local']:.2f}x")
    print(f"-> {write('dataset' + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
