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
from conftest import TINY_CLASSES, TINY_PREPROCESS, make_tiny_net
from helpers import module_state

import xai_bridge as xb

METHODS = xb.available_methods(installed_only=True)


def _images() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(2, 24, 24, 3), dtype=np.uint8)


def _model(kind: str = "any") -> Any:
    """The tiny model for a method's ``model_kind``: a CNN, a 2-layer ViT, or a detector's score model."""
    if kind == "transformer":
        import torch
        from torchvision.models import VisionTransformer

        torch.manual_seed(0)
        vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
        torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
        return xb.TorchModel(vit.eval(), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)
    if kind == "detector":
        from xai_bridge.detection import DetectionScoreModel

        detector = xb.DetectionModel(_quadrant_detections, class_names=TINY_CLASSES[:4])
        targets = detector.detect(np.zeros((1, 24, 24, 3), np.uint8))[0]
        return DetectionScoreModel(detector, targets, TINY_CLASSES[:4])
    return xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False)


def _state(model: Any) -> Any:
    return module_state(model.module) if hasattr(model, "module") else None


def _quadrant_detections(images: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Four detections per image, one per quadrant (label = quadrant), scored by the quadrant's brightness."""
    boxes = np.array([[0, 0, 12, 12], [12, 0, 24, 12], [0, 12, 12, 24], [12, 12, 24, 24]], float)
    out = []
    for im in images:
        scores = [im[y0:y1, x0:x1].mean() / 255 + 0.01 for x0, y0, x1, y1 in boxes.astype(int)]
        out.append({"boxes": boxes, "labels": np.arange(4), "scores": np.asarray(scores)})
    return out


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
    model, images = _model(spec.model_kind), _images()
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
            xb.explain(_model(), images, name, targets=[[1], [0]], **params)
    if spec.needs_gradients:
        box = xb.BlackBoxModel(lambda x: model.predict(x))
        with pytest.raises(xb.MethodNotApplicableError, match="needs gradients"):
            xb.explain(box, images, name, targets=[[1], [0]], **params)
