"""Every user error is one clear line: an XaiBridgeError naming the argument, never a deep library traceback.

One section per class of issue 18: damaged and oversized saved files, the command line, method
parameters, targets and images. Each case asserts the exception type (an ``XaiBridgeError``
subclass) and that the message names the argument (or file) at fault.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, random_images
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge import Explanation, FormatError, ParameterError, XaiBridgeError


# ------------------------------------------------------------------ saved files
def _rewrite(src: Path, dst: Path, edit_meta: object = None, drop: str = "", arrays: dict | None = None) -> Path:
    """Copy an Explanation file, replacing its metadata / dropping or replacing arrays."""
    with np.load(src, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    if edit_meta is not None:
        meta = json.loads(str(data["__meta__"]))
        edit_meta(meta)  # type: ignore[operator]
        data["__meta__"] = np.array(json.dumps(meta))
    data.pop(drop, None)
    data.update(arrays or {})
    np.savez_compressed(dst, **data)
    return dst


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Explanation, Path]:
    exp = make_explanation()
    return exp, exp.save(tmp_path / "good.npz")


def _load_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(FormatError) as info:
        Explanation.load(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    assert isinstance(info.value, XaiBridgeError)
    return message


def test_load_damaged_files_name_the_file(saved: tuple[Explanation, Path], tmp_path: Path) -> None:
    _, good = saved
    blob = good.read_bytes()
    (tmp_path / "empty.npz").write_bytes(b"")
    assert "empty" in _load_error(tmp_path / "empty.npz")
    for cut in (10, len(blob) // 3, len(blob) // 2, len(blob) - 30, len(blob) - 1):
        (tmp_path / "cut.npz").write_bytes(blob[:cut])
        _load_error(tmp_path / "cut.npz")
    np.save(tmp_path / "plain.npy", np.zeros(3))
    os.replace(tmp_path / "plain.npy", tmp_path / "plain.npz")
    assert "plain .npy" in _load_error(tmp_path / "plain.npz")
    (tmp_path / "text.npz").write_text("not a zip file")
    _load_error(tmp_path / "text.npz")
    assert "does not exist" in _load_error(tmp_path / "missing.npz")
    assert "directory" in _load_error(tmp_path)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    assert "no xai-bridge metadata" in _load_error(tmp_path / "other.npz")
    with zipfile.ZipFile(tmp_path / "odd.npz", "w") as z:
        z.writestr("notes.txt", "hello")
    assert "notes.txt" in _load_error(tmp_path / "odd.npz")


def test_load_every_flipped_byte_is_refused_or_harmless(saved: tuple[Explanation, Path], tmp_path: Path) -> None:
    exp, good = saved
    blob = bytearray(good.read_bytes())
    bad = tmp_path / "flip.npz"
    refused = 0
    for i in range(0, len(blob), 3):
        flipped = bytearray(blob)
        flipped[i] ^= 0x55
        bad.write_bytes(bytes(flipped))
        try:
            loaded = Explanation.load(bad)
        except FormatError as exc:
            assert str(bad) in str(exc)
            refused += 1
        else:  # a flip in a timestamp or a comment field changes nothing that is loaded
            assert loaded == exp, i
    assert refused > len(blob) // 3 * 0.8  # almost every byte matters, and each is caught


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda m: m.update(version=0), "format version 0"),
        (lambda m: m.update(version="1"), "format version '1'"),
        (lambda m: m.update(version=True), "format version True"),
        (lambda m: m.pop("version"), "format version None"),
        (lambda m: m.update(version=99), "upgrade xai-bridge"),
        (lambda m: m.update(format="other"), "not an xai-bridge Explanation"),
        (lambda m: m.update(seed="abc"), "'seed'"),
        (lambda m: m.update(seed=-1), "negative seed"),
        (lambda m: m.update(params=[1, 2]), "'params'"),
        (lambda m: m.pop("method"), "'method' is missing"),
        (lambda m: m.update(n_model_evals=1.5), "'n_model_evals'"),
        (lambda m: m.update(seconds="fast"), "'seconds'"),
        (lambda m: m.update(extras=["nothere"]), "extras/nothere"),
        (lambda m: m.update(extras="convergence_delta"), "'extras'"),
    ],
)
def test_load_edited_metadata_is_refused(saved: tuple[Explanation, Path], tmp_path: Path, edit, expected) -> None:
    bad = _rewrite(saved[1], tmp_path / "edited.npz", edit_meta=edit)
    assert expected in _load_error(bad)


def test_load_inconsistent_or_unsafe_arrays(saved: tuple[Explanation, Path], tmp_path: Path) -> None:
    good = saved[1]
    assert "'attributions'" in _load_error(_rewrite(good, tmp_path / "a.npz", drop="attributions"))
    short = _rewrite(good, tmp_path / "b.npz", arrays={"scores": np.zeros((1, 1), np.float32)})
    assert "inconsistent" in _load_error(short)
    not_json = _rewrite(good, tmp_path / "c.npz", arrays={"__meta__": np.array("{not json")})
    assert "not valid JSON" in _load_error(not_json)
    as_list = _rewrite(good, tmp_path / "d.npz", arrays={"__meta__": np.array("[1, 2]")})
    assert "not an object" in _load_error(as_list)
    # an object array (pickle) is refused before it is read
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(tmp_path / "e.npz", "w") as z, zipfile.ZipFile(good) as src:
        for name in src.namelist():
            z.writestr(name, buf.getvalue() if name == "targets.npy" else src.read(name))
    assert "Python objects" in _load_error(tmp_path / "e.npz")


def _bomb(path: Path, n_targets: int, side: int = 1024) -> Path:
    """A valid Explanation file whose all-zero maps inflate to ``n_targets * side**2 * 4`` bytes."""
    exp = Explanation(
        attributions=np.zeros((1, n_targets, side, side), np.float32),
        images=np.zeros((1, side, side, 3), np.uint8),
        targets=[list(range(n_targets))],
        target_names=[[str(t) for t in range(n_targets)]],
        scores=[[0.0] * n_targets],
        method="m",
        library="b",
    )
    return exp.save(path)


def test_load_caps_the_decompressed_size(tmp_path: Path) -> None:
    import tracemalloc

    bomb = _bomb(tmp_path / "bomb.npz", 40)  # 160 MiB of maps in a few hundred KB
    on_disk = bomb.stat().st_size
    assert on_disk < 2**20
    tracemalloc.start()
    try:
        message = _load_error(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20  # refused from the sizes in the zip directory, before decompressing
    assert "max_bytes=" in message and str(on_disk) in message
    small = _bomb(tmp_path / "small.npz", 2, side=256)
    assert Explanation.load(small).attributions.shape == (1, 2, 256, 256)
    # the cap is the larger of max_bytes and 32x the file size
    assert "over the limit of 100000;" in _load_error(small, max_bytes=100_000)
    assert Explanation.load(small, max_bytes=None).n_targets == 2
    noisy = make_explanation(h=64, w=64)  # random values barely compress: allowed even with max_bytes=0
    assert Explanation.load(noisy.save(tmp_path / "noisy.npz"), max_bytes=0) == noisy
    assert str(32 * small.stat().st_size) in _load_error(small, max_bytes=0)
    with pytest.raises(ParameterError, match="max_bytes"):
        Explanation.load(small, max_bytes=-1)


def test_load_refuses_a_header_larger_than_its_member(saved: tuple[Explanation, Path], tmp_path: Path) -> None:
    """A damaged .npy header claiming a huge shape is refused before any allocation."""
    good = saved[1]
    with zipfile.ZipFile(good) as src:
        members = {name: src.read(name) for name in src.namelist()}
    header = members["scores.npy"]
    members["scores.npy"] = header.replace(b"(2, 3)", b"(90000, 90000)", 1)
    with zipfile.ZipFile(tmp_path / "h.npz", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    assert "declares shape (90000, 90000)" in _load_error(tmp_path / "h.npz")


@pytest.mark.parametrize("name", ["X.NPZ", "y.Npz", "z.npz", "plain"])
def test_save_keeps_an_npz_suffix_in_any_case(tmp_path: Path, name: str) -> None:
    exp = make_explanation()
    path = exp.save(tmp_path / name)
    expected = name if name.lower().endswith(".npz") else name + ".npz"
    assert path == tmp_path / expected and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [expected]
    assert Explanation.load(path) == exp


# ------------------------------------------------------------------ method parameters
@pytest.fixture
def small() -> np.ndarray:
    return random_images((2, 24, 24, 3), seed=1)


BAD_PARAMS = [
    ("captum.IntegratedGradients", {"method": "simpson"}, "method"),
    ("captum.IntegratedGradients", {"internal_batch_size": 0}, "internal_batch_size"),
    ("captum.IntegratedGradients", {"n_steps": "fifty"}, "n_steps"),
    ("captum.IntegratedGradients", {"multiply_by_inputs": "no"}, "multiply_by_inputs"),
    ("captum.Saliency", {"abs": "false"}, "abs"),
    ("captum.DeepLift", {"eps": "tiny"}, "eps"),
    ("captum.GradientShap", {"stdevs": "abc"}, "stdevs"),
    ("captum.Occlusion", {"perturbations_per_eval": 0}, "perturbations_per_eval"),
    ("captum.FeatureAblation", {"perturbations_per_eval": 0}, "perturbations_per_eval"),
    ("captum.Occlusion", {"window": "big"}, "window"),
    ("lime.Lime", {"kernel_width": -1}, "kernel_width"),
    ("lime.Lime", {"kernel_width": "wide"}, "kernel_width"),
    ("lime.Lime", {"feature_selection": "best"}, "feature_selection"),
    ("lime.Lime", {"batch_size": 0}, "batch_size"),
    ("lime.Lime", {"segmentation": "watershed"}, "segmentation"),
    ("shap.Partition", {"masker": "inpaint"}, "masker"),
    ("shap.Partition", {"masker": "blur(0,4)"}, "masker"),
    ("shap.Partition", {"fixed_context": 2}, "fixed_context"),
    ("shap.Gradient", {"local_smoothing": "abc"}, "local_smoothing"),
    ("shap.Gradient", {"batch_size": 0}, "batch_size"),
    ("gradcam.KPCA_CAM", {"kernel": "gaussian"}, "kernel"),
    ("gradcam.AblationCAM", {"ratio_channels_to_ablate": "half"}, "ratio_channels_to_ablate"),
    ("gradcam.FinerCAM", {"alpha": "strong"}, "alpha"),
    ("gradcam.GradCAM", {"eigen_smooth": "yes"}, "eigen_smooth"),
    ("torchcam.SSCAM", {"std": "abc"}, "std"),
    ("builtin.Occlusion", {"window": "abc"}, "window"),
    ("builtin.Occlusion", {"stride": 0}, "stride"),
    ("builtin.RISE", {"p1": "abc"}, "p1"),
    ("builtin.Saliency", {"abs": "no"}, "abs"),
    ("builtin.Saliency", {"ab": True}, "unknown parameter"),
]


@pytest.mark.parametrize(("method", "params", "named"), BAD_PARAMS, ids=[f"{m}-{n}" for m, _, n in BAD_PARAMS])
def test_bad_parameters_name_the_parameter(tiny_model, small, method: str, params: dict, named: str) -> None:
    with pytest.raises(ParameterError) as info:
        xb.explain(tiny_model, small, method, 0, **params)
    message = str(info.value)
    if named == "unknown parameter":
        assert message.startswith(f"{method}: unknown parameter(s) {sorted(params)}"), message
    else:  # "name: ..." or "name.field: ..." first, then what was expected and what was given
        value = next(iter(params.values()))
        assert re.match(rf"{named}[.:]", message) and ("got " in message or repr(value) in message), message
    assert "\n" not in message and isinstance(info.value, XaiBridgeError)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)  # old except clauses still work


def test_choices_carry_the_valid_values(tiny_model, small) -> None:
    with pytest.raises(ParameterError) as info:
        xb.explain(tiny_model, small, "captum.IntegratedGradients", 0, method="simpson")
    assert "riemann_trapezoid" in info.value.valid and "gausslegendre" in str(info.value)
    with pytest.raises(ParameterError) as unknown:
        xb.explain(tiny_model, small, "builtin.Occlusion", 0, windw=4)
    assert unknown.value.valid == ("baseline", "stride", "window")


def test_a_choice_in_another_case_is_the_library_spelling(tiny_model, small) -> None:
    exp = xb.explain(tiny_model, small[:1], "gradcam.KPCA_CAM", 0, kernel="RBF")
    assert exp.params["kernel"] == "rbf"
    assert exp.attributions.shape == (1, 1, 24, 24) and np.isfinite(exp.attributions).all()


def test_zero_is_refused_and_none_means_the_default(tiny_model, small) -> None:
    exp = xb.explain(tiny_model, small, "captum.IntegratedGradients", 0, internal_batch_size=None, n_steps=4)
    assert exp.params["internal_batch_size"] == tiny_model.batch_size == 8
    exp = xb.explain(tiny_model, small, "captum.IntegratedGradients", 0, internal_batch_size=3, n_steps=4)
    assert exp.params["internal_batch_size"] == 3


def test_integrated_gradients_method_reaches_captum_and_evaluate_works(tiny_model, small) -> None:
    """The README's evaluate example on an IG result made with method= (positional method name)."""
    from xai_bridge.evaluation.metrics import evaluate

    trapezoid = xb.explain(tiny_model, small, "captum.IntegratedGradients", 0, method="riemann_trapezoid", n_steps=8)
    legendre = xb.explain(tiny_model, small, "captum.IntegratedGradients", 0, n_steps=8)
    assert trapezoid.method == "captum.IntegratedGradients" and trapezoid.params["method"] == "riemann_trapezoid"
    assert legendre.params["method"] == "gausslegendre"
    assert not np.allclose(trapezoid.attributions, legendre.attributions)  # the rule reached captum
    # captum's convergence delta is sum(attributions) - (f(x) - f(baseline)), for the rule used
    for exp in (trapezoid, legendre):
        completeness = exp.attributions.sum(axis=(2, 3)) - (exp.scores - exp.base_scores)
        np.testing.assert_allclose(exp.extras["convergence_delta"], completeness, rtol=1e-3, atol=1e-4)
    cam = xb.explain(tiny_model, small, "gradcam.GradCAM", 0)
    df = evaluate(tiny_model, [cam, trapezoid], ("deletion", "insertion"), seed=0)
    assert set(df["method"]) == {"gradcam.GradCAM", "captum.IntegratedGradients"}
    assert len(df) == 2 * 2 * 2 and np.isfinite(df["value"]).all()


def test_a_method_name_in_another_case_runs(tiny_model, small) -> None:
    import dataclasses

    xb.explain(tiny_model, small, "gradcam.GradCAM", 0)  # the first call traces the layer once (memo)
    exp = xb.explain(tiny_model, small, "gradcam.gradcam", 0)
    direct = xb.explain(tiny_model, small, "gradcam.GradCAM", 0)
    assert exp.method == "gradcam.GradCAM" and exp.params == direct.params
    assert exp == dataclasses.replace(direct, seconds=exp.seconds)


# ------------------------------------------------------------------ targets
@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (1.5, "targets: expected 'top1'"),
        ("top0", "targets: 'top0'"),
        ([1.5, 2.0], "targets: expected class indices or names"),
        (True, "targets: expected class indices"),
        ({"cat": 1}, "targets: expected 'top1'"),
        (9, "targets: class 9 is out of range"),
        ("lion", "targets: no class named 'lion'"),
    ],
)
def test_bad_targets_are_one_clear_line(tiny_model, small, targets: object, expected: str) -> None:
    with pytest.raises(ParameterError, match="^" + expected.replace("(", r"\(")):
        xb.explain(tiny_model, small, "builtin.Saliency", targets)


def test_top_k_strings_equal_top_k(tiny_model, small) -> None:
    a = xb.explain(tiny_model, small, "builtin.Saliency", "top2")
    b = xb.explain(tiny_model, small, "builtin.Saliency", xb.top_k(2))
    assert a.targets.shape == (2, 2) and np.array_equal(a.targets, b.targets)
    with pytest.raises(ParameterError, match="top_k: k"):
        xb.top_k(1.5)  # type: ignore[arg-type]


def test_explanation_index_errors_are_both_kinds() -> None:
    exp = make_explanation()
    with pytest.raises(IndexError, match="image index 5 out of range") as info:
        exp[5]
    assert isinstance(info.value, XaiBridgeError)
    with pytest.raises(ParameterError, match="Explanation.images"):
        Explanation(np.zeros((1, 1, 2, 2)), np.zeros((1, 3, 3, 3)), [[0]], [["a"]], [[0.0]], "m", "b")


# ------------------------------------------------------------------ images
def _image_error(images: object, **kwargs: object) -> str:
    with pytest.raises(xb.ImageInputError) as info:
        xb.load_images(images, **kwargs)
    assert isinstance(info.value, XaiBridgeError) and "\n" not in str(info.value)
    return str(info.value)


def test_a_directory_and_a_url_are_named_for_what_they_are(tmp_path: Path) -> None:
    assert "is a directory" in _image_error(tmp_path) and "does not exist" not in _image_error(str(tmp_path))
    url = "https://example.com/images/cat.jpg"
    message = _image_error(url)
    assert repr(url) in message and "local file" in message and "https:/e" not in message
    assert "does not exist" in _image_error(tmp_path / "missing.png")


def test_value_range_applies_to_files_and_float_errors_name_the_file(tmp_path: Path) -> None:
    from PIL import Image

    values = np.linspace(-1, 1, 12 * 10, dtype=np.float32).reshape(12, 10)
    tiff = tmp_path / "float.tif"
    Image.fromarray(values, mode="F").save(tiff)
    message = _image_error(tiff)
    assert "float.tif" in message and "value_range" in message
    from_file = xb.load_images(tiff, value_range=(-1, 1))
    assert np.array_equal(from_file, xb.load_images(values, value_range=(-1, 1)))
    assert from_file[0, 0, 0].tolist() == [0, 0, 0] and from_file[0, -1, -1].tolist() == [255, 255, 255]
    nan = values.copy()
    nan[3, 4] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    assert "nan.tif" in _image_error(tmp_path / "nan.tif", value_range=(-1, 1))
    png = tmp_path / "rgb.png"
    rgb = np.random.default_rng(0).integers(0, 128, size=(6, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(png)
    assert np.array_equal(xb.load_images(png, value_range=(0, 127.5)), xb.load_images(rgb, value_range=(0, 127.5)))
    assert "value_range" in _image_error(png, value_range=(1, 1))


def test_odd_dtypes_are_refused_or_converted_exactly() -> None:
    import torch

    assert "dtype object" in _image_error(np.empty((4, 4, 3), dtype=object))
    assert "complex" in _image_error(np.ones((4, 4, 3), dtype=np.complex64))
    assert "dtype <U1" in _image_error(np.full((4, 4, 3), "a"))
    assert "complex" in _image_error(torch.ones(3, 4, 4, dtype=torch.complex64))
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    for dtype in (torch.bfloat16, torch.float16):  # every integer 0..255 is exact in both
        tensor = torch.from_numpy(pixels.astype(np.float32)).to(dtype)
        assert np.array_equal(xb.load_images(tensor, value_range=(0, 255))[0, :, :, 0], pixels)


def test_explain_on_mixed_sizes_says_what_explain_can_do(tiny_net) -> None:
    # a model whose preprocessing does not resize (one that resizes explains each image at its own size)
    tiny_model = xb.TorchModel(tiny_net, xb.Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3), batch_size=8)
    images = [np.zeros((24, 24, 3), np.uint8), np.zeros((20, 24, 3), np.uint8)]
    with pytest.raises(xb.ImageInputError) as info:
        xb.explain(tiny_model, images, "builtin.Saliency", 0)
    message = str(info.value)
    assert "pass size=" not in message and "load_images(images, size=(height, width))" in message
    assert "pass size=(height, width)" in _image_error(images)  # load_images itself takes size=
    assert xb.explain(tiny_model, xb.load_images(images, size=(24, 24)), "builtin.Saliency", 0).n_images == 2


@pytest.mark.parametrize("size", [(0, 0), ("a", 4), (4,), 7])
def test_bad_sizes_name_size(size: object) -> None:
    assert _image_error(np.zeros((5, 6, 3), np.uint8), size=size).startswith("size:")


# ------------------------------------------------------------------ command line
BOX_MODULE = '''
import numpy as np


def box():
    """Two scores: the mean red and the mean blue value of uint8 NHWC images."""
    return lambda x: np.stack([x[..., 0].mean(axis=(1, 2)), x[..., 2].mean(axis=(1, 2))], axis=1) / 255.0


def failing():
    def predict(x):
        raise ZeroDivisionError("the model divided by zero")

    return predict
'''


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with two 16x16 PNGs, a model module ``xbmodels`` and broken model files."""
    from conftest import make_pngs

    make_pngs(tmp_path / "imgs", size=16)
    (tmp_path / "xbmodels.py").write_text(BOX_MODULE)
    (tmp_path / "syntax.py").write_text("def f(:\n    pass\n")
    (tmp_path / "missing_import.py").write_text("import no_such_module_xb\n\ndef f():\n    return None\n")
    (tmp_path / "answer.py").write_text("def f():\n    return 42\n")
    return tmp_path


def cli(*args: object, env: dict | None = None):
    from click.testing import CliRunner

    from xai_bridge.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env=env)


BOX = ["--preprocess", "none", "-m", "builtin.Occlusion", "-p", "builtin.Occlusion:window=8"]


def _cli_error(*args: object, fragment: str) -> str:
    result = cli(*args)
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), result.exception  # a message, not a traceback
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and fragment in errors[0], result.output
    return errors[0]


def test_cli_broken_model_files(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    img = workdir / "imgs" / "img0.png"
    out = workdir / "out"
    assert "line 1" in _cli_error("explain", "syntax.py:f", img, *BOX, "--out", out, fragment="syntax error")
    _cli_error("explain", "missing_import.py:f", img, *BOX, "--out", out, fragment="'no_such_module_xb'")
    _cli_error("explain", "answer.py:f", img, *BOX, "--out", out, fragment="got int (42)")
    _cli_error("explain", "xbmodels:nothere", img, *BOX, "--out", out, fragment="no attribute 'nothere'")
    assert not out.exists()


def test_cli_bad_images_and_options(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.chdir(workdir)
    imgs, out = workdir / "imgs", workdir / "out"
    blob = (imgs / "img0.png").read_bytes()
    (workdir / "bad").mkdir()
    (workdir / "bad" / "cut.png").write_bytes(blob[: len(blob) // 2])
    (workdir / "empty").mkdir()
    (workdir / "mixed").mkdir()
    Image.new("RGB", (16, 16)).save(workdir / "mixed" / "a.png")
    Image.new("RGB", (12, 20)).save(workdir / "mixed" / "b.png")
    (workdir / "afile").write_text("x")
    spec = "xbmodels:box"
    assert "cut.png" in _cli_error("explain", spec, workdir / "bad", *BOX, "--out", out, fragment="truncated")
    _cli_error("explain", spec, workdir / "empty", *BOX, "--out", out, fragment="no image files")
    _cli_error("explain", spec, workdir / "mixed", *BOX, "--out", out, fragment="--size HEIGHT WIDTH")
    _cli_error("explain", spec, imgs, *BOX, "--targets", "top0", "--out", out, fragment="--targets")
    _cli_error("explain", spec, imgs, *BOX, "--targets", "7", "--out", out, fragment="targets: class 7")
    _cli_error("explain", spec, imgs, *BOX, "--size", 0, 0, "--out", out, fragment="--size")
    _cli_error("explain", spec, imgs, *BOX, "--batch-size", 0, "--out", out, fragment="--batch-size")
    _cli_error("explain", spec, imgs, *BOX, "--out", workdir / "afile", fragment="is a file")
    _cli_error("explain", spec, imgs, *BOX, "--png", workdir / "afile" / "g.png", "--out", out, fragment="--png")
    _cli_error("explain", spec, imgs, *BOX, "-p", "builtin.Occlusion:stride=abc", "--out", out, fragment="stride:")
    _cli_error("report", imgs / "img0.png", "--out", workdir / "r.html", fragment="img0.png")
    assert not out.exists()  # every refusal came before any work
    sized = cli("explain", spec, workdir / "mixed", *BOX, "--size", 16, 16, "--out", out)
    assert sized.exit_code == 0, sized.output
    assert Explanation.load(out / "builtin.Occlusion.npz").attributions.shape == (2, 1, 16, 16)


def test_cli_png_in_a_new_folder_and_each_method_once(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    out, png = workdir / "out", workdir / "new" / "deeper" / "grid.png"
    result = cli(
        "explain", "xbmodels:box", workdir / "imgs", *BOX, "-m", "builtin.Occlusion", "--out", out, "--png", png
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("builtin.Occlusion: ") == 1  # -m X -m X runs X once
    assert png.read_bytes()[:4] == b"\x89PNG"
    _cli_error(
        "explain",
        "xbmodels:box",
        workdir / "imgs",
        *BOX,
        "-m",
        "builtin.occlusion",
        "--out",
        out,
        fragment="same method",
    )


def test_cli_dataset_resume_with_other_settings(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    store = workdir / "store"
    first = cli("explain", "xbmodels:box", workdir / "imgs", *BOX, "--dataset", "--out", store)
    assert first.exit_code == 0 and "2 done" in first.output, first.output
    other = [*BOX[:-1], "builtin.Occlusion:window=4"]
    _cli_error("explain", "xbmodels:box", workdir / "imgs", *other, "--dataset", "--out", store, fragment="store")


def test_cli_unexpected_errors_are_one_line_with_a_hint(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    args = ("explain", "xbmodels:failing", workdir / "imgs", *BOX, "--out", workdir / "out")
    line = _cli_error(*args, fragment="ZeroDivisionError: the model divided by zero")
    assert "XAI_BRIDGE_TRACEBACK=1" in line
    shown = cli(*args, env={"XAI_BRIDGE_TRACEBACK": "1"})
    assert isinstance(shown.exception, ZeroDivisionError)


def test_cli_model_modules_are_found_in_the_current_folder(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without ``-m``/``-c`` Python does not put the current folder on sys.path (a console script); -P does the same."""
    from xai_bridge.cli import load_model_spec

    monkeypatch.chdir(workdir)
    before = list(sys.path)
    model = load_model_spec("xbmodels:box", "none")
    assert sys.path == before  # put on the path for the import only
    assert model.predict(np.full((1, 4, 4, 3), 255, np.uint8)).tolist() == [[1.0, 1.0]]
    code = "import sys; from xai_bridge.__main__ import main; sys.exit(main(sys.argv[1:]))"
    args = ["explain", "xbmodels:box", "imgs", *BOX, "--out", "out"]
    done = subprocess.run([sys.executable, "-P", "-c", code, *args], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Explanation.load(workdir / "out" / "builtin.Occlusion.npz").n_images == 2


BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # as if not installed\n"


@pytest.mark.parametrize(("blocked", "extra"), [(("click",), "cli"), (("tqdm",), "cli"), (("click", "tqdm"), "cli")])
def test_console_script_on_a_core_install_names_the_extra(blocked: tuple[str, ...], extra: str) -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["xai-bridge"] == "xai_bridge.__main__:main"  # the function tested here
    code = BLOCK.format(names=blocked) + "from xai_bridge.__main__ import main\nsys.exit(main(['methods']))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"pip install 'xai-bridge[{extra}]'" in done.stderr and all(name in done.stderr for name in blocked)


def test_plots_without_matplotlib_name_the_extra(workdir: Path) -> None:
    code = BLOCK.format(names=("matplotlib",)) + "from xai_bridge.__main__ import main\nsys.exit(main(sys.argv[1:]))\n"
    for extra_args in (["--png", "g.png"], ["--report", "r.html"]):
        args = ["explain", "xbmodels:box", "imgs", *BOX, "--out", "out", *extra_args]
        done = subprocess.run([sys.executable, "-P", "-c", code, *args], cwd=workdir, capture_output=True, text=True)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "pip install 'xai-bridge[viz]'" in done.stderr
        assert not (workdir / "out").exists()  # refused before any work


# ------------------------------------------------------------------ the shared checks
def test_validate_helpers() -> None:
    from xai_bridge._validate import choice, flag, int_or_default, number

    assert number("eps", 1e-3, 0, low_open=True) == 1e-3
    for bad, expected in [
        ("abc", "a number, got 'abc'"),
        (True, "a number"),
        (0, "a number > 0"),
        (float("nan"), "a number > 0"),
    ]:
        with pytest.raises(ParameterError, match=f"^eps: expected {expected}"):
            number("eps", bad, 0, low_open=True)
    with pytest.raises(ParameterError, match=r"in \[0, 1\]"):
        number("p", 1.5, 0, 1)
    with pytest.raises(ParameterError, match="a finite number"):
        number("alpha", float("inf"))
    assert int_or_default("batch_size", None, 8) == 8 and int_or_default("batch_size", 3, 8) == 3
    with pytest.raises(ParameterError, match="batch_size: expected an integer >= 1, got 0"):
        int_or_default("batch_size", 0, 8)
    assert choice("fixed_context", np.int64(1), [None, 0, 1]) == 1 and choice("k", "RBF", ["rbf"]) == "rbf"
    for bad in (True, 2, "1", 1.0):
        with pytest.raises(ParameterError, match="fixed_context: expected one of") as info:
            choice("fixed_context", bad, [None, 0, 1])
        assert info.value.valid == ("None", "0", "1")
    assert flag("abs", np.bool_(False)) is False
    with pytest.raises(ParameterError, match="abs: expected True or False, got 'false'"):
        flag("abs", "false")
