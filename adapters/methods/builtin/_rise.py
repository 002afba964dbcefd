"""RISE (Petsiuk et al. 2018) and D-RISE (Petsiuk et al. 2021): saliency from randomly masked images.

RISE follows the authors' reference code (https://arxiv.org/abs/1806.07421):
a coarse ``grid`` of cells kept with probability ``p1``, bilinearly upsampled
to ``(grid + 1) * cell`` pixels (``skimage.transform.resize(order=1,
mode="reflect")`` semantics, without scikit-image) and cropped at a random
shift in ``[0, cell)``. The saliency of target ``t`` is
``sum_k f_t(I * M_k) M_k / (n_masks * p1)``. Every masked image goes through
``model.predict`` in a few large batches.

D-RISE (https://arxiv.org/abs/2006.03204) explains object detections with the
same masks: for target detection ``t``,

    H_t = (1 / N) * sum_i w_{t,i} M_i,   w_{t,i} = max_j s(d_t, d_j(I * M_i)),

with ``s`` the D-RISE similarity of
:func:`xai_bridge.detection.detections.similarity` (the paper's weighted sum,
divided by the number of masks so the scale does not grow with it). The
model it runs on is a :class:`~xai_bridge.detection.DetectionScoreModel`,
whose outputs are those similarities, so one detector pass per masked image
scores every target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from xai_bridge._validate import number
from xai_bridge.contract import BackendResult, ExplainRequest, check_params
from xai_bridge.errors import ParameterError


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


def _rise_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`rise`'s evaluations: one per mask and image (all targets share them)."""
    return n * int(params.get("n_masks", _RISE_DEFAULTS["n_masks"]))


_DRISE_DEFAULTS: dict[str, Any] = {"n_masks": 1000, "grid": 16, "p1": 0.5, "baseline": 0}


def _drise_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:func:`drise`'s evaluations: one per mask and image (all detections share them)."""
    return n * int(params.get("n_masks", _DRISE_DEFAULTS["n_masks"]))


def drise(request: ExplainRequest) -> BackendResult:
    """D-RISE saliency of each target detection (``request.model``: a :class:`~xai_bridge.detection.DetectionScoreModel`).

    Params:
        n_masks: number of random masks (default 1000; the paper used 5000).
        grid: cells per side, an int or ``(rows, cols)`` (default 16, the paper's).
        p1: probability of keeping a cell (default 0.5).
        baseline: what masked pixels become: 0-255, an RGB triple or ``"mean"`` (default 0).
    """
    params = check_params(request.method, request.params, _DRISE_DEFAULTS)
    result = rise(replace(request, params=params))
    p1 = float(result.params["p1"])
    return replace(result, attributions=(result.attributions.astype(np.float64) * p1).astype(np.float32))
