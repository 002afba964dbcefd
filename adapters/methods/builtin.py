"""Methods implemented here, with no third-party explainability library.

``builtin.Saliency`` differentiates through the model's declared preprocessing
with ``torch.autograd``; ``builtin.Occlusion`` and ``builtin.RISE`` are numpy
and work on any model.

RISE follows the authors' reference code (Petsiuk et al. 2018,
https://arxiv.org/abs/1806.07421): a coarse ``grid`` of cells kept with
probability ``p1``, bilinearly upsampled to ``(grid + 1) * cell`` pixels
(``skimage.transform.resize(order=1, mode="reflect")`` semantics, without
scikit-image) and cropped at a random shift in ``[0, cell)``. The saliency of
target ``t`` is ``sum_k f_t(I * M_k) M_k / (n_masks * p1)``. Every masked
image goes through ``model.predict`` in a few large batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xai_bridge._validate import flag, number
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, require_differentiable
from xai_bridge.errors import ParameterError
from xai_bridge.registry import MethodSpec

__all__ = [
    "SPECS",
    "RiseMasks",
    "baseline_fills",
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


def _rise_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`rise`'s evaluations: one per mask and image (all targets share them)."""
    return n * int(params.get("n_masks", _RISE_DEFAULTS["n_masks"]))


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


def baseline_fills(images: np.ndarray, baseline: object) -> np.ndarray:
    """Per-image RGB fill ``(N, 3)`` float64 for a baseline: a number, an RGB triple or ``"mean"``.

    Shared by occlusion and RISE.
    """
    n = len(images)
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ParameterError(f"baseline: expected a number, an RGB triple or 'mean', got {baseline!r}")
        return images.reshape(n, -1, 3).mean(axis=1)
    value = np.asarray(baseline, dtype=np.float64)
    if value.shape not in ((), (3,)) or value.min() < 0 or value.max() > 255:
        raise ParameterError(f"baseline: expected a number or RGB triple in 0..255, got {baseline!r}")
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


_RISE_DEFAULTS: dict[str, Any] = {"n_masks": 4000, "grid": 7, "p1": 0.5, "baseline": 0}
_CHUNK_VALUES = 1 << 24  # float32 values per masked-image chunk (64 MiB)


def linear_resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix of 1-D linear interpolation with mirrored edges.

    Sample ``o`` reads the source at ``(o + 0.5) * n_in / n_out - 0.5`` (pixel
    centres aligned, as ``skimage.transform.resize(order=1, mode="reflect")``).
    """
    src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    lo = np.floor(src).astype(np.int64)
    frac = src - lo
    matrix = np.zeros((n_out, n_in), np.float64)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, _mirror(lo, n_in)), 1.0 - frac)
    np.add.at(matrix, (rows, _mirror(lo + 1, n_in)), frac)
    return matrix


def _mirror(idx: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    idx = np.abs(idx) % period
    return np.where(idx >= n, period - idx, idx)


@dataclass(frozen=True)
class RiseMasks:
    """Seeded RISE masks, materialised in chunks.

    Attributes:
        grids: bool ``(n_masks, gh, gw)`` kept cells.
        shifts: int ``(n_masks, 2)`` crop offsets ``(dy, dx)`` in ``[0, cell)``.
        size: image ``(H, W)``.
        cell: cell size ``(ceil(H / gh), ceil(W / gw))``.
    """

    grids: np.ndarray
    shifts: np.ndarray
    size: tuple[int, int]
    cell: tuple[int, int]

    def __len__(self) -> int:
        return len(self.grids)

    def masks(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float32 ``(k, H, W)`` masks ``start:stop`` in [0, 1]."""
        grids = self.grids[start:stop].astype(np.float64)
        shifts = self.shifts[start:stop]
        (h, w), (ch, cw) = self.size, self.cell
        gh, gw = grids.shape[1:]
        rows = linear_resize_matrix(gh, (gh + 1) * ch)
        cols = linear_resize_matrix(gw, (gw + 1) * cw)
        rows_k = rows[shifts[:, 0:1] + np.arange(h)]  # (k, H, gh)
        cols_k = cols[shifts[:, 1:2] + np.arange(w)]  # (k, W, gw)
        return np.matmul(np.matmul(rows_k, grids), cols_k.transpose(0, 2, 1)).astype(np.float32)


def sample_masks(
    n_masks: int, size: tuple[int, int], grid: int | tuple[int, int] = 7, p1: float = 0.5, seed: int = 0
) -> RiseMasks:
    """Draw RISE masks for images of ``size`` from ``np.random.default_rng(seed)``."""
    gh, gw = (grid, grid) if isinstance(grid, (int, np.integer)) else grid
    h, w = size
    cell = (-(-h // gh), -(-w // gw))
    rng = np.random.default_rng(seed)
    grids = rng.random((n_masks, gh, gw)) < p1
    shifts = np.stack([rng.integers(0, cell[0], n_masks), rng.integers(0, cell[1], n_masks)], axis=1)
    return RiseMasks(grids=grids, shifts=shifts, size=(h, w), cell=cell)


def _rise_masked(image: np.ndarray, fill: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 ``(k, H, W, 3)``: ``fill + mask * (pixel - fill)`` for each mask, rounded.

    The float32 arithmetic runs in torch, on all of torch's threads (numpy's
    is single-threaded: ~8% of a RISE call on 2 cores); each element sees the
    same IEEE operations either way (multiply, add, round half to even), so
    the bytes are numpy's.
    """
    import torch

    diff = torch.from_numpy(image.astype(np.float32) - fill)  # fill: (1, 1, 3)
    masked = torch.from_numpy(masks)[..., None] * diff[None]
    masked += torch.from_numpy(fill)[None]
    return masked.round_().to(torch.uint8).numpy()


def rise(request: ExplainRequest) -> BackendResult:
    """RISE saliency for any model.

    Params:
        n_masks: number of random masks (default 4000, the paper's).
        grid: cells per side ``s``, an int or ``(rows, cols)`` (default 7).
        p1: probability of keeping a cell (default 0.5).
        baseline: what masked pixels become: 0-255, an RGB triple or
            ``"mean"`` (the image's mean colour). Default 0 (black, the paper's).
    """
    params = check_params(request.method, request.params, _RISE_DEFAULTS)
    n_masks = params["n_masks"]
    if isinstance(n_masks, bool) or not isinstance(n_masks, (int, np.integer)) or n_masks < 1:
        raise ParameterError(f"n_masks: expected an integer >= 1, got {n_masks!r}")
    grid = (params["grid"],) * 2 if np.isscalar(params["grid"]) else tuple(params["grid"])
    if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 for g in grid):
        raise ParameterError(f"grid: expected an integer >= 1 or (rows, cols), got {params['grid']!r}")
    p1 = number("p1", params["p1"], 0, 1, low_open=True)
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    fills = baseline_fills(images, params["baseline"]).astype(np.float32)[:, None, None, :]  # (N, 1, 1, 3)
    sampled = sample_masks(int(n_masks), (h, w), (int(grid[0]), int(grid[1])), p1, request.seed)
    # Masks per chunk and the order of the sums do not depend on N, so each image's saliency is the one
    # of a run on that image alone; one model call covers a chunk's masks on several images.
    chunk = max(1, min(len(sampled), _CHUNK_VALUES // (h * w * 3)))
    group = max(1, 4 * _CHUNK_VALUES // (chunk * h * w * 3))  # images per model call (64 MiB of uint8)
    saliency = np.zeros((n, targets.shape[1], h, w), np.float64)
    for start in range(0, len(sampled), chunk):
        masks = sampled.masks(start, start + chunk)  # (k, H, W)
        masks64 = masks.astype(np.float64)
        for first in range(0, n, group):
            members = range(first, min(n, first + group))
            masked = np.concatenate([_rise_masked(images[i], fills[i], masks) for i in members])
            out = request.model.predict(masked).reshape(len(members), len(masks), -1)  # (g, k, outputs)
            for row, i in enumerate(members):
                scores = out[row][:, targets[i]].astype(np.float64)  # (k, T)
                saliency[i] += np.einsum("kt,khw->thw", scores, masks64)
    saliency /= n_masks * p1
    return BackendResult(
        attributions=saliency.astype(np.float32),
        params={**params, "n_masks": int(n_masks), "grid": [int(grid[0]), int(grid[1])], "p1": p1},
        backend_version="builtin",
        uses_seed=True,
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
        family="perturbation",
        signed=True,
        random=True,
        description="RISE (Petsiuk et al. 2018): seeded random masks, numpy, batched through model.predict; any model.",
        aliases=("rise", "builtin.rise"),
    ),
)
