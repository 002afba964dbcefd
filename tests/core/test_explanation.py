"""The Explanation data model: validation, slicing, exact save/load, shap conversion."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from xai_bridge import Explanation, FormatError, Norm, normalize


def make_explanation(n: int = 2, t: int = 3, h: int = 5, w: int = 6, raw: bool = True) -> Explanation:
    rng = np.random.default_rng(0)
    raw_values = rng.normal(size=(n, t, 3, h, w)).astype(np.float32)
    return Explanation(
        attributions=raw_values.sum(axis=2),
        raw=raw_values if raw else None,
        images=rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8),
        targets=np.arange(n * t).reshape(n, t),
        target_names=[[f"class {i * t + j}" for j in range(t)] for i in range(n)],
        scores=rng.normal(size=(n, t)),
        base_scores=np.zeros((n, t)),
        method="captum.IntegratedGradients",
        library="captum",
        library_version="0.9.0",
        params={"n_steps": 50, "baselines": (0, 0, 0), "nested": {"a": [1, 2]}, "nan": float("nan")},
        seed=7,
        n_model_evals=123,
        seconds=0.1 + 0.2,
        extras={"convergence_delta": rng.normal(size=(n, t)).astype(np.float32)},
    )


def test_fields_are_converted_and_read_only() -> None:
    exp = make_explanation()
    assert exp.attributions.dtype == np.float32 and exp.targets.dtype == np.int64
    assert exp.target_names.dtype.kind == "U"
    with pytest.raises(ValueError):
        exp.attributions[0, 0, 0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.method = "other"  # type: ignore[misc]
    assert exp.params["baselines"] == [0, 0, 0]  # JSON data: tuples become lists
    assert exp.params["nan"] == "nan"


def test_inputs_are_copied_not_aliased() -> None:
    attributions = np.zeros((1, 1, 2, 2), np.float32)
    exp = Explanation(attributions, np.zeros((1, 2, 2, 3), np.uint8), [[0]], [["a"]], [[1.0]], "m", "b")
    attributions[...] = 5
    assert exp.attributions.max() == 0


def test_shape_validation_names_the_field() -> None:
    good = make_explanation()
    with pytest.raises(ValueError, match="Explanation.images"):
        dataclasses.replace(good, images=np.zeros((2, 4, 6, 3), np.uint8))
    with pytest.raises(ValueError, match="Explanation.targets"):
        dataclasses.replace(good, targets=np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="extras"):
        dataclasses.replace(good, extras={"x": np.zeros(3)})
    with pytest.raises(ValueError, match="attributions"):
        dataclasses.replace(good, attributions=np.zeros((2, 3, 5)))


def test_slicing_keeps_dims_and_parallel_arrays() -> None:
    exp = make_explanation()
    one = exp[1]
    assert one.attributions.shape == (1, 3, 5, 6)
    assert np.array_equal(one.attributions[0], exp.attributions[1])
    assert np.array_equal(one.images[0], exp.images[1])
    sub = exp[:, [2, 0]]
    assert sub.targets.tolist() == [[2, 0], [5, 3]]
    assert sub.target_names.tolist() == [["class 2", "class 0"], ["class 5", "class 3"]]
    assert np.array_equal(sub.raw[:, 0], exp.raw[:, 2])
    assert np.array_equal(sub.extras["convergence_delta"][:, 1], exp.extras["convergence_delta"][:, 0])
    assert np.array_equal(exp.map(1, 2), exp.attributions[1, 2])
    with pytest.raises(IndexError, match="image index 5"):
        exp[5]


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    exp = make_explanation()
    path = exp.save(tmp_path / "sub" / "exp")
    assert path.name == "exp.npz"
    loaded = Explanation.load(path)
    assert loaded == exp
    assert loaded.seconds == exp.seconds  # 0.30000000000000004 kept exactly
    assert loaded.params == exp.params
    no_optional = make_explanation(raw=False)
    no_optional = dataclasses.replace(no_optional, base_scores=None, extras={}, seed=None)
    assert Explanation.load(no_optional.save(tmp_path / "plain.npz")) == no_optional
    assert not list(tmp_path.rglob("*.tmp"))


def test_saved_file_is_open_and_pickle_free(tmp_path: Path) -> None:
    path = make_explanation().save(tmp_path / "e.npz")
    with np.load(path, allow_pickle=False) as npz:  # would raise on object arrays
        meta = json.loads(str(npz["__meta__"]))
        assert npz["attributions"].shape == (2, 3, 5, 6)
    assert meta["format"] == "xai-bridge.explanation" and meta["version"] == 1
    with zipfile.ZipFile(path) as zf:
        assert "__meta__.npy" in zf.namelist()


def test_equality_detects_any_difference() -> None:
    exp = make_explanation()
    attrs = exp.attributions.copy()
    attrs[0, 0, 0, 0] += 1e-6
    assert dataclasses.replace(exp, attributions=attrs) != exp
    assert dataclasses.replace(exp, params={**exp.params, "n_steps": 51}) != exp
    assert dataclasses.replace(exp, seed=8) != exp


def test_load_rejects_foreign_and_future_files(tmp_path: Path) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(FormatError, match="no xai-bridge metadata"):
        Explanation.load(other)
    future = tmp_path / "future.npz"
    meta = json.dumps({"format": "xai-bridge.explanation", "version": 99})
    np.savez(future, __meta__=np.array(meta))
    with pytest.raises(FormatError, match="upgrade xai-bridge"):
        Explanation.load(future)
    junk = tmp_path / "junk.npz"
    junk.write_text("junk")
    with pytest.raises(FormatError, match="junk.npz"):
        Explanation.load(junk)


def test_to_shap_is_accepted_by_image_plot() -> None:
    shap = pytest.importorskip("shap")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    exp = make_explanation()
    sv = exp.to_shap()
    assert sv.values.shape == (2, 5, 6, 3, 3)
    assert np.allclose(sv.values.sum(axis=3), np.transpose(exp.attributions, (0, 2, 3, 1)), atol=1e-5)
    shap.image_plot(sv, show=False)
    fig = plt.gcf()
    assert len(fig.axes) >= 2 * (3 + 1)  # one image column + one per target, per row
    plt.close("all")
    no_raw = make_explanation(raw=False).to_shap()
    assert np.allclose(no_raw.values.sum(axis=3), np.transpose(exp.attributions, (0, 2, 3, 1)), atol=1e-5)


def test_from_shap_round_trip() -> None:
    pytest.importorskip("shap")
    exp = make_explanation()
    back = Explanation.from_shap(exp.to_shap(), targets=exp.targets, scores=exp.scores, method=exp.method)
    assert np.allclose(back.attributions, exp.attributions, atol=1e-5)
    assert np.array_equal(back.raw, exp.raw)
    assert np.array_equal(back.images, exp.images)
    assert back.target_names.tolist() == exp.target_names.tolist()
    assert np.array_equal(back.base_scores, exp.base_scores)


def test_normalize_modes() -> None:
    maps = np.array([[[-2.0, 1.0], [0.0, 4.0]]])
    assert np.allclose(normalize(maps, Norm.ABS), [[[0.5, 0.25], [0.0, 1.0]]])
    assert np.allclose(normalize(maps, "positive"), [[[0.0, 0.25], [0.0, 1.0]]])
    assert np.allclose(normalize(maps, Norm.SIGNED), [[[-0.5, 0.25], [0.0, 1.0]]])
    assert np.allclose(normalize(maps, Norm.MINMAX), [[[0.0, 0.5], [1 / 3, 1.0]]])
    clipped = normalize(np.arange(101, dtype=float).reshape(1, 1, 101), Norm.ABS, percentile=50)
    assert clipped[0, 0, 50] == 1.0 and clipped[0, 0, 25] == 0.5 and clipped.max() == 1.0
    shared = normalize(np.stack([maps[0], maps[0] * 2]), Norm.ABS, axes=None)
    assert shared.max() == 1.0 and np.isclose(shared[0].max(), 0.5)
    with pytest.raises(ValueError, match="percentile"):
        normalize(maps, percentile=0)
    assert np.array_equal(maps, [[[-2.0, 1.0], [0.0, 4.0]]])  # input untouched


def test_backend_names_are_deprecated_aliases_of_library() -> None:
    exp = make_explanation()
    with pytest.warns(DeprecationWarning, match="use Explanation.library"):
        assert exp.backend == exp.library
    with pytest.warns(DeprecationWarning, match="use Explanation.library_version"):
        assert exp.backend_version == exp.library_version
