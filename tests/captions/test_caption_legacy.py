"""The older call shapes of explain_caption / explain_answer: each warns once and gives the new form's results."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from caption_server import rule_answer, rule_caption
from xai_bridge.adapters.captioners.scorers import WordMatchScorer

import xai_bridge as xb
from xai_bridge.captions import BUDGET_PARAMS, explain_answer, explain_caption

IMAGE = np.full((32, 32, 3), 230, np.uint8)
IMAGE[:16, :16] = 20
OCCLUSION = {"window": 16, "stride": 16, "baseline": 0}
QUESTION = "what animal is this?"


def _same(old: list[xb.Explanation], new: list[xb.Explanation]) -> None:
    assert len(old) == len(new)
    for a, b in zip(old, new, strict=True):
        np.testing.assert_array_equal(a.attributions, b.attributions)
        np.testing.assert_array_equal(a.targets, b.targets)
        assert a.params == b.params


def _new_caption(**kw: object) -> list[xb.Explanation]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # the new form never warns
        return explain_caption(rule_caption, IMAGE, "builtin.Occlusion", scorer=WordMatchScorer(), **kw, **OCCLUSION)


def test_old_caption_order_with_method_keyword_warns_and_equals_the_new_form():
    new = _new_caption()
    with pytest.warns(DeprecationWarning, match=r"explain_caption\(captioner, images, scorer, method, max_evals\)"):
        old = explain_caption(rule_caption, IMAGE, WordMatchScorer(), method="builtin.Occlusion", **OCCLUSION)
    _same(old, new)


def test_old_caption_order_all_positional_warns_and_equals_the_new_form():
    if "builtin.RISE" not in xb.available_methods():
        pytest.skip("builtin.RISE is not available")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = explain_caption(rule_caption, IMAGE, "builtin.RISE", scorer=WordMatchScorer(), budget=50, grid=4)
    with pytest.warns(DeprecationWarning, match="scorer=scorer, budget="):
        old = explain_caption(rule_caption, IMAGE, WordMatchScorer(), "builtin.RISE", 50, grid=4)
    _same(old, new)
    assert new[0].params["n_masks"] == 50


def test_old_caption_keywords_warn_and_equal_the_new_ones():
    new = _new_caption(targets=["a red dog"], batch_size=2)
    with pytest.warns(DeprecationWarning) as caught:
        old = explain_caption(
            rule_caption,
            IMAGE,
            "builtin.Occlusion",
            scorer=WordMatchScorer(),
            captions=["a red dog"],
            model_batch_size=2,
            **OCCLUSION,
        )
    messages = " ".join(str(w.message) for w in caught)
    assert "captions=" in messages and "model_batch_size=" in messages
    _same(old, new)
    with pytest.raises(xb.ParameterError, match="pass only targets="):
        explain_caption(rule_caption, IMAGE, "builtin.Occlusion", targets=["a"], captions=["b"])


def test_old_budget_keyword_warns_and_equals_budget():
    if "shap.Partition" not in xb.available_methods():
        pytest.skip("shap is not installed")
    kw = {"batch_size": 10, "masker": xb.ImageMasker(xb.MaskKind.CONSTANT, value=0.0)}
    new = explain_caption(rule_caption, IMAGE, "shap.Partition", scorer=WordMatchScorer(), budget=40, **kw)
    with pytest.warns(DeprecationWarning, match=r"max_evals=\.\.\.\) is deprecated; use explain_caption\(budget="):
        old = explain_caption(rule_caption, IMAGE, "shap.Partition", scorer=WordMatchScorer(), max_evals=40, **kw)
    _same(old, new)
    assert new[0].params["max_evals"] == 40 and new[0].params["batch_size"] == 10


def test_old_answer_order_warns_and_equals_the_new_form():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = explain_answer(
            rule_answer, IMAGE, "builtin.Occlusion", question=QUESTION, scorer=WordMatchScorer(), **OCCLUSION
        )
    with pytest.warns(DeprecationWarning, match=r"explain_answer\(vlm, images, question, scorer, method, max_evals\)"):
        old = explain_answer(rule_answer, IMAGE, QUESTION, WordMatchScorer(), method="builtin.Occlusion", **OCCLUSION)
    _same(old, new)
    with pytest.warns(DeprecationWarning, match="answers="):
        given = explain_answer(
            rule_answer,
            IMAGE,
            "builtin.Occlusion",
            question=QUESTION,
            scorer=WordMatchScorer(),
            answers=["a cat"],
            **OCCLUSION,
        )
    assert given[0].params["caption"] == "a cat"
    with pytest.raises(xb.ParameterError, match="question: expected the question"):
        explain_answer(rule_answer, IMAGE, "builtin.Occlusion", scorer=WordMatchScorer())


def test_budget_params_is_a_deprecated_read_only_view_of_the_specs():
    registry = xb.default_registry()
    with pytest.warns(DeprecationWarning, match=r"registry.spec\(method\).budget"):
        table = dict(BUDGET_PARAMS)
    assert table == {name: spec.budget for name, spec in registry.specs.items() if spec.budget is not None}
    with pytest.warns(DeprecationWarning):
        assert BUDGET_PARAMS["shap.Partition"] == "max_evals"
    assert not hasattr(BUDGET_PARAMS, "__setitem__")


def test_a_misspelt_method_third_is_an_unknown_method_not_a_scorer_name():
    with pytest.raises(xb.UnknownMethodError, match="Did you mean"):
        explain_caption(rule_caption, IMAGE, "builtin.Occlusoin", scorer=WordMatchScorer())
