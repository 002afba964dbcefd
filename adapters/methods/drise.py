"""D-RISE (Petsiuk et al. 2021, https://arxiv.org/abs/2006.03204): RISE for object detectors.

For target detection ``t`` and random masks ``M_i`` (RISE's: a coarse random
grid, upsampled bilinearly and shifted), the saliency is the mean of the
masks weighted by how well ``t`` is found in each masked image,

    H_t = (1 / N) * sum_i w_{t,i} M_i,   w_{t,i} = max_j s(d_t, d_j(I * M_i)),

with ``s`` the D-RISE similarity of
:func:`xai_bridge.detection.detections.similarity` (the paper's weighted
sum, divided by the number of masks so the scale does not grow with it).
One detector pass per masked image scores every target at once. The masks
are RISE's (:func:`~xai_bridge.adapters.methods.builtin.sample_masks`), with
the paper's 16x16 grid.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from xai_bridge.contract import BackendResult, ExplainRequest, check_params
from xai_bridge.errors import MethodNotApplicableError
from xai_bridge.registry import MethodSpec

from .builtin import rise

__all__ = ["SPECS", "drise"]

_DRISE_DEFAULTS = {"n_masks": 1000, "grid": 16, "p1": 0.5, "baseline": 0}


def drise(request: ExplainRequest) -> BackendResult:
    """D-RISE saliency of each target detection.

    Params:
        n_masks: number of random masks (default 1000; the paper used 5000).
        grid: cells per side, an int or ``(rows, cols)`` (default 16, the paper's).
        p1: probability of keeping a cell (default 0.5).
        baseline: what masked pixels become: 0-255, an RGB triple or ``"mean"`` (default 0).
    """
    if not hasattr(request.model, "detector"):
        raise MethodNotApplicableError(
            f"{request.method}: explains detections of an object detector, got {type(request.model).__name__}; "
            "use builtin.RISE for a classifier, or xb.explain_detections(detector, ...) for a detector"
        )
    params = check_params(request.method, request.params, _DRISE_DEFAULTS)
    result = rise(replace(request, params=params))
    p1 = float(result.params["p1"])
    return replace(result, attributions=(result.attributions.astype(np.float64) * p1).astype(np.float32))


SPECS = (
    MethodSpec(
        name="builtin.DRISE",
        target=f"{__name__}:drise",
        family="perturbation",
        random=True,
        budget="n_masks",
        description="D-RISE (Petsiuk et al. 2021): RISE masks weighted by each detection's similarity; detectors.",
        aliases=("drise", "builtin.drise"),
    ),
)
