"""Batching across images: N images in one ``explain`` call vs the physical limit of their forward passes.

For shap Partition, LIME and RISE (and occlusion, for reference) over 8 images
at 300 evaluations each, this prints side by side, measured in one run:

* ``together_s``: one ``xai.explain(model, 8 images, method)`` call (the
  images' model calls share forward passes);
* ``per_image_s``: the same images explained one call each (what a loop over
  images costs);
* ``ratio = time / (evaluations x best-batch forward time per image)``
  (target <= 1.1 for the call with all images), the forward time being the
  per-image time of ``predict`` in fixed chunks of the best batch size of
  1..64 (found once at the start), re-timed as a side of its own between the
  method's runs (about a quarter as many images) so that it sees the same
  drift of the machine's speed, and the evaluations every image sent through
  ``model.predict`` during the call;
* ``calls``: ``model.predict`` calls of each side, and ``in_forward``: the
  share of the call spent inside the model's forward passes (on CUDA the
  hooks synchronise the device, or they would time the launches only).

The model is the bundled EfficientNet-Lite0 at 224x224 on scikit-image's
colour pictures (chelsea, astronaut, coffee, rocket, hubble_deep_field,
immunohistochemistry, retina, colorwheel), target 285 "Egyptian cat" for all;
shap's masker is ``blur(64,64)``, shap's batch 16, LIME's batch the model's.
``--quick`` runs a tiny CNN on random 32x32 images (a smoke test: its numbers
mean nothing); ``--device cuda`` moves the model to the GPU.

    .venv/bin/python benchmarks/bench_batching.py [--repeats 1] [--images 8] [--evals 300] [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    add_common_args,
    best_forward_per_image,
    interleaved,
    load_setup,
    machine,
    median,
    pictures,
    setup_threads,
    suffix,
    synchronize,
    table,
    tiny_net,
    verdict,
    write,
)

TARGET = 1.1


def method_params(evals: int, quick: bool, shap_batch: int) -> dict[str, dict[str, Any]]:
    """Each method at ``evals`` model evaluations per image (occlusion: its windows, for reference)."""
    window, stride = (8, 8) if quick else (32, 16)
    return {
        "shap.Partition": {
            "masker": "blur(8,8)" if quick else "blur(64,64)",
            "max_evals": evals,
            "batch_size": shap_batch,
        },
        "lime.Lime": {"num_samples": evals},
        "builtin.RISE": {"n_masks": evals},
        "builtin.Occlusion": {"window": window, "stride": stride},
    }


class ForwardClock:
    """Seconds spent inside a module's forward passes (two hooks, registered for the whole run)."""

    def __init__(self, module: Any, device: str = "cpu") -> None:
        self.seconds = 0.0
        self._start = 0.0
        self._device = device
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._exit)

    def _enter(self, *_: Any) -> None:
        synchronize(self._device)
        self._start = time.perf_counter()

    def _exit(self, *_: Any) -> None:
        synchronize(self._device)
        self.seconds += time.perf_counter() - self._start


class Calls:
    """Counts ``predict`` calls and images of a model (attribute access falls through)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls = 0
        self.images = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.images += len(images)
        return np.asarray(self.model.predict(images))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


def build_model(args: argparse.Namespace) -> tuple[Any, Any, int]:
    """The xai-bridge model on ``--device`` (tuned batches, the default), its module and the target."""
    import torch

    import xai_bridge as xb

    if args.quick:
        net, pre, target = tiny_net(), xb.Preprocess(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3), 1
    else:
        s = load_setup(False, batch_size=args.batch, device=args.device)
        net, pre, target = s.net, s.model.preprocess, s.target
    net = net.to(torch.device(args.device))  # the benchmark is the user: it moves its module
    return xb.TorchModel(net, pre, batch_size=args.batch, device=args.device), net, target


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser, repeats=1)
    parser.add_argument("--images", type=int, default=8, help="images per call")
    parser.add_argument("--evals", type=int, default=300, help="model evaluations per image")
    parser.add_argument("--batch", type=int, default=None, help="the model's batch_size (default 16; 64 on cuda)")
    parser.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    args = parser.parse_args(argv)
    if args.batch is None:
        args.batch = 64 if args.device.startswith("cuda") else 16
    if args.quick:
        args.images, args.evals = min(args.images, 4), min(args.evals, 24)
    setup_threads(args.threads)
    import xai_bridge.adapters.models as xm

    import xai_bridge as xb

    model, net, target = build_model(args)
    size = model.preprocess.size
    images = pictures(args.quick, args.images, size)
    on_cpu = args.device == "cpu"
    # the yardstick: the same module through predict in fixed chunks (no tuning) of the best batch size
    fixed = xm.TorchModel(net, model.preprocess, batch_size=256, device=args.device, tune_batch=False)
    sizes = (1, 2, 4, 8, 16, 32, 64) + ((128, 256) if not on_cpu else ())
    forward_s, best_batch = best_forward_per_image(fixed.predict, images[0], batch_sizes=sizes, device=args.device)
    yardstick = xm.TorchModel(net, model.preprocess, batch_size=best_batch, device=args.device, tune_batch=False)
    clock = ForwardClock(model.pixel_module(), args.device)
    shap_batch = 16
    params = method_params(args.evals, args.quick, shap_batch)
    names = [m for m in params if args.methods is None or m in args.methods]
    rows: list[dict[str, Any]] = []
    for name in names:
        last: dict[str, Any] = {}

        def together(name: str = name) -> None:
            counted = Calls(model)
            if clock is not None:
                clock.seconds = 0.0
            last["exp"] = xb.explain(counted, images, name, targets=target, **params[name])
            last["calls"], last["evals"] = counted.calls, counted.images
            if clock is not None:
                last.setdefault("in_forward", []).append(clock.seconds)

        def per_image(name: str = name) -> None:
            counted = Calls(model)
            for i in range(len(images)):
                xb.explain(counted, images[i : i + 1], name, targets=target, **params[name])
            last["calls_per_image"] = counted.calls

        together()  # warm-up (the batch tuner times its first calls) and the evaluation count
        n_yard = best_batch * max(1, round(last["evals"] / 4 / best_batch))
        yard_images = np.repeat(images[:1], n_yard, axis=0)
        sides: dict[str, Callable[[], Any]] = {
            "together": together,
            "per_image": per_image,
            "forward": lambda: yardstick.predict(yard_images),
        }
        times = interleaved(sides, repeats=args.repeats, warm=("together",), device=args.device)
        per_eval = median(times["forward"]) / n_yard
        evals = int(last["evals"])
        row: dict[str, Any] = {
            "method": name,
            "images": len(images),
            "evals": evals,
            "together_s": median(times["together"]),
            "per_image_s": median(times["per_image"]),
        }
        row["speedup"] = row["per_image_s"] / row["together_s"]
        row["forward_ms"] = 1000 * per_eval
        row["ratio"] = row["together_s"] / (evals * per_eval)
        row["ratio_ok"] = verdict(row["ratio"], TARGET)
        row["ratio_per_image"] = row["per_image_s"] / (evals * per_eval)
        row["calls"] = int(last["calls"])
        row["calls_per_image"] = int(last["calls_per_image"])
        if clock is not None:
            row["in_forward"] = median(last["in_forward"][-args.repeats :]) / row["together_s"]
        row["times"] = {k: [round(v, 4) for v in vs] for k, vs in times.items()}
        rows.append(row)
        print(table([row], [c for c in row if c != "times"]), flush=True)

    columns = [
        "method",
        "images",
        "evals",
        "together_s",
        "per_image_s",
        "speedup",
        "forward_ms",
        "ratio",
        "ratio_ok",
        "ratio_per_image",
        "calls",
        "calls_per_image",
        "in_forward",
    ]
    print(
        f"\n== {len(images)} images, time / (evaluations x best-batch forward) (target <= {TARGET}), device {args.device}"
    )
    print(table(rows, columns))
    print(f"best-batch forward through model.predict: {forward_s * 1000:.2f} ms/image at batch {best_batch}")
    result = {
        "setup": "tiny CNN, random 32x32" if args.quick else "EfficientNet-Lite0 224x224, scikit-image pictures",
        "device": args.device,
        "threads": args.threads,
        "batch_size": args.batch,
        "evals_per_image": args.evals,
        "params": params,
        "forward_s_per_image": forward_s,
        "best_batch": best_batch,
        "repeats": args.repeats,
        "machine": machine(args.device),
        "target": TARGET,
        "rows": rows,
    }
    print(f"-> {write('batching' + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
