"""Methods implemented here, with no third-party explainability library.

``saliency`` differentiates through the model's declared preprocessing with
``torch.autograd``; ``occlusion`` is numpy and works on any model.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from xai_bridge.backend import BackendResult, ExplainRequest, check_params, require_differentiable

__all__ = ["baseline_fills", "occlusion", "saliency", "sliding_windows"]


def saliency(request: ExplainRequest) -> BackendResult:
    """Input-gradient saliency (Simonyan et al. 2014, https://arxiv.org/abs/1312.6034).

    Params:
        abs: take absolute gradients (default True, like captum's ``Saliency``).
    """
    import torch

    params = check_params(request.method, request.params, {"abs": True})
    model = require_differentiable(request, working="builtin.occlusion")
    net = model.pixel_module()
    n, t = request.targets.shape
    raws = []
    with model.guard(freeze_params=True):
        for start in range(0, n, model.batch_size):
            x = model.pixel_tensor(request.images[start : start + model.batch_size]).requires_grad_(True)
            out = net(x)
            idx = torch.as_tensor(request.targets[start : start + model.batch_size], device=out.device)
            per_target = []
            for j in range(t):
                (grad,) = torch.autograd.grad(out.gather(1, idx[:, j : j + 1]).sum(), x, retain_graph=j < t - 1)
                per_target.append(grad.abs() if params["abs"] else grad)
            raws.append(torch.stack(per_target, dim=1).detach().cpu().numpy())
    raw = np.concatenate(raws, axis=0).astype(np.float32)
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
    params = check_params(request.method, request.params, {"window": None, "stride": None, "baseline": 0})
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    window = params["window"] or max(1, min(h, w) // 8)
    window = (int(window), int(window)) if np.isscalar(window) else tuple(int(v) for v in window)
    if not (0 < window[0] <= h and 0 < window[1] <= w):
        raise ValueError(f"window: expected 1..{(h, w)} pixels, got {window}")
    stride = params["stride"] or (max(1, window[0] // 2), max(1, window[1] // 2))
    stride = (int(stride), int(stride)) if np.isscalar(stride) else tuple(int(v) for v in stride)
    if min(stride) < 1:
        raise ValueError(f"stride: expected positive steps, got {stride}")
    corners = sliding_windows(h, w, window, stride)
    fills = np.rint(baseline_fills(images, params["baseline"])).astype(np.uint8)
    base = request.model.predict(images)
    base_scores = np.take_along_axis(base, targets, axis=1)

    def occluded() -> Iterator[np.ndarray]:
        for i in range(n):
            for y, x in corners:
                img = images[i].copy()
                img[y : y + window[0], x : x + window[1]] = fills[i]
                yield img

    drops = _predict_stream(request.model, occluded(), n * len(corners))
    drops = drops.reshape(n, len(corners), -1)
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


def baseline_fills(images: np.ndarray, baseline: object) -> np.ndarray:
    """Per-image RGB fill ``(N, 3)`` float64 for a baseline: a number, an RGB triple or ``"mean"``.

    Shared by occlusion and RISE.
    """
    n = len(images)
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline: expected a number, an RGB triple or 'mean', got {baseline!r}")
        return images.reshape(n, -1, 3).mean(axis=1)
    value = np.asarray(baseline, dtype=np.float64)
    if value.shape not in ((), (3,)) or value.min() < 0 or value.max() > 255:
        raise ValueError(f"baseline: expected a number or RGB triple in 0..255, got {baseline!r}")
    return np.tile(np.broadcast_to(value, (3,)), (n, 1))


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
