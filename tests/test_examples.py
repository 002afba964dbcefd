"""Smoke tests: the seed examples run end to end and write their outputs (real model: slow)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO

EXAMPLES = REPO / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_seed001_cams(tmp_path: Path) -> None:
    results = load("seed001_cam").main(["--out", str(tmp_path)])
    for name in results:
        assert (tmp_path / f"{name}_0.png").is_file()
    cam = results["gradcam.GradCAM"]
    assert cam.targets[0, 0] == 285
    y, x = np.unravel_index(cam.attributions[0, 0].argmax(), (224, 224))
    assert 60 <= y <= 224 and 30 <= x <= 200  # on the cat's face (the image is all cat; loose)


@pytest.mark.slow
def test_seed002_keras_xception(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow is not installed (pip install 'xai-bridge[keras]')")
    results = load("seed002_integrated_gradients").main(["--out", str(tmp_path), "--quick", "--keras"])
    ig = results["captum.IntegratedGradients"]
    assert ig.attributions.shape == (1, 1, 299, 299) and np.isfinite(ig.attributions).all()
    assert np.abs(ig.attributions).max() > 0 and (tmp_path / "ig_heat.png").is_file()


@pytest.mark.slow
def test_seed003_partition_top4(tmp_path: Path) -> None:
    results = load("seed003_shap_partition").main(["--out", str(tmp_path), "--quick"])
    exp = results["inpaint_telea"]
    assert exp.targets.shape == (2, 4) and exp.targets[0, 0] == 285 and exp.targets[1, 0] == 967
    assert (tmp_path / "partition_inpaint_telea.png").is_file() and (tmp_path / "partition_blur.npz").is_file()


@pytest.mark.slow
def test_seed004_lime_without_wrapper(tmp_path: Path) -> None:
    exp = load("seed004_lime").main(["--out", str(tmp_path), "--quick"])
    assert exp.target_names[0, 0] == "Egyptian cat" and exp.targets.shape == (1, 5)
    assert len(list(tmp_path.glob("*.png"))) == 4


@pytest.mark.slow
def test_seed002_ig_random_baselines(tmp_path: Path) -> None:
    results = load("seed002_integrated_gradients").main(["--out", str(tmp_path), "--quick"])
    ig = results["captum.IntegratedGradients"]
    assert ig.params["baselines"] == ["random", "random"] and ig.targets[0, 0] == 285
    gap = ig.scores[0, 0] - ig.base_scores[0, 0]
    assert abs(ig.attributions.sum() - gap) < 0.1 * abs(gap)  # completeness, loosely at 16 steps
    assert (tmp_path / "ig_heat.png").is_file() and (tmp_path / "ig_outline.png").is_file()


def test_examples_are_shorter_than_the_seeds() -> None:
    seeds = REPO.parent / "shared" / "seeds"
    if not seeds.is_dir():
        pytest.skip("shared/seeds is not beside this checkout")
    pairs = {
        "001": "seed001_cam.py",
        "003": "seed003_shap_partition.py",
        "004": "seed004_lime.py",
        "000": "seed000_caption.py",
        "002": "seed002_integrated_gradients.py",
    }
    for seed, example in pairs.items():
        path = EXAMPLES / example
        if not path.is_file():
            continue
        code = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]
        seed_text = next(seeds.glob(f"{seed}_*.txt")).read_text(encoding="utf-8")
        assert len(code) < len(seed_text.splitlines()), example
