"""write_report(..., sanity=True): the cascading randomisation check per method, in the report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import random_images

import xai_bridge as xb
from xai_bridge.evaluation._randomisation import cascade_stages, cascading_randomisation
from xai_bridge.viz._sanity import SIMILAR, sanity_rows
from xai_bridge.viz.report import build_report, write_report

pytest.importorskip("matplotlib")


def test_the_report_marks_each_method_with_its_spearman(tiny_model, tmp_path: Path) -> None:
    images = random_images((1, 24, 24, 3), seed=3)
    exps = xb.explain_many(tiny_model, images, ["captum.Saliency", "gradcam.GradCAM"], targets=[[1]])
    assert cascade_stages(tiny_model.module) == ["fc", "features.3", "features.2", "features.0"]
    rows = sanity_rows(list(exps.items()), tiny_model)
    for (name, value, unchanged), exp in zip(rows, exps.values(), strict=True):
        expected = float(np.nanmean(cascading_randomisation(tiny_model, exp)))
        assert value == pytest.approx(expected) and unchanged == (value >= SIMILAR), name
    path = write_report(tmp_path / "r.html", exps, sanity=True, model=tiny_model)
    page = path.read_text(encoding="utf-8")
    assert "<h2>Sanity check</h2>" in page
    for name, value, _ in rows:
        assert f"<th class='l'>{name}</th><td>{value:.2f}</td>" in page
    assert ("unchanged when the model is randomised" in page) == any(r[2] for r in rows)
    assert "Sanity check" not in build_report(exps)  # off by default


def test_sanity_without_a_torch_model_is_one_line(tiny_model) -> None:
    exp = xb.explain(tiny_model, random_images((1, 24, 24, 3)), "captum.Saliency", targets=1)
    with pytest.raises(xb.ParameterError, match="^model: sanity=True re-runs each method .* got nothing; pass model="):
        build_report(exp, sanity=True)
