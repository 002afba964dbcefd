"""Methods implemented here, with no third-party explainability library.

``builtin.Saliency`` differentiates through the model's declared preprocessing
with ``torch.autograd``; ``builtin.Occlusion`` and ``builtin.RISE`` are numpy
and work on any model; ``builtin.DRISE`` explains object detections
(:mod:`._rise`); ``builtin.AttentionRollout``, ``builtin.LeGrad`` and
``builtin.GenericAttention`` read a vision transformer's attention
(:mod:`._attention`). Every spec is declared here or in the module beside
its code, and every target points at this package.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from xai_bridge import progress
from xai_bridge._validate import flag
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, require_differentiable
from xai_bridge.errors import ParameterError
from xai_bridge.registry import MethodSpec

__all__ = [
    "SPECS",
    "RiseMasks",
    "attention_rollout",
    "baseline_fills",
    "drise",
    "generic_attention",
    "legrad",
    "linear_resize_matrix",
    "occlusion",
    "rise",
    "saliency",
    "sample_masks",
    "sliding_windows",
]


def saliency(request: ExplainRequest) -> BackendResult:
    """Input-gradient saliency (Simonyan et al. 2014, https://arxiv.org/abs/1312.6034).

    Params:
        abs: take absolute gradients (default True, like captum's ``Saliency``).
    """
    import torch

    params = check_params(request.method, request.params, {"abs": True})
    params["abs"] = flag("abs", params["abs"])
    model = require_differentiable(request, working="builtin.Occlusion")
    net = model.pixel_module()
    n, t = request.targets.shape
    targets = torch.as_tensor(request.targets, device=model.device)  # one copy to the device, not one a batch
    raws = []
    with model.guard(freeze_params=True):
        for start in range(0, n, model.batch_size):
            x = model.pixel_tensor(request.images[start : start + model.batch_size]).requires_grad_(True)
            out = net(x)
            progress.tick(len(x))  # a direct call of the pixel module: no counter sees it
            idx = targets[start : start + model.batch_size].to(out.device)  # a no-op unless outputs move
            per_target = []
            for j in range(t):
                (grad,) = torch.autograd.grad(out.gather(1, idx[:, j : j + 1]).sum(), x, retain_graph=j < t - 1)
                per_target.append(grad.abs() if params["abs"] else grad)
            raws.append(torch.stack(per_target, dim=1).detach())  # stays on the device: no sync a batch
    raw = torch.cat(raws).float().cpu().numpy()
    return BackendResult(
        attributions=raw.sum(axis=2),
        raw=raw,
        params=params,
        backend_version=torch.__version__,
        n_model_evals=n,
    )


def sliding_windows(height: int, width: int, window: tuple[int, int], stride: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners of windows covering the whole image (the last row/column flush with the edge)."""
    wh, ww = window
    sh, sw = stride
    ys = list(range(0, max(height - wh, 0) + 1, sh))
    xs = list(range(0, max(width - ww, 0) + 1, sw))
    if ys[-1] + wh < height:
        ys.append(height - wh)
    if xs[-1] + ww < width:
        xs.append(width - ww)
    return [(y, x) for y in ys for x in xs]


def occlusion(request: ExplainRequest) -> BackendResult:
    """Sliding-window occlusion (Zeiler & Fergus 2014, https://arxiv.org/abs/1311.2901).

    Each window is replaced by ``baseline`` and the drop of the target output is
    spread evenly over the window's pixels (averaged where windows overlap).
    All occluded images go through ``model.predict`` in batches.

    Params:
        window: ``(height, width)`` in pixels, or an int (default: 1/8 of the
            shorter side).
        stride: ``(height, width)`` step (default: half the window).
        baseline: fill value 0-255, an RGB triple, or ``"mean"`` (the image's
            mean colour). Default 0 (black).
    """
    params = check_params(request.method, request.params, _OCCLUSION_DEFAULTS)
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    window, stride = _occlusion_geometry(params, h, w)
    corners = sliding_windows(h, w, window, stride)
    fills = np.rint(baseline_fills(images, params["baseline"])).astype(np.uint8)

    def stream() -> Iterator[np.ndarray]:  # the images themselves, then every image's occluded copies
        yield from images
        for i in range(n):
            for y, x in corners:
                img = images[i].copy()
                img[y : y + window[0], x : x + window[1]] = fills[i]
                yield img

    out = _predict_stream(request.model, stream(), n + n * len(corners))
    base_scores = np.take_along_axis(out[:n], targets, axis=1)
    drops = out[n:].reshape(n, len(corners), -1)
    attributions = np.zeros((n, targets.shape[1], h, w), np.float64)
    coverage = np.zeros((h, w), np.float64)
    for k, (y, x) in enumerate(corners):
        delta = base_scores - np.take_along_axis(drops[:, k], targets, axis=1)  # (N, T)
        attributions[:, :, y : y + window[0], x : x + window[1]] += delta[:, :, None, None]
        coverage[y : y + window[0], x : x + window[1]] += 1.0
    attributions /= coverage
    params = {**params, "window": list(window), "stride": list(stride)}
    return BackendResult(
        attributions=attributions.astype(np.float32),
        params=params,
        backend_version="builtin",
        base_scores=None,
    )


_OCCLUSION_DEFAULTS = {"window": None, "stride": None, "baseline": 0}


def _occlusion_geometry(params: Mapping[str, Any], h: int, w: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window and stride of :func:`occlusion` on ``(h, w)`` images, defaults filled in and checked."""
    window = _pixels("window", params.get("window"), max(1, min(h, w) // 8))
    if not (0 < window[0] <= h and 0 < window[1] <= w):
        raise ParameterError(f"window: expected 1..{(h, w)} pixels, got {window}")
    stride = _pixels("stride", params.get("stride"), (max(1, window[0] // 2), max(1, window[1] // 2)))
    if min(stride) < 1:
        raise ParameterError(f"stride: expected positive steps, got {stride}")
    return window, stride


def _saliency_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`saliency`'s evaluations: one forward pass per image (each target's gradient reuses it)."""
    return n


def _occlusion_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`occlusion`'s evaluations: each image once, then once per window position (all targets share them)."""
    window, stride = _occlusion_geometry(params, *hw)
    return n * (1 + len(sliding_windows(*hw, window, stride)))


def _pixels(name: str, value: object, default: int | tuple[int, int]) -> tuple[int, int]:
    """A window or stride: None (``default``), an int or ``(height, width)`` integers."""
    value = default if value is None else value
    pair = (value, value) if isinstance(value, (int, np.integer)) else value
    if (
        not isinstance(pair, (tuple, list))
        or len(pair) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair)
    ):
        raise ParameterError(f"{name}: expected None, an integer or (height, width) integers, got {value!r}")
    return int(pair[0]), int(pair[1])


def _predict_stream(model: object, stream: Iterator[np.ndarray], total: int) -> np.ndarray:
    """Predict an iterator of images in batches of ``model.batch_size``."""
    batch_size = int(getattr(model, "batch_size", 32))
    outs, chunk = [], []
    for img in stream:
        chunk.append(img)
        if len(chunk) == batch_size:
            outs.append(model.predict(np.stack(chunk)))  # type: ignore[attr-defined]
            chunk = []
    if chunk:
        outs.append(model.predict(np.stack(chunk)))  # type: ignore[attr-defined]
    out = np.concatenate(outs, axis=0)
    if len(out) != total:
        raise RuntimeError(f"occlusion: expected {total} outputs, got {len(out)}")
    return out


from ._attention import SPECS as _ATTENTION_SPECS  # noqa: E402
from ._attention import attention_rollout, generic_attention, legrad  # noqa: E402
from ._rise import (  # noqa: E402
    _DRISE_DEFAULTS,
    _RISE_DEFAULTS,
    RiseMasks,
    _drise_evals,
    _rise_evals,
    baseline_fills,
    drise,
    linear_resize_matrix,
    rise,
    sample_masks,
)

SPECS = (
    MethodSpec(
        name="builtin.Saliency",
        target=f"{__name__}:saliency",
        requires=("torch",),
        extra="torch",
        family="gradient",
        needs_gradients=True,
        description="Gradient of the target output w.r.t. image pixels (Simonyan et al. 2014), via torch.autograd.",
        evaluations=_saliency_evals,
        aliases=("builtin.saliency",),
    ),
    MethodSpec(
        name="builtin.Occlusion",
        target=f"{__name__}:occlusion",
        family="perturbation",
        signed=True,
        description="Sliding-window occlusion in numpy, batched through model.predict; works on any model.",
        evaluations=_occlusion_evals,
        quick={"window": 8, "stride": 8},
        aliases=("builtin.occlusion",),
    ),
    MethodSpec(
        name="builtin.RISE",
        budget="n_masks",
        budget_default=_RISE_DEFAULTS["n_masks"],
        evaluations=_rise_evals,
        quick={"n_masks": 16, "grid": 3},
        target=f"{__name__}:rise",
        requires=("torch",),  # the masked images are computed in torch (_rise._rise_masked)
        extra="torch",
        family="perturbation",
        signed=True,
        random=True,
        description="RISE (Petsiuk et al. 2018): seeded random masks, numpy, batched through model.predict; any model.",
        aliases=("rise", "builtin.rise"),
    ),
    MethodSpec(
        name="builtin.DRISE",
        target=f"{__name__}:drise",
        budget_default=_DRISE_DEFAULTS["n_masks"],
        evaluations=_drise_evals,
        quick={"n_masks": 16, "grid": 4},
        model_kind="detector",
        family="perturbation",
        random=True,
        budget="n_masks",
        description="D-RISE (Petsiuk et al. 2021): RISE masks weighted by each detection's similarity; detectors.",
        aliases=("drise", "builtin.drise"),
    ),
    *_ATTENTION_SPECS,
)
