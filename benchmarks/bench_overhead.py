"""xai-bridge vs each library called directly, side by side, on EfficientNet-Lite0.

For every routed method this prints ``time through xai-bridge / time calling
the library directly with the same settings`` (target <= 1.05) and, for
perturbation methods, ``time / (model evaluations x best-batch forward time
per image)`` (target <= 1.1). Both sides get the same 224x224 image, so the
resize is a no-op; the direct side preprocesses by hand, as a user would.
CPU, 2 threads; the two sides alternate, medians of ``--repeats`` runs.

    .venv/bin/python benchmarks/bench_overhead.py [--repeats 3] [--methods gradcam.GradCAM lime ...]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    best_forward_per_image,
    chelsea_224,
    interleaved,
    median,
    setup_threads,
    table,
    to_tensor,
    write,
)

import xai_bridge as xb  # noqa: E402

TARGET = 285
LAYER = "bn2"


def direct_sides(net: Any, image: np.ndarray) -> dict[str, tuple[dict[str, Any], Callable[[], Any]]]:
    """method -> (xai-bridge params, the library called directly with the same settings)."""
    import torch

    sides: dict[str, tuple[dict[str, Any], Callable[[], Any]]] = {}

    def logits_np(batch: np.ndarray) -> np.ndarray:
        x = (np.asarray(batch, np.float32) / 255.0 - np.array([0.485, 0.456, 0.406], np.float32)) / np.array(
            [0.229, 0.224, 0.225], np.float32)
        with torch.no_grad():
            return net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()

    from pytorch_grad_cam import GradCAM, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for name, cls in (("gradcam.GradCAM", GradCAM), ("gradcam.LayerCAM", LayerCAM)):
        def run_cam(cls: Any = cls) -> Any:
            with cls(model=net, target_layers=[net.bn2]) as cam:
                return cam(input_tensor=to_tensor(image), targets=[ClassifierOutputTarget(TARGET)])
        sides[name] = ({"layer": LAYER}, run_cam)

    from torchcam.methods import GradCAM as TCGradCAM

    def run_torchcam() -> Any:
        with TCGradCAM(net, LAYER) as extractor:
            out = net(to_tensor(image))
            return extractor(TARGET, out)
    sides["torchcam.GradCAM"] = ({"layer": LAYER}, run_torchcam)

    import shap

    def run_shap() -> Any:
        masker = shap.maskers.Image("blur(64,64)", image.shape)
        explainer = shap.Explainer(logits_np, masker)
        return explainer(image[None].astype(np.float64), max_evals=300, batch_size=50, outputs=[TARGET], silent=True)
    sides["shap.partition"] = ({"masker": "blur(64,64)", "max_evals": 300, "batch_size": 50}, run_shap)

    from lime import lime_image

    def run_lime() -> Any:
        explainer = lime_image.LimeImageExplainer(random_state=0)
        return explainer.explain_instance(image.astype(np.float64), logits_np, labels=(TARGET,), top_labels=None,
                                          hide_color=0, num_samples=300, batch_size=50, random_seed=0)
    sides["lime"] = ({"num_samples": 300, "batch_size": 50, "hide_color": 0}, run_lime)

    if "captum.IntegratedGradients" in xb.available_methods(installed_only=True):
        from captum.attr import IntegratedGradients, Saliency

        def run_ig() -> Any:
            x = to_tensor(image)
            return IntegratedGradients(net).attribute(x, baselines=to_tensor(np.zeros_like(image)), target=TARGET,
                                                      n_steps=50, internal_batch_size=25)
        sides["captum.IntegratedGradients"] = ({"n_steps": 50, "internal_batch_size": 25}, run_ig)

        def run_saliency() -> Any:
            return Saliency(net).attribute(to_tensor(image).requires_grad_(True), target=TARGET)
        sides["captum.Saliency"] = ({}, run_saliency)
    return sides


PERTURBATION_ONLY = {
    "rise": {"n_masks": 500},
    "builtin.occlusion": {"window": 32, "stride": 32},
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    args = parser.parse_args(argv)
    setup_threads(2)
    from xai_bridge.adapters.models import efficientnet_lite0

    model = efficientnet_lite0(batch_size=50)
    net = model.module
    image = chelsea_224()
    per_image, best_batch = best_forward_per_image(model.predict, image)
    rows = []
    sides = direct_sides(net, image)
    wanted = args.methods or [*sides, *PERTURBATION_ONLY]
    for method in wanted:
        if method in sides:
            params, direct = sides[method]
            last: dict[str, Any] = {}

            def ours(method: str = method, params: dict[str, Any] = params) -> None:
                last["exp"] = xb.explain(model, image, method, targets=TARGET, **params)

            times = interleaved({"xai-bridge": ours, "direct": direct}, repeats=args.repeats)
            row = {"method": method, "xai_bridge_s": median(times["xai-bridge"]), "direct_s": median(times["direct"])}
            row["overhead_ratio"] = row["xai_bridge_s"] / row["direct_s"]
        else:
            params = PERTURBATION_ONLY[method]
            last = {}

            def ours(method: str = method, params: dict[str, Any] = params) -> None:
                last["exp"] = xb.explain(model, image, method, targets=TARGET, **params)

            times = interleaved({"xai-bridge": ours}, repeats=args.repeats)
            row = {"method": method, "xai_bridge_s": median(times["xai-bridge"])}
        exp = last["exp"]
        row["n_model_evals"] = exp.n_model_evals
        if exp.n_model_evals > 1 and method not in ("captum.IntegratedGradients", "captum.Saliency") \
                and not method.startswith(("gradcam.", "torchcam.")):
            row["efficiency_ratio"] = row["xai_bridge_s"] / (exp.n_model_evals * per_image)
        rows.append(row)
        print(table([row], list(row)), flush=True)
    result = {"device": "cpu", "threads": 2, "image": "chelsea 224x224", "target": TARGET,
              "forward_s_per_image": per_image, "best_batch": best_batch, "repeats": args.repeats, "rows": rows}
    print()
    print(table(rows, ["method", "xai_bridge_s", "direct_s", "overhead_ratio", "n_model_evals", "efficiency_ratio"]))
    print(f"best-batch forward: {per_image * 1000:.2f} ms/image at batch {best_batch}")
    print(f"-> {write('overhead', result)}")
    return result


if __name__ == "__main__":
    main()
