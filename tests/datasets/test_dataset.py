"""Dataset runs: streaming, resume after a crash, bad images skipped, Ray equals local."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO
from PIL import Image
from xai_bridge.adapters.models import BlackBoxModel, TorchModel

import xai_bridge as xb
from xai_bridge.datasets import Store, explain_dataset, image_key, list_sources

METHODS = ["builtin.Saliency", ("builtin.Occlusion", {"window": 8})]


def sequential_model() -> TorchModel:
    """A tiny seeded CNN built from torch.nn only (picklable for Ray workers)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()
    # fixed chunks: the Ray test compares workers and the local run bit for bit
    return TorchModel(net, xb.Preprocess(scale="unit"), batch_size=4, tune_batch=False)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    root.mkdir()
    for i in range(6):
        size = (16, 16) if i < 4 else (12, 20)  # two sizes: two batches
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


class Crash(KeyboardInterrupt):
    """A kill: BaseException, so the run stops (ordinary errors only fail one image)."""


class CountingBox:
    """A black box counting images seen; raises after ``crash_after`` predict calls."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.images = 0
        self.calls = 0
        self.crash_after = crash_after

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise Crash("killed")
        self.images += len(x)
        return np.stack([x[..., 0].mean(axis=(1, 2)), x[..., 1].mean(axis=(1, 2))], axis=1)


def test_sources(folder: Path, tmp_path: Path) -> None:
    assert [p.name for p in list_sources(folder)] == [f"img{i}.png" for i in range(6)]
    assert len(list_sources(str(folder / "img[0-2].png"))) == 3
    listing = tmp_path / "list.txt"
    listing.write_text("images/img1.png\n# comment\nimages/img3.png\n")
    assert [p.name for p in list_sources(listing)] == ["img1.png", "img3.png"]
    with pytest.raises(FileNotFoundError, match="source"):
        list_sources(tmp_path / "nope")


def test_store_matches_explain_per_image(folder: Path, tmp_path: Path) -> None:
    model = sequential_model()
    summary = explain_dataset(model, folder, METHODS, out=tmp_path / "store", chunk_size=3, progress=False)
    assert (summary.done, summary.skipped, summary.failed) == (6, 0, ())
    store = Store(tmp_path / "store")
    for path in list_sources(folder):
        got = store.load(image_key(path), "builtin.Saliency")
        ref = xb.explain(model, path, "builtin.Saliency")
        assert np.allclose(got.attributions, ref.attributions, rtol=1e-5, atol=1e-12)
        assert np.array_equal(got.targets, ref.targets)
    paths = [p for p, _ in store.explanations("builtin.Occlusion")]
    assert len(paths) == 6


def test_resume_after_crash_recomputes_nothing(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    box = CountingBox(crash_after=3)  # per batch of 1: predict pass + occlusion pass => crash in image 2
    with pytest.raises(Crash):
        explain_dataset(
            BlackBoxModel(box, batch_size=64),
            folder,
            [("builtin.Occlusion", {"window": 8})],
            out=out,
            chunk_size=1,
            progress=False,
        )
    store = Store(out)
    done_before = {r["key"] for r in store.records if r["status"] == "done"}
    assert 0 < len(done_before) < 6
    for key in done_before:  # every indexed entry loads
        store.load(key, "builtin.Occlusion")
    assert not list(out.rglob("*.tmp"))
    resumed = CountingBox()
    summary = explain_dataset(
        BlackBoxModel(resumed, batch_size=64),
        folder,
        [("builtin.Occlusion", {"window": 8})],
        out=out,
        chunk_size=1,
        progress=False,
    )
    assert summary.skipped == len(done_before) and summary.done == 6 - len(done_before)
    cost = {}
    for i, path in enumerate(list_sources(folder)):  # what each image costs on its own
        alone = CountingBox()
        explain_dataset(
            BlackBoxModel(alone, batch_size=64),
            [path],
            [("builtin.Occlusion", {"window": 8})],
            out=tmp_path / f"alone{i}",
            chunk_size=1,
            progress=False,
        )
        cost[image_key(path)] = alone.images
    # nothing already stored was recomputed: the resumed run paid exactly for the missing images
    assert resumed.images == sum(c for key, c in cost.items() if key not in done_before)
    again = CountingBox()
    summary = explain_dataset(
        BlackBoxModel(again), folder, [("builtin.Occlusion", {"window": 8})], out=out, chunk_size=1, progress=False
    )
    assert again.calls == 0 and summary.skipped == 6 and summary.done == 0


def test_torn_index_line_is_ignored(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=out, progress=False)
    with open(out / "index.jsonl", "a") as fh:
        fh.write('{"key": "abc", "sta')  # killed mid-write
    assert len(Store(out).records) == 6


def test_corrupt_image_skipped_and_reported(folder: Path, tmp_path: Path) -> None:
    (folder / "img2.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.jpg").write_text("not an image")
    summary = explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "store", progress=False)
    assert summary.done == 5
    failed = dict(summary.failed)
    assert set(Path(p).name for p in failed) == {"img2.png", "notes.jpg"}
    assert all("not an image" in r or "corrupt" in r for r in failed.values())
    assert "2 failed" in str(summary)
    again = explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "store", progress=False)
    assert again.skipped == 7 and again.done == 0  # failures are remembered, retried only on request


def test_resume_with_other_settings_is_refused(folder: Path, tmp_path: Path) -> None:
    explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "store", progress=False)
    manifest = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert manifest["methods"] == [["builtin.Saliency", {}]]
    with pytest.raises(ValueError, match="out: the store .* other settings"):
        explain_dataset(
            sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "store", seed=1, progress=False
        )


def test_bad_arguments(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine"):
        explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "s", engine="spark")
    with pytest.raises(ValueError, match="batch_size"), pytest.warns(DeprecationWarning, match="chunk_size"):
        explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "s", batch_size=0)


def test_ray_engine_equals_local(folder: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    model = sequential_model()
    local = explain_dataset(model, folder, METHODS, out=tmp_path / "local", chunk_size=2, progress=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = explain_dataset(
            model, folder, METHODS, out=tmp_path / "ray", chunk_size=2, engine="ray", progress=False
        )
    finally:
        ray.shutdown()
    assert remote.done == local.done == 6 and remote.engine == "ray"
    a, b = Store(tmp_path / "local"), Store(tmp_path / "ray")
    for rec in a.records:
        for method in ("builtin.Saliency", "builtin.Occlusion"):
            x, y = a.load(rec["key"], method), b.load(rec["key"], method)
            for name in ("attributions", "raw", "images", "targets", "target_names"):
                left, right = getattr(x, name), getattr(y, name)
                assert (left is None and right is None) or np.array_equal(left, right)
            # scores come from whichever forward pass saw the image first (a prediction pass in a fresh
            # worker, the method's own pass in a warm process): equal up to float rounding
            np.testing.assert_allclose(x.scores, y.scores, rtol=1e-5, atol=1e-6)
            assert x.params == y.params and x.n_model_evals == y.n_model_evals


def test_ray_engine_builds_a_factory_model_in_each_worker(folder: Path, tmp_path: Path) -> None:
    ray = pytest.importorskip("ray")
    from xai_bridge.datasets import model_factory

    factory = model_factory(sequential_model)  # a module-level function: pickled by reference
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO / "tests")}},
    )
    try:
        summary = explain_dataset(
            factory, folder, ["builtin.Saliency"], out=tmp_path / "ray", engine="ray", progress=False
        )
    finally:
        ray.shutdown()
    assert summary.done == 6 and summary.failed == ()


# --- integrity of resumed runs --------------------------------------------------------------------------------


def test_resume_with_another_model_is_refused(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=out, progress=False)
    again = explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=out, progress=False)
    assert (again.done, again.skipped) == (0, 6)  # the same weights in a new object: the same model
    other = sequential_model()
    with torch.no_grad():
        other.module[0].weight[0, 0, 0, 0] += 1e-3  # one weight changed
    with pytest.raises(xb.XaiBridgeError, match="out: the store .* another model .* model_id="):
        explain_dataset(other, folder, ["builtin.Saliency"], out=out, progress=False)
    wider = TorchModel(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten()), xb.Preprocess(scale="unit"))
    with pytest.raises(ValueError, match="another model"):
        explain_dataset(wider, folder, ["builtin.Saliency"], out=out, progress=False)
    assert len(Store(out).records) == 6


def test_model_id_names_the_model(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=out, progress=False, model_id="tiny-v1")
    assert json.loads((out / "manifest.json").read_text())["model"] == {"id": "tiny-v1"}
    box = BlackBoxModel(CountingBox())  # the user's name is trusted: nothing is hashed
    assert explain_dataset(box, folder, ["builtin.Saliency"], out=out, progress=False, model_id="tiny-v1").skipped == 6
    with pytest.raises(ValueError, match="another model"):
        explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=out, progress=False, model_id="tiny-v2")
    with pytest.raises(xb.ParameterError, match="model_id: expected a non-empty string"):
        explain_dataset(sequential_model(), folder, ["builtin.Saliency"], out=tmp_path / "s2", model_id="")


def test_params_holding_a_function_resume_in_a_new_process(folder: Path, tmp_path: Path, monkeypatch) -> None:
    """A function in the params is stored by qualified name: a new process (a new function object) resumes."""
    import importlib
    import sys

    (tmp_path / "resume_fns.py").write_text("def same(x):\n    return x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("resume_fns")
    first = module.same
    methods = [("gradcam.GradCAM", {"reshape_transform": first, "layer": "0"})]
    out = tmp_path / "store"
    explain_dataset(sequential_model(), folder, methods, out=out, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["methods"][0][1]["reshape_transform"] == "resume_fns.same"
    module = importlib.reload(sys.modules["resume_fns"])
    assert module.same is not first  # another object at another address, as in a new process
    methods = [("gradcam.GradCAM", {"reshape_transform": module.same, "layer": "0"})]
    summary = explain_dataset(sequential_model(), folder, methods, out=out, progress=False)
    assert (summary.done, summary.skipped) == (0, 6)


def test_next_record_after_a_torn_line_is_kept(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    paths = list_sources(folder)
    explain_dataset(sequential_model(), paths[:5], ["builtin.Saliency"], out=out, progress=False)
    with open(out / "index.jsonl", "a") as fh:
        fh.write('{"key": "abc", "sta')  # killed mid-write
    summary = explain_dataset(sequential_model(), paths, ["builtin.Saliency"], out=out, progress=False)
    assert (summary.done, summary.skipped) == (1, 5)
    lines = (out / "index.jsonl").read_text().splitlines()
    assert len(lines) == 6 and all(json.loads(line)["status"] == "done" for line in lines)
    assert len(Store(out).records) == 6
    again = explain_dataset(sequential_model(), paths, ["builtin.Saliency"], out=out, progress=False)
    assert (again.done, again.skipped) == (0, 6)  # the sixth image's record was not lost


def test_a_whole_last_line_without_newline_is_kept(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    paths = list_sources(folder)
    explain_dataset(sequential_model(), paths[:5], ["builtin.Saliency"], out=out, progress=False)
    index = out / "index.jsonl"
    index.write_bytes(index.read_bytes().rstrip(b"\n"))  # the newline of the last record never reached the disk
    explain_dataset(sequential_model(), paths, ["builtin.Saliency"], out=out, progress=False)
    assert len(Store(out).records) == 6 and len(index.read_text().splitlines()) == 6


def test_changed_image_is_explained_again_and_reported(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "store"
    model = sequential_model()
    explain_dataset(model, folder, ["builtin.Saliency"], out=out, progress=False)
    target = folder / "img1.png"
    old_key = image_key(target)
    os.utime(target, (1, 1))  # touched, content unchanged: still stored
    assert image_key(target) == old_key
    assert explain_dataset(model, folder, ["builtin.Saliency"], out=out, progress=False).skipped == 6
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(target)  # edited since it was explained
    summary = explain_dataset(model, folder, ["builtin.Saliency"], out=out, progress=False)
    assert (summary.done, summary.skipped, summary.changed) == (1, 5, (str(target),))
    assert "changed since stored, explained again: " + str(target) in str(summary)
    store = Store(out)
    results = dict(store.explanations("builtin.Saliency"))
    assert len(results) == 6 and len(store.records) == 6  # one result per image, never both
    np.testing.assert_array_equal(results[str(target)].images[0], np.full((16, 16, 3), 200, np.uint8))
    ref = xb.explain(model, target, "builtin.Saliency")
    np.testing.assert_allclose(results[str(target)].attributions, ref.attributions, rtol=1e-5, atol=1e-12)
    assert not store.file("builtin.Saliency", old_key).exists()
    assert explain_dataset(model, folder, ["builtin.Saliency"], out=out, progress=False).skipped == 6


def test_old_forms_warn_and_give_the_same_store(folder: Path, tmp_path: Path) -> None:
    new = explain_dataset(
        sequential_model(), folder, METHODS, "top1", out=tmp_path / "new", chunk_size=2, progress=False
    )
    with pytest.warns(DeprecationWarning, match=r"out=\.\.\."):
        old_out = explain_dataset(sequential_model(), folder, METHODS, tmp_path / "old", chunk_size=2, progress=False)
    with pytest.warns(DeprecationWarning, match=r"chunk_size="):
        old_batch = explain_dataset(
            sequential_model(), folder, METHODS, out=tmp_path / "b", batch_size=2, progress=False
        )
    with pytest.warns(DeprecationWarning, match="import it from xai_bridge.datasets"):
        from xai_bridge.datasets.local import explain_dataset as moved
    assert moved is explain_dataset
    for summary in (old_out, old_batch):
        assert (summary.done, summary.skipped, summary.failed) == (new.done, new.skipped, new.failed)
        for path in list_sources(folder):
            for name in ("builtin.Saliency", "builtin.Occlusion"):
                got = Store(summary.store).load(image_key(path), name)
                ref = Store(new.store).load(image_key(path), name)
                assert np.array_equal(got.attributions, ref.attributions) and np.array_equal(got.targets, ref.targets)


def test_new_argument_errors(folder: Path, tmp_path: Path) -> None:
    model = sequential_model()
    with pytest.raises(xb.ParameterError, match="out: expected the store folder"):
        explain_dataset(model, folder, METHODS, progress=False)
    with pytest.raises(xb.ParameterError, match="chunk_size: expected a positive integer"):
        explain_dataset(model, folder, METHODS, out=tmp_path / "s", chunk_size=0)
    with pytest.raises(xb.ParameterError, match="chunk_size: given together with its deprecated name batch_size"):
        explain_dataset(model, folder, METHODS, out=tmp_path / "s", chunk_size=2, batch_size=2)
    with pytest.raises(xb.ParameterError, match="targets: given both positionally and as a keyword"):
        explain_dataset(model, folder, METHODS, "top1", out=tmp_path / "s", targets="top1")
    with pytest.raises(xb.ParameterError, match="at most 4 positional arguments"):
        explain_dataset(model, folder, METHODS, "top1", tmp_path / "s")
    with pytest.raises(xb.ParameterError, match=r"budget: builtin.Saliency has no evaluation budget"):
        explain_dataset(model, folder, METHODS, out=tmp_path / "s", budget=10)


def test_budget_is_folded_into_the_methods_own_parameter(folder: Path, tmp_path: Path) -> None:
    rise = [("builtin.RISE", {"grid": 4})]
    by_budget = explain_dataset(sequential_model(), folder, rise, out=tmp_path / "a", budget=16, progress=False)
    by_own = [("builtin.RISE", {"grid": 4, "n_masks": 16})]
    explain_dataset(sequential_model(), folder, by_own, out=tmp_path / "b", progress=False)
    # the manifest records the method's own parameter, so the two stores resume each other
    assert explain_dataset(sequential_model(), folder, by_own, out=tmp_path / "a", progress=False).skipped == 6
    key = image_key(list_sources(folder)[0])
    a, b = Store(by_budget.store).load(key, "builtin.RISE"), Store(tmp_path / "b").load(key, "builtin.RISE")
    assert a.params["n_masks"] == 16 and np.array_equal(a.attributions, b.attributions)
