"""LIME's ``hide_color``: colour names and hex strings are the RGB triple they name; anything else is one line."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import random_images

import xai_bridge as xb


def _model() -> xb.BlackBoxModel:
    def predict(x: np.ndarray) -> np.ndarray:  # "redness" vs "blueness" of the image
        x = x.astype(np.float64) / 255
        return np.stack([x[..., 0].mean((1, 2)), x[..., 2].mean((1, 2))], axis=1)

    return xb.BlackBoxModel(predict, class_names=("red", "blue"))


@pytest.mark.parametrize("name", ["red", "#ff0000", "RGB(255, 0, 0)"])
def test_a_colour_name_equals_its_rgb_triple(name: str) -> None:
    images = random_images((1, 24, 24, 3), seed=2)
    kwargs = {"targets": 1, "seed": 0, "num_samples": 20, "segmentation": "slic"}
    named = xb.explain(_model(), images, "lime.Lime", hide_color=name, **kwargs)
    triple = xb.explain(_model(), images, "lime.Lime", hide_color=(255, 0, 0), **kwargs)
    np.testing.assert_array_equal(named.attributions, triple.attributions)
    assert list(named.params["hide_color"]) == [255.0, 0.0, 0.0]
    other = xb.explain(_model(), images, "lime.Lime", hide_color="blue", **kwargs)
    assert not np.array_equal(other.attributions, triple.attributions)


@pytest.mark.parametrize("bad", ["reddish", [1, 2], (0, 0, 300), object(), ("a", "b", "c")])
def test_a_bad_hide_color_is_one_line_naming_it(bad: object) -> None:
    with pytest.raises(xb.ParameterError, match=r"^hide_color: expected None .* got ") as info:
        xb.explain(_model(), random_images((1, 16, 16, 3)), "lime.Lime", targets=0, hide_color=bad, num_samples=10)
    assert "\n" not in str(info.value)
