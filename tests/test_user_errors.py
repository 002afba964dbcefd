"""Every user error is one clear line: an XaiBridgeError naming the argument, never a deep library traceback.

One section per class of issue 18: damaged and oversized saved files, the command line, method
parameters, targets and images. Each case asserts the exception type (an ``XaiBridgeError``
subclass) and that the message names the argument (or file) at fault.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_explanation import make_explanation

import xai_bridge as xb
from xai_bridge import Explanation, FormatError, ParameterError, XaiBridgeError

REPO = Path(__file__).resolve().parent.parent


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
        backend="b",
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
