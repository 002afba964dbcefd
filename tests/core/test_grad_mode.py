"""Every method works inside a caller's ``torch.no_grad()`` / ``torch.inference_mode()`` block, with the same maps.

Gradient and CAM methods failed there (a backward pass under the caller's
``no_grad``, tensors made in inference mode); perturbation methods never
needed autograd and are not repeated here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from conftest import tiny_model_of_kind  # noqa: E402
from helpers import random_images  # noqa: E402

import xai_bridge as xb  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")

#: Small settings so that every method runs in well under a second on the tiny model.
SMALL: dict[str, dict[str, Any]] = {
    "shap.Partition": {"max_evals": 50},
    "shap.Gradient": {"nsamples": 4},
    "builtin.RISE": {"n_masks": 32},
    "lime.Lime": {"num_samples": 30},
    "captum.KernelShap": {"n_samples": 20},
    "captum.Lime": {"n_samples": 20},
    "captum.ShapleyValueSampling": {"n_samples": 2},
    "captum.IntegratedGradients": {"n_steps": 8},
    "torchcam.SSCAM": {"num_samples": 2},
    "torchcam.ISCAM": {"num_samples": 2},
}
MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
GRADIENT_METHODS = [
    name
    for name in xb.available_methods(installed_only=True)
    if xb.registry.default_registry().spec(name).needs_gradients
]
_EXPECTED: dict[str, xb.Explanation] = {}


_MODELS: dict[str, Any] = {}


def model_for(method: str) -> Any:
    """One tiny model per ``model_kind`` for the whole module (a CNN, a ViT for the attention methods)."""
    kind = xb.registry.default_registry().spec(method).model_kind
    if kind not in _MODELS:
        _MODELS[kind] = tiny_model_of_kind(kind)
    return _MODELS[kind]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """One 32x32 image of 8x8 blocks (superpixel methods need several segments)."""
    cells = random_images((1, 4, 4, 3))
    return np.kron(cells, np.ones((1, 8, 8, 1), np.uint8))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_method_inside_callers_grad_mode(image: np.ndarray, method: str, mode: str) -> None:
    model = model_for(method)
    params = SMALL.get(method, {})
    if method not in _EXPECTED:
        _EXPECTED[method] = xb.explain(model, image, method, targets=1, **params)
    expected = _EXPECTED[method]
    with MODES[mode]():
        got = xb.explain(model, image, method, targets=1, **params)
        assert not torch.is_grad_enabled()  # the caller's mode is back after the call
    np.testing.assert_allclose(got.attributions, expected.attributions, rtol=1e-4, atol=1e-6)
    assert np.abs(expected.attributions).max() > 0 or method.endswith("RandomCAM")
