"""RISE: randomized input sampling (Petsiuk et al. 2018, https://arxiv.org/abs/1806.07421), numpy.

Masks follow the authors' reference code: a coarse ``grid`` of cells kept with
probability ``p1``, bilinearly upsampled to ``(grid + 1) * cell`` pixels
(``skimage.transform.resize(order=1, mode="reflect")`` semantics, without
scikit-image) and cropped at a random shift in ``[0, cell)``. The saliency of
target ``t`` is ``sum_k f_t(I * M_k) M_k / (n_masks * p1)``. Every masked
image goes through ``model.predict`` in a few large batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xai_bridge.backend import BackendResult, ExplainRequest, check_params

from .builtin import baseline_fills

__all__ = ["RiseMasks", "linear_resize_matrix", "rise", "sample_masks"]

_DEFAULTS = {"n_masks": 4000, "grid": 7, "p1": 0.5, "baseline": 0}
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
    gh, gw = (grid, grid) if np.isscalar(grid) else grid
    h, w = size
    cell = (-(-h // gh), -(-w // gw))
    rng = np.random.default_rng(seed)
    grids = rng.random((n_masks, gh, gw)) < p1
    shifts = np.stack([rng.integers(0, cell[0], n_masks), rng.integers(0, cell[1], n_masks)], axis=1)
    return RiseMasks(grids=grids, shifts=shifts, size=(h, w), cell=cell)


def rise(request: ExplainRequest) -> BackendResult:
    """RISE saliency for any model.

    Params:
        n_masks: number of random masks (default 4000, the paper's).
        grid: cells per side ``s``, an int or ``(rows, cols)`` (default 7).
        p1: probability of keeping a cell (default 0.5).
        baseline: what masked pixels become: 0-255, an RGB triple or
            ``"mean"`` (the image's mean colour). Default 0 (black, the paper's).
    """
    params = check_params(request.method, request.params, _DEFAULTS)
    n_masks = params["n_masks"]
    if isinstance(n_masks, bool) or not isinstance(n_masks, (int, np.integer)) or n_masks < 1:
        raise ValueError(f"n_masks: expected an integer >= 1, got {n_masks!r}")
    grid = (params["grid"],) * 2 if np.isscalar(params["grid"]) else tuple(params["grid"])
    if len(grid) != 2 or any(isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1 for g in grid):
        raise ValueError(f"grid: expected an integer >= 1 or (rows, cols), got {params['grid']!r}")
    p1 = float(params["p1"])
    if not 0 < p1 <= 1:
        raise ValueError(f"p1: expected a probability in (0, 1], got {params['p1']!r}")
    images, targets = request.images, request.targets
    n, h, w, _ = images.shape
    fills = baseline_fills(images, params["baseline"]).astype(np.float32)[:, None, None, :]  # (N, 1, 1, 3)
    sampled = sample_masks(int(n_masks), (h, w), (int(grid[0]), int(grid[1])), p1, request.seed)
    chunk = max(1, _CHUNK_VALUES // (n * h * w * 3))
    diff = images.astype(np.float32) - fills  # masked = fill + mask * (pixel - fill), in three passes
    saliency = np.zeros((n, targets.shape[1], h, w), np.float64)
    for start in range(0, len(sampled), chunk):
        masks = sampled.masks(start, start + chunk)  # (k, H, W)
        masked = np.multiply(masks[:, None, :, :, None], diff[None])
        masked += fills[None]
        np.rint(masked, out=masked)
        out = request.model.predict(masked.astype(np.uint8).reshape(-1, h, w, 3))
        scores = np.take_along_axis(out.reshape(len(masks), n, -1), targets[None], axis=2)  # (k, N, T)
        saliency += np.einsum("knt,khw->nthw", scores.astype(np.float64), masks.astype(np.float64))
    saliency /= n_masks * p1
    return BackendResult(
        attributions=saliency.astype(np.float32),
        params={**params, "n_masks": int(n_masks), "grid": [int(grid[0]), int(grid[1])], "p1": p1},
        backend_version="builtin",
        uses_seed=True,
    )
