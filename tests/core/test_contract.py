"""The contract every installed method keeps, checked on a tiny model.

For each name of ``available_methods(installed_only=True)``, run at its own
cheapest params (``MethodSpec.quick``, declared beside the method): the result has
the contract's shapes and is finite; it is the same given the seed (and, for a
method not declared random, whatever the seed); the model and the input array
are unchanged; and what the method declares holds: unsigned maps are never
negative, a gradient method refuses a model without gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import tiny_model_of_kind
from helpers import module_state, random_images

import xai_bridge as xb

METHODS = xb.available_methods(installed_only=True)


def _images() -> np.ndarray:
    return random_images((2, 24, 24, 3), seed=1)


def _state(model: Any) -> Any:
    return module_state(model.module) if hasattr(model, "module") else None


def test_every_method_is_covered_by_a_library_module() -> None:
    specs = xb.default_registry().specs
    assert len(METHODS) >= 40
    for name in METHODS:
        library, _, method = name.partition(".")
        assert method and method[0].isupper(), name  # one scheme: library.Method
        assert specs[name].target.startswith(f"xai_bridge.adapters.methods.{library}:"), name


@pytest.mark.parametrize("name", METHODS)
def test_method_keeps_the_contract(name: str) -> None:
    spec = xb.default_registry().spec(name)
    model, images = tiny_model_of_kind(spec.model_kind), _images()
    before, pixels = _state(model), images.copy()
    params = dict(spec.quick)  # the method's own cheapest run: well under a second on 2 x 24 x 24 images
    exp = xb.explain(model, images, name, targets=[[1, 3], [0, 2]], seed=5, **params)
    n_targets = exp.targets.shape[1]
    assert exp.method == name and exp.attributions.shape == (2, n_targets, 24, 24)
    assert exp.attributions.dtype == np.float32 and np.isfinite(exp.attributions).all()
    assert exp.scores is not None and exp.scores.shape == (2, n_targets) and np.isfinite(exp.scores).all()
    assert exp.raw is None or exp.raw.shape[:2] == (2, n_targets)
    assert _state(model) == before, "the method changed the model"
    assert np.array_equal(images, pixels), "the method changed the input array"
    again = xb.explain(model, images, name, targets=[[1, 3], [0, 2]], seed=5, **params)
    np.testing.assert_array_equal(again.attributions, exp.attributions)
    if not spec.random:
        other = xb.explain(model, images, name, targets=[[1, 3], [0, 2]], seed=6, **params)
        np.testing.assert_array_equal(other.attributions, exp.attributions)
        assert exp.seed is None
    if not spec.signed:
        assert exp.attributions.min() >= -1e-6, "an unsigned method returned negative values"
    if spec.model_kind == "detector":
        with pytest.raises(xb.MethodNotApplicableError, match="explains detections of an object detector"):
            xb.explain(tiny_model_of_kind("any"), images, name, targets=[[1], [0]], **params)
    if spec.needs_gradients:
        box = xb.BlackBoxModel(lambda x: model.predict(x))
        with pytest.raises(xb.MethodNotApplicableError, match="needs gradients"):
            xb.explain(box, images, name, targets=[[1], [0]], **params)
