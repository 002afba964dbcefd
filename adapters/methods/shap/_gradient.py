"""shap's GradientExplainer (expected gradients) on image pixels of a torch model."""

from __future__ import annotations

from typing import Any

import numpy as np

from xai_bridge._validate import int_at_least, int_or_default, number
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, require_differentiable
from xai_bridge.errors import ParameterError

__all__ = ["gradient", "target_groups"]


def target_groups(targets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Split ``(N, T)`` targets into ``(columns, rows)`` groups of images sharing a target row.

    Libraries that take one output list per call are called once per group,
    so each image explains its own targets.
    """
    unique, inverse = np.unique(targets, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [(unique[g], np.flatnonzero(inverse == g)) for g in range(len(unique))]


_GRADIENT_DEFAULTS = {"background": "black", "nsamples": 200, "local_smoothing": 0.0, "batch_size": None}


def gradient(request: ExplainRequest) -> BackendResult:
    """Shap's GradientExplainer: expected gradients on image pixels of a torch model.

    Erion et al. 2021, https://arxiv.org/abs/1906.10670. Runs on
    ``model.pixel_module()``, so values are per image pixel in [0, 255] units
    and the background lives in the same space. ``base_scores`` is the
    mean output on the background (what the values sum to approximately, with
    ``f(x)``). Seeded: shap's ``rseed`` and the torch RNG (forked) use
    ``request.seed``.

    Params:
        background: ``"black"`` (one black image, the default), an int ``k``
            (``k`` uniform-noise images drawn from the seed) or an array of
            images ``(K, H, W, 3)`` / ``(H, W, 3)`` in 0..255 at the image size.
        nsamples: gradient samples per image and target (default 200).
        local_smoothing: std of Gaussian noise added to the input, in pixel
            units (default 0).
        batch_size: samples per forward/backward pass (default: the model's).
    """
    import shap
    import torch
    from xai_bridge.adapters._torch import seeded

    params = check_params(request.method, request.params, _GRADIENT_DEFAULTS)
    model = require_differentiable(request, working="shap.Partition, lime, rise")
    nsamples = int_at_least("nsamples", params["nsamples"], 1)
    batch_size = int_or_default("batch_size", params["batch_size"], model.batch_size)
    smoothing = number("local_smoothing", params["local_smoothing"], 0)
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    background = _background(params["background"], (h, w), request.seed)
    net = model.pixel_module()
    x = model.pixel_tensor(images)
    bg = torch.from_numpy(np.ascontiguousarray(background.transpose(0, 3, 1, 2))).to(model.device)
    values = np.zeros((n, targets.shape[1], 3, h, w), np.float32)
    evals = 0
    with model.guard(freeze_params=True):
        for cols, rows in target_groups(targets):
            selected = _select_columns(net, cols)
            with seeded(request.seed, model.device):  # the RNG lock is taken before torch's state is forked
                explainer = shap.GradientExplainer(selected, bg, batch_size=batch_size, local_smoothing=smoothing)
                out = explainer.shap_values(x[rows], nsamples=nsamples, rseed=request.seed % 2**32)
            values[rows] = np.transpose(np.asarray(out).reshape(len(rows), 3, h, w, -1), (0, 4, 1, 2, 3))
            evals += len(bg) + len(rows) * len(cols) * nsamples
        with torch.no_grad():
            bg_out = net(bg).float().cpu().numpy()
    evals += len(bg)
    base = bg_out.mean(axis=0)[targets]
    return BackendResult(
        attributions=values.sum(axis=2),
        raw=values,
        base_scores=base,
        params={**params, "background": _describe(params["background"])}
        | {"nsamples": nsamples, "local_smoothing": smoothing, "batch_size": batch_size},
        backend_version=shap.__version__,
        n_model_evals=evals,
        uses_seed=True,
    )


def _select_columns(net: Any, cols: np.ndarray) -> Any:
    """An ``nn.Module`` returning ``net``'s outputs at ``cols`` only (shap explains every output)."""
    import torch
    from torch import nn

    class SelectColumns(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            device = next((t.device for t in net.parameters()), torch.device("cpu"))
            self.cols = torch.as_tensor(np.asarray(cols, np.int64), device=device)  # once, not per forward

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            cols = self.cols if self.cols.device == x.device else self.cols.to(x.device)
            return self.net(x).index_select(1, cols)

    return SelectColumns()


def _background(spec: Any, size: tuple[int, int], seed: int) -> np.ndarray:
    h, w = size
    if isinstance(spec, str):
        if spec != "black":
            raise ParameterError(f"background: expected 'black', an int or an image array, got {spec!r}")
        return np.zeros((1, h, w, 3), np.float32)
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        if spec < 1:
            raise ParameterError(f"background: expected at least 1 noise image, got {spec}")
        return np.random.default_rng(seed).uniform(0, 255, size=(int(spec), h, w, 3)).astype(np.float32)
    arr = np.asarray(spec, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1:] != (h, w, 3):
        raise ParameterError(f"background: expected images of shape (K, {h}, {w}, 3), got {arr.shape}")
    if arr.min() < 0 or arr.max() > 255:
        raise ParameterError("background: expected pixel values in 0..255")
    return arr


def _describe(spec: Any) -> Any:
    if isinstance(spec, (str, int, np.integer)):
        return spec
    arr = np.asarray(spec)
    return f"array{tuple(arr.shape)}"
