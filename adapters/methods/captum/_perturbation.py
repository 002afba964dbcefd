"""captum's perturbation methods on any model, one image at a time.

captum's float pixel tensors are rounded back to uint8 NHWC and sent through
``model.predict`` (exact, since perturbed pixels stay integers for integer
baselines); a torch model's ``pixel_module`` is called directly under
``no_grad``. One image at a time, so an image's result does not depend on the
others.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from xai_bridge import progress
from xai_bridge._validate import int_at_least, int_or_default, to_uint8
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version
from xai_bridge.errors import ParameterError

from .._segments import segment_images
from ._baselines import baselines_list, describe_baselines
from ._methods import METHODS, PERTURBATION_METHODS, has_random, pair

__all__ = ["run_perturbation"]


def run_perturbation(request: ExplainRequest, name: str) -> BackendResult:
    """Run captum's perturbation class ``name`` (see :func:`~xai_bridge.adapters.methods.captum.run`)."""
    params = check_params(request.method, request.params, PERTURBATION_METHODS[name])
    model, images, targets = request.model, request.images, request.targets
    n, h, w, _ = images.shape
    t = targets.shape[1]
    per_eval = int_or_default(
        "perturbations_per_eval", params["perturbations_per_eval"], getattr(model, "batch_size", 32)
    )
    effective: dict[str, Any] = {**params, "perturbations_per_eval": per_eval}
    if isinstance(params["baselines"], list):
        raise ParameterError(
            f"baselines: captum.{name} takes one baseline (a number, RGB tuple, image, 'random' or 'mean'), not a list"
        )
    rng = np.random.default_rng(request.seed)
    baseline = baselines_list(params["baselines"], images, rng)[0]  # (N, 3, H, W) float32
    effective["baselines"] = describe_baselines(params["baselines"])
    kwargs: dict[str, Any] = {"perturbations_per_eval": per_eval}
    segments = None
    if METHODS[name].superpixels:
        segments, effective["segmentation"] = segment_images(params["segmentation"], images)
        if (segments.reshape(n, -1).max(axis=1) < METHODS[name].min_segments - 1).any():
            raise ParameterError(
                f"segmentation: captum.{name} needs at least 2 superpixels per image, but an image got "
                "one; ask for more segments (e.g. Segmentation('slic', {'n_segments': 50}))"
            )
        if "n_samples" in params:
            effective["n_samples"] = kwargs["n_samples"] = int_at_least("n_samples", params["n_samples"], 1)
        estimate = METHODS[name].evaluations
        if estimate is not None:  # the superpixels are counted now: the bar's total becomes exact
            progress.revise_total(estimate({**params, "segmentation": segments}, n, t, (h, w)))
    else:
        win = pair("window", params["window"], (h, w))
        stride = pair("stride", params["stride"], win)
        effective.update(window=list(win), stride=list(stride))
        kwargs.update(sliding_window_shapes=(3, *win), strides=(3, *stride))
    forward, x_all, counter = _forward_func(model, images)
    with _maybe_guard(model):
        attributions, base_scores = _attribute(request, name, forward, x_all, baseline, segments, kwargs)
    return BackendResult(
        attributions=attributions,
        params=effective,
        backend_version=library_version("captum"),
        base_scores=base_scores,
        n_model_evals=counter[0],
        extras=_superpixel_extras(segments, attributions, t) if segments is not None else {},
        uses_seed=METHODS[name].random or has_random(params["baselines"]),
    )


def _attribute(
    request: ExplainRequest,
    name: str,
    forward: Callable[[Any], Any],
    x_all: Any,
    baseline: Any,
    segments: np.ndarray | None,
    kwargs: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``(N, T, H, W)`` and baseline scores ``(N, T)``, one captum call per image and target, each seeded."""
    import captum.attr as ca
    import torch
    from xai_bridge.adapters._torch import seeded

    images, targets, seed = request.images, request.targets, request.seed
    n, h, w, _ = images.shape
    t = targets.shape[1]
    algo = getattr(ca, name)(forward)
    attributions = np.zeros((n, t, h, w), np.float32)
    base_scores = np.zeros((n, t), np.float32)
    for i in range(n):
        x = x_all[i : i + 1]
        b = baseline[i : i + 1].to(x.device)
        call = dict(kwargs)
        if segments is not None:
            call["feature_mask"] = torch.as_tensor(segments[i], dtype=torch.int64, device=x.device)[None, None]
        base_out = forward(b)
        for j in range(t):
            target = int(targets[i, j])
            with seeded(seed, x.device):
                attr = algo.attribute(x, baselines=b, target=target, **call)
            attributions[i, j] = attr.detach().float().cpu().numpy()[0].mean(axis=0)  # channels share one value
            base_scores[i, j] = float(base_out[0, target])
    return attributions, base_scores


def _superpixel_extras(segments: np.ndarray, attributions: np.ndarray, t: int) -> dict[str, np.ndarray]:
    """``segments`` ``(N, T, H, W)`` and each superpixel's mean weight ``(N, T, S_max)`` (NaN padding)."""
    n = len(segments)
    s_max = int(segments.max()) + 1
    weights = np.full((n, t, s_max), np.nan, np.float32)
    for i in range(n):
        sizes = np.bincount(segments[i].ravel(), minlength=s_max)
        for j in range(t):
            sums = np.bincount(segments[i].ravel(), weights=attributions[i, j].ravel(), minlength=s_max)
            present = sizes > 0
            weights[i, j, present] = sums[present] / sizes[present]
    return {"segments": np.repeat(segments[:, None], t, axis=1), "superpixel_weights": weights}


def _forward_func(model: Any, images: np.ndarray) -> tuple[Callable[[Any], Any], Any, list[int]]:
    """``(forward, pixel tensor (N,3,H,W) float in [0,255], counter)``.

    A torch model's ``pixel_module`` is called directly (evaluations counted
    here); any other model gets uint8 NHWC batches through ``model.predict``
    (counted by the caller).
    """
    import torch

    counter = [0]
    if hasattr(model, "pixel_module") and hasattr(model, "pixel_tensor"):
        net = model.pixel_module()

        def forward_torch(x: Any) -> Any:
            counter[0] += int(x.shape[0])
            progress.tick(int(x.shape[0]))
            with torch.no_grad():
                return net(x)

        return forward_torch, model.pixel_tensor(images), counter

    def forward_predict(x: Any) -> Any:
        arr = x.detach().cpu().numpy().transpose(0, 2, 3, 1)
        out = model.predict(to_uint8(arr))
        return torch.as_tensor(np.asarray(out, dtype=np.float32), device=x.device)

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().contiguous()
    return forward_predict, x, counter


@contextmanager
def _maybe_guard(model: Any) -> Iterator[None]:
    if hasattr(model, "guard") and hasattr(model, "pixel_module"):
        with model.guard(freeze_params=True):
            yield
    else:
        yield
