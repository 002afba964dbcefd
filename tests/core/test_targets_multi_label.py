"""A multi-label model's targets carry sigmoid probabilities, and every view says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import xai_bridge as xb
from xai_bridge.viz._text import probability_source, score_text


def _hf_resnet(tmp_path: Path, **config: Any) -> Any:
    pytest.importorskip("transformers")
    from hf_tiny import saved_hf_resnet

    return saved_hf_resnet(tmp_path, num_labels=4, **config)


def _images(n: int = 2, size: int = 32) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _logits(net: Any, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(xb.as_model(net).preprocess.apply(images))).logits.numpy().astype(np.float64)


def test_multi_label_scores_and_probabilities_are_sigmoids(tmp_path: Path) -> None:
    net = _hf_resnet(tmp_path, problem_type="multi_label_classification")
    images = _images()
    exp = xb.explain(net, images, "builtin.Saliency", targets=xb.top_k(2))
    logits = _logits(net, images)
    sigmoid = 1 / (1 + np.exp(-logits))
    assert np.array_equal(exp.targets, np.argsort(-logits, axis=1, kind="stable")[:, :2])
    expected = np.take_along_axis(sigmoid, exp.targets, axis=1)
    np.testing.assert_allclose(exp.scores, expected, atol=1e-5)
    np.testing.assert_allclose(exp.extras["probability"], expected, atol=1e-5)
    softmax = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert not np.allclose(exp.extras["probability"], np.take_along_axis(softmax, exp.targets, axis=1), atol=1e-3)
    assert (exp.extras["probability_from"] == "sigmoid").all()
    assert score_text(exp, 0, 0) == f"p={expected[0, 0]:.2f} (sigmoid)"
    assert "(sigmoid)" in exp._repr_html_()
    fig = exp.plot()
    assert any("(sigmoid)" in ax.get_title() for ax in fig.axes)
    page = xb.viz.report.build_report(exp)
    assert "(sigmoid)" in page


def test_single_label_probabilities_say_softmax(tmp_path: Path) -> None:
    net = _hf_resnet(tmp_path)
    images = _images(1)
    exp = xb.explain(net, images, "builtin.Saliency", targets=xb.top_k(4))
    assert probability_source(exp) == "softmax"
    np.testing.assert_allclose(exp.extras["probability"].sum(), 1.0, atol=1e-5)  # all four classes of one image
    assert score_text(exp, 0, 0) == f"p={exp.extras['probability'][0, 0]:.2f}"


def test_source_survives_save_load_and_slicing(tmp_path: Path) -> None:
    net = _hf_resnet(tmp_path / "m", problem_type="multi_label_classification")
    exp = xb.explain(net, _images(), "builtin.Saliency", targets=xb.top_k(2))
    back = xb.Explanation.load(exp.save(tmp_path / "e.npz"))
    assert back == exp and probability_source(back[1, 1:]) == "sigmoid"
