"""explain_many's result: a dict for code (keys, equality, pickling), a comparison grid and a table in notebooks."""

from __future__ import annotations

import pickle
import re

import numpy as np
from helpers import random_images

import xai_bridge as xb
from xai_bridge.many import Explanations


def test_explain_many_is_a_dict_that_shows_a_grid_and_a_table(tiny_model) -> None:
    images = random_images((2, 16, 16, 3))
    many = xb.explain_many(tiny_model, images, ["builtin.Saliency", ("builtin.Occlusion", {"window": 8})], xb.top_k(2))
    assert isinstance(many, dict) and isinstance(many, Explanations)
    assert list(many) == ["builtin.Saliency", "builtin.Occlusion"]
    plain = dict(many)
    assert many == plain and plain == many
    stand_in = Explanations({name: exp.method for name, exp in many.items()})  # pickles as a dict does
    back = pickle.loads(pickle.dumps(stand_in))
    assert type(back) is Explanations and back == stand_in
    page = many._repr_html_()
    # the grid: a row per image with the image and one overlay per method, then the table
    assert len(re.findall(r"<img src='data:image/png;base64,", page)) == 2 * (1 + 2)
    assert page.count("<tr>") == 1 + 2 + 1 + 2
    for name, exp in many.items():
        assert f"<td>{name}</td>" in page and f">{exp.n_model_evals}</td>" in page
    names = ", ".join(many["builtin.Occlusion"].target_names[0])
    assert f"<td>{names}</td>" in page
    assert np.array_equal(
        many["builtin.Saliency"].attributions,
        xb.explain(tiny_model, images, "builtin.Saliency", xb.top_k(2)).attributions,
    )
    assert "no explanations" in Explanations()._repr_html_()
