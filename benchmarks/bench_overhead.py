"""xai-bridge vs each library called directly, side by side, on EfficientNet-Lite0.

For every routed method this prints

* ``overhead = time through xai.explain / time calling the library directly
  with the same settings`` (target <= 1.05), where the direct side is what a
  competent user writes by hand: the image preprocessed once into a
  normalised tensor, the library called on the plain module (captum,
  pytorch-grad-cam, torchcam, shap.GradientExplainer) or with a hand-written
  ``f(x)`` doing the preprocessing (shap Partition, lime);
* for perturbation methods, ``efficiency = time / (model evaluations x
  best-batch forward time per image)`` (target <= 1.1), the forward time being
  the per-image time of ``predict`` in fixed chunks (no tuning) of the best
  batch size of 1..32 (found once at the start), timed as a side of its own
  between the method's runs on about a quarter as many images (median), and
  the evaluations every image sent through ``model.predict`` during the
  call (a prediction pass for the scores included, when one runs);
* ``in_forward``: the share of the call's time spent inside the model's
  forward passes (hooks on the pixel module), a view immune to the drift of
  the machine's speed that the yardstick suffers from;
* separately, what the full-resolution path costs: the same call on the
  original 451x300 picture (differentiable resize to 224 inside the model)
  over the call on the 224x224 picture.

Both sides get the same 224x224 image, so xai-bridge's resize is a no-op.
CPU, 2 threads (or ``--device cuda``: the module and the direct side's
tensors on the GPU); the sides alternate (A B, B A, ...) after a warm-up;
medians of ``--repeats`` runs.

    .venv/bin/python benchmarks/bench_overhead.py [--repeats 3] [--methods lime gradcam.GradCAM ...] [--device cuda] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    Setup,
    add_common_args,
    best_forward_per_image,
    interleaved,
    load_setup,
    machine,
    median,
    setup_threads,
    suffix,
    synchronize,
    table,
    verdict,
    write,
)

OVERHEAD_TARGET = 1.05
EFFICIENCY_TARGET = 1.1
FULL_RES_METHODS = ("gradcam.GradCAM", "builtin.Saliency", "captum.IntegratedGradients", "lime")


@dataclass(frozen=True)
class Settings:
    """Sample counts: the libraries' defaults (lime 1000 samples, shap 500 evaluations), RISE 1000 masks,
    32-pixel occlusion windows at stride 16; tiny in ``--quick``."""

    lime_samples: int = 1000
    shap_evals: int = 500
    shap_masker: str = "blur(64,64)"
    gradient_samples: int = 32
    ig_steps: int = 50
    rise_masks: int = 1000
    window: int = 32
    stride: int = 16
    batch: int = 16

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            lime_samples=20,
            shap_evals=20,
            shap_masker="blur(8,8)",
            gradient_samples=4,
            ig_steps=4,
            rise_masks=20,
            window=8,
            stride=8,
            batch=8,
        )


@dataclass(frozen=True)
class Case:
    """One routed method: its xai-bridge params and the direct call (None: no library to compare with)."""

    method: str
    params: dict[str, Any]
    direct: Callable[[], Any] | None
    perturbation: bool = False


class ForwardClock:
    """Seconds spent inside a module's forward passes (two hooks, registered for the whole run).

    On CUDA both hooks synchronise the device first, or they would time the kernels' launch only.
    """

    def __init__(self, module: Any, device: str = "cpu") -> None:
        import time

        self.seconds = 0.0
        self._start = 0.0
        self._device = device
        self._now = time.perf_counter
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._exit)

    def reset(self) -> None:
        self.seconds = 0.0

    def _enter(self, *_: Any) -> None:
        synchronize(self._device)
        self._start = self._now()

    def _exit(self, *_: Any) -> None:
        synchronize(self._device)
        self.seconds += self._now() - self._start


def cases(s: Setup, cfg: Settings) -> list[Case]:
    """Every benchmarked method with matched settings on both sides."""
    import torch

    net, image, target = s.net, s.image, s.target
    layer = net.get_submodule(s.layer)
    out: list[Case] = []

    def saliency_by_hand() -> Any:
        x = s.tensor(image).requires_grad_(True)
        net(x)[0, target].backward()
        return x.grad.abs()

    out.append(Case("builtin.Saliency", {}, saliency_by_hand))

    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    for cls in (GradCAM, GradCAMPlusPlus, LayerCAM):

        def run_cam(cls: Any = cls) -> Any:
            with cls(model=net, target_layers=[layer]) as cam:
                return cam(input_tensor=s.tensor(image), targets=[ClassifierOutputTarget(target)])

        out.append(Case(f"gradcam.{cls.__name__}", {"layer": s.layer}, run_cam))

    from torchcam.methods import GradCAM as TCGradCAM
    from torchcam.methods import LayerCAM as TCLayerCAM

    for cls in (TCGradCAM, TCLayerCAM):

        def run_torchcam(cls: Any = cls) -> Any:
            with cls(net, s.layer) as extractor:
                return extractor(target, net(s.tensor(image)))

        out.append(Case(f"torchcam.{cls.__name__}", {"layer": s.layer}, run_torchcam))

    import shap

    def run_partition() -> Any:
        masker = shap.maskers.Image(cfg.shap_masker, image.shape)
        explainer = shap.Explainer(s.logits_np, masker)
        return explainer(
            image[None].astype(np.float64),
            max_evals=cfg.shap_evals,
            batch_size=cfg.batch,
            outputs=[target],
            silent=True,
        )

    out.append(
        Case(
            "shap.Partition",
            {"masker": cfg.shap_masker, "max_evals": cfg.shap_evals, "batch_size": cfg.batch},
            run_partition,
            perturbation=True,
        )
    )

    class Column(torch.nn.Module):  # shap explains every output; a user selects the one they want
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return net(x)[:, target : target + 1]

    def run_gradient() -> Any:
        torch.manual_seed(0)
        explainer = shap.GradientExplainer(Column(), s.tensor(np.zeros_like(image)), batch_size=cfg.batch)
        return explainer.shap_values(s.tensor(image), nsamples=cfg.gradient_samples, rseed=0)

    out.append(Case("shap.Gradient", {"nsamples": cfg.gradient_samples, "batch_size": cfg.batch}, run_gradient))

    from lime import lime_image

    def run_lime() -> Any:
        explainer = lime_image.LimeImageExplainer(random_state=0)
        return explainer.explain_instance(
            image.astype(np.float64),
            s.logits_np,
            labels=(target,),
            top_labels=None,
            hide_color=0,
            num_samples=cfg.lime_samples,
            batch_size=cfg.batch,
            random_seed=0,
        )

    out.append(
        Case(
            "lime",
            {"num_samples": cfg.lime_samples, "batch_size": cfg.batch, "hide_color": 0},
            run_lime,
            perturbation=True,
        )
    )
    out.append(Case("rise", {"n_masks": cfg.rise_masks}, None, perturbation=True))
    out.append(Case("builtin.Occlusion", {"window": cfg.window, "stride": cfg.stride}, None, perturbation=True))

    from captum.attr import IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    black = s.tensor(np.zeros_like(image))

    def run_ig() -> Any:
        return IntegratedGradients(net).attribute(
            s.tensor(image), baselines=black, target=target, n_steps=cfg.ig_steps, internal_batch_size=cfg.batch
        )

    out.append(Case("captum.IntegratedGradients", {"n_steps": cfg.ig_steps, "internal_batch_size": cfg.batch}, run_ig))

    def run_captum_saliency() -> Any:
        return Saliency(net).attribute(s.tensor(image).requires_grad_(True), target=target)

    out.append(Case("captum.Saliency", {}, run_captum_saliency))

    def run_smoothgrad() -> Any:  # noise std: 25.5 pixel units = 0.1 of [0, 1], divided by std per channel
        torch.manual_seed(0)
        return NoiseTunnel(Saliency(net)).attribute(
            s.tensor(image),
            target=target,
            nt_type="smoothgrad",
            nt_samples=8,
            stdevs=float(0.1 / s.std.mean()),
            nt_samples_batch_size=cfg.batch,
        )

    out.append(
        Case(
            "captum.Saliency+NoiseTunnel",
            {
                "noise_tunnel": {
                    "kind": "smoothgrad",
                    "nt_samples": 8,
                    "stdevs": 25.5,
                    "nt_samples_batch_size": cfg.batch,
                }
            },
            run_smoothgrad,
        )
    )

    def run_occlusion() -> Any:
        return Occlusion(net).attribute(
            s.tensor(image),
            baselines=black,
            target=target,
            sliding_window_shapes=(3, cfg.window, cfg.window),
            strides=(3, cfg.stride, cfg.stride),
            perturbations_per_eval=cfg.batch,
        )

    out.append(
        Case(
            "captum.Occlusion",
            {"window": cfg.window, "stride": cfg.stride, "perturbations_per_eval": cfg.batch},
            run_occlusion,
            perturbation=True,
        )
    )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--methods", nargs="*", default=None, help="subset of methods")
    parser.add_argument("--no-full-res", action="store_true", help="skip the full-resolution rows")
    parser.add_argument(
        "--contiguous",
        action="store_true",
        help="TorchModel(channels_last=False): the routing overhead alone, without the automatic channels-last layout",
    )
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    import xai_bridge as xb

    cfg = Settings.quick() if args.quick else Settings()
    s = load_setup(
        args.quick, batch_size=cfg.batch, device=args.device, channels_last=False if args.contiguous else None
    )
    import xai_bridge.adapters.models as xm

    # The yardstick: the same module through predict in fixed chunks (no tuning), best batch size.
    layout = False if args.contiguous else None
    fixed = xm.TorchModel(s.net, s.model.preprocess, batch_size=64, tune_batch=False, channels_last=layout)
    per_image, best_batch = best_forward_per_image(fixed.predict, s.image, device=args.device)
    yardstick = xm.TorchModel(s.net, s.model.preprocess, batch_size=best_batch, tune_batch=False, channels_last=layout)
    clock = ForwardClock(s.model.pixel_module(), args.device)
    available = set(xb.available_methods(installed_only=True))
    table_cases = [c for c in cases(s, cfg) if (args.methods is None or c.method in args.methods)]
    rows: list[dict[str, Any]] = []
    for case in table_cases:
        name = case.method.split("+")[0]
        if xb.default_registry().spec(name).name not in available:  # "lime", "rise": aliases of canonical names
            rows.append({"method": case.method, "note": "not available"})
            continue
        last: dict[str, Any] = {}

        def ours(name: str = name, params: dict[str, Any] = case.params) -> None:
            counted = xb.CountingModel(s.model)  # every predict call, a prediction pass included
            clock.reset()
            last["exp"] = xb.explain(counted, s.image, name, targets=s.target, **params)
            last["predicted"] = counted.count
            last.setdefault("forward_share", []).append(clock.seconds)

        sides: dict[str, Callable[[], Any]] = {"xai-bridge": ours}
        if case.direct is not None:
            sides["direct"] = case.direct
        warm: tuple[str, ...] = ()
        if case.perturbation:
            # The forward yardstick runs as a side of its own, about a quarter of the method's evaluations in
            # chunks of the best batch size, so it sees the same drift of this shared machine's speed.
            ours()
            warm = ("xai-bridge",)
            n_yard = best_batch * max(
                1, round(max(int(last["predicted"]), int(last["exp"].n_model_evals)) / 4 / best_batch)
            )
            yard_images = np.repeat(s.image[None], n_yard, axis=0)
            sides["forward"] = lambda: yardstick.predict(yard_images)
        times = interleaved(sides, repeats=args.repeats, warm=warm, device=args.device)
        row: dict[str, Any] = {"method": case.method, "xai_bridge_s": median(times["xai-bridge"])}
        if case.direct is not None:
            row["direct_s"] = median(times["direct"])
            row["overhead"] = row["xai_bridge_s"] / row["direct_s"]
            row["overhead_ok"] = verdict(row["overhead"], OVERHEAD_TARGET)
        # perturbation methods: every image through model.predict; others: the method's own forwards
        # (captum's perturbation methods run tensors through the pixel module, counted by the backend)
        evals = (
            max(int(last["predicted"]), int(last["exp"].n_model_evals))
            if case.perturbation
            else int(last["exp"].n_model_evals)
        )
        row["model_evals"] = evals
        if (
            not case.perturbation
        ):  # prediction passes xai-bridge adds for scores (0 when the method's own forward serves)
            row["predict_passes"] = int(last["predicted"])
        if case.perturbation:
            per_eval = median(times["forward"]) / len(yard_images)
            row["forward_ms"] = 1000 * per_eval
            row["efficiency"] = row["xai_bridge_s"] / (evals * per_eval)
            row["efficiency_ok"] = verdict(row["efficiency"], EFFICIENCY_TARGET)
            # drift-free view: the share of the call spent inside the model's forward passes
            row["in_forward"] = median(last["forward_share"][-args.repeats :]) / row["xai_bridge_s"]
        row["times"] = {k: [round(v, 4) for v in vs] for k, vs in times.items()}
        rows.append(row)
        print(table([row], [c for c in row if c != "times"]), flush=True)

    full_rows: list[dict[str, Any]] = []
    if not args.no_full_res:
        for case in table_cases:
            if case.method not in FULL_RES_METHODS or xb.default_registry().spec(case.method).name not in available:
                continue

            def at(img: np.ndarray, case: Case = case) -> Callable[[], Any]:
                return lambda: xb.explain(s.model, img, case.method, targets=s.target, **case.params)

            times = interleaved(
                {"model_size": at(s.image), "full": at(s.full_image)}, repeats=args.repeats, device=args.device
            )
            full_rows.append(
                {
                    "method": case.method,
                    "at_model_size_s": median(times["model_size"]),
                    "full_res_s": median(times["full"]),
                    "full_res_ratio": median(times["full"]) / median(times["model_size"]),
                    "full_size": "x".join(map(str, s.full_image.shape[:2])),
                }
            )
            print(table(full_rows[-1:], list(full_rows[-1])), flush=True)

    result = {
        "setup": s.name,
        "threads": args.threads,
        "target": s.target,
        "layer": s.layer,
        "settings": cfg.__dict__,
        "forward_s_per_image": per_image,
        "best_batch": best_batch,
        "repeats": args.repeats,
        "device": args.device,
        "machine": machine(args.device),
        "targets": {"overhead": OVERHEAD_TARGET, "efficiency": EFFICIENCY_TARGET},
        "rows": rows,
        "full_resolution": full_rows,
    }
    print(
        f"\n== overhead: xai-bridge / library called directly (target <= {OVERHEAD_TARGET}); "
        f"efficiency: time / (evals x best forward) (target <= {EFFICIENCY_TARGET})"
    )
    print(
        table(
            rows,
            [
                "method",
                "xai_bridge_s",
                "direct_s",
                "overhead",
                "overhead_ok",
                "model_evals",
                "predict_passes",
                "forward_ms",
                "efficiency",
                "efficiency_ok",
                "in_forward",
            ],
        )
    )
    print(f"best-batch forward through model.predict: {per_image * 1000:.2f} ms/image at batch {best_batch}")
    if full_rows:
        print("\n== full-resolution path: same call on the original picture / on the 224x224 one")
        print(table(full_rows, list(full_rows[0])))
    print(f"-> {write('overhead' + ('-contiguous' if args.contiguous else '') + suffix(args), result, args.results)}")
    return result


if __name__ == "__main__":
    main()
