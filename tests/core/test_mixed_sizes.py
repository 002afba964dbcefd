"""Images of different sizes: each explained at its own size where the model's preprocessing resizes.

The result is one one-image Explanation per image (``PerImage``), each equal
to the call made for that image alone; a model that does not resize keeps
the one-line error.
"""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
from conftest import TINY_CLASSES, TINY_PREPROCESS, make_tiny_net
from helpers import random_images

import xai_bridge as xb
from xai_bridge.many import Explanations, PerImage


def same(a: xb.Explanation, b: xb.Explanation) -> bool:
    """Equal in every field but the wall-clock seconds."""
    return replace(a, seconds=0.0) == replace(b, seconds=0.0)


@pytest.fixture
def photos() -> list[np.ndarray]:
    """Two images of different sizes (a landscape and a portrait)."""
    return [random_images((20, 28, 3), seed=1), random_images((36, 24, 3), seed=2)]


def test_each_image_is_explained_as_a_call_of_its_own(tiny_model, photos) -> None:
    for method, params in [("builtin.RISE", {"n_masks": 24}), ("builtin.Saliency", {})]:
        result = xb.explain(tiny_model, photos, method, xb.top_k(2), **params)
        assert isinstance(result, PerImage) and len(result) == 2
        for photo, exp in zip(photos, result, strict=True):
            alone = xb.explain(tiny_model, photo, method, xb.top_k(2), **params)
            assert same(exp, alone) and exp.attributions.shape == (1, 2, *photo.shape[:2])


def test_one_target_entry_per_image_goes_to_its_image(tiny_model, photos) -> None:
    result = xb.explain(tiny_model, photos, "builtin.Saliency", ["dog", "cup"])
    assert [list(exp.target_names[0]) for exp in result] == [["dog"], ["cup"]]
    assert same(result[1], xb.explain(tiny_model, photos[1], "builtin.Saliency", "cup"))
    with pytest.raises(xb.ParameterError, match="targets: got 3 entries for 2 images"):
        xb.explain(tiny_model, photos, "builtin.Saliency", ["dog", "cup", "cat"])
    with pytest.raises(
        AttributeError, match=r"attributions: the images have different sizes.*result\[i\]\.attributions"
    ):
        result.attributions


def test_explain_many_keeps_each_image_apart_and_shows_them(tiny_model, photos) -> None:
    many = xb.explain_many(tiny_model, photos, ["builtin.Saliency", ("builtin.Occlusion", {"window": 8})])
    assert isinstance(many, Explanations) and all(isinstance(v, PerImage) for v in many.values())
    assert same(many["builtin.Occlusion"][0], xb.explain(tiny_model, photos[0], "builtin.Occlusion", window=8))
    page = many._repr_html_()
    assert len(re.findall(r"<img src='data:image/png;base64,", page)) == 2 * 3
    total = sum(e.n_model_evals for e in many["builtin.Occlusion"])
    assert f">{total}</td>" in page


def test_same_sizes_stay_one_explanation(tiny_model, photos) -> None:
    pair = [photos[0], photos[0][::-1].copy()]
    exp = xb.explain(tiny_model, pair, "builtin.Saliency")
    assert isinstance(exp, xb.Explanation) and exp.attributions.shape == (2, 1, 20, 28)


def test_a_model_that_does_not_resize_keeps_the_error(photos) -> None:
    fixed = xb.TorchModel(make_tiny_net(0), xb.Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3), class_names=TINY_CLASSES)
    with pytest.raises(xb.ImageInputError, match=r"images: got images of different sizes .*one call explains one size"):
        xb.explain(fixed, photos, "builtin.Saliency")
    black_box = xb.as_model(lambda batch: np.ones((len(batch), 5), np.float32))
    with pytest.raises(xb.ImageInputError, match="different sizes"):
        xb.explain(black_box, photos, "builtin.RISE", n_masks=8)
    assert TINY_PREPROCESS.size  # the fixture model resizes: the tests above rely on it


@pytest.mark.slow
def test_a_torchvision_weights_transform_resizes_photos_of_any_size(photos) -> None:
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    net = models.resnet18().eval()  # random weights: nothing downloaded; the enum brings only its transforms
    model = xb.as_model(net, preprocess=models.ResNet18_Weights.IMAGENET1K_V1)
    result = xb.explain(model, photos, "builtin.Saliency", "tabby")
    assert [exp.images.shape[1:3] for exp in result] == [(20, 28), (36, 24)]
    assert same(result[1], xb.explain(model, photos[1], "builtin.Saliency", "tabby"))
