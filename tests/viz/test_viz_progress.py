"""Progress bars: they move per batch of model evaluations, name the method, and stay silent when asked.

Built on the tiny seeded net of conftest.py; tqdm writes to the captured stderr.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import make_pngs

import xai_bridge as xb
from xai_bridge import progress
from xai_bridge.cli import main


@pytest.fixture
def small(rgb_images: np.ndarray) -> np.ndarray:
    """Two 16x24 images: occlusion with window=4 (stride 2) costs 2 x 78 evaluations, 20 batches of 8."""
    return np.ascontiguousarray(rgb_images[:, :16, :24])


def final_counts(err: str, label: str) -> list[tuple[int, int | None]]:
    """``(done, total)`` of every redraw of the bar labelled ``label`` in captured tqdm output."""
    found = re.findall(re.escape(label) + r":\s*(?:\d+%\|[^|]*\|\s*)?(\d+)(?:/(\d+)| evals)", err)
    return [(int(a), int(b) if b else None) for a, b in found]


def test_a_long_call_shows_its_method_moving_per_batch(tiny_model, small, capsys, monkeypatch) -> None:
    from xai_bridge import progress

    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)  # redraw on every tick: a fast machine finishes in < 0.25 s
    exp = xb.explain(tiny_model, small, "builtin.Occlusion", xb.top_k(2), window=4, progress=True)
    err = capsys.readouterr().err
    counts = final_counts(err, "builtin.Occlusion")
    assert exp.n_model_evals == 2 * (((16 - 4) // 2 + 1) * ((24 - 4) // 2 + 1) + 1)
    assert counts[-1] == (exp.n_model_evals, exp.n_model_evals)  # moved by every evaluation; the guess was right
    assert len({done for done, _ in counts}) > 2  # several redraws: it moved per batch, not once at the end
    assert "eval/s" in err or "s/eval" in err  # a rate, hence an ETA


def test_no_output_with_progress_false_or_auto_off_a_terminal(tiny_model, small, capsys) -> None:
    xb.explain(tiny_model, small, "builtin.Occlusion", window=8, progress=False)
    xb.explain(tiny_model, small, "builtin.Occlusion", window=8)  # "auto": stderr is not a terminal here
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    with pytest.raises(xb.ParameterError, match="progress: expected True, False or 'auto'"):
        xb.explain(tiny_model, small, "builtin.Occlusion", progress="yes")


def test_gradient_methods_tick_per_forward_pass_and_explain_many_relabels(tiny_model, small, capsys) -> None:
    results = xb.explain_many(
        tiny_model,
        small,
        [("captum.IntegratedGradients", {"n_steps": 8, "internal_batch_size": 4}), "gradcam.GradCAM"],
        xb.top_k(2),
        progress=True,
    )
    err = capsys.readouterr().err
    ig = results["captum.IntegratedGradients"]
    assert final_counts(err, "captum.IntegratedGradients [1/2]")[-1][0] == ig.n_model_evals
    assert final_counts(err, "gradcam.GradCAM [2/2]")[-1][0] == results["gradcam.GradCAM"].n_model_evals


def test_nested_calls_join_the_outer_bar_and_silence_holds(tiny_model, small, capsys) -> None:
    with progress.session(False, "outer"):
        xb.explain(tiny_model, small, "builtin.Occlusion", window=8, progress=True)
    assert capsys.readouterr().err == ""  # the outer call asked for silence
    with progress.session(True, "outer") as bar:
        exp = xb.explain(tiny_model, small, "builtin.Occlusion", window=8, progress=False)
        assert bar.evals == exp.n_model_evals  # the inner call moved the outer bar
    assert "builtin.Occlusion" in capsys.readouterr().err


def test_evaluate_and_datasets_show_progress(tiny_model, small, tmp_path, capsys) -> None:
    from xai_bridge.datasets import explain_dataset
    from xai_bridge.evaluation import evaluate

    exp = xb.explain(tiny_model, small, "builtin.Occlusion", window=8, progress=False)
    frame = evaluate(tiny_model, exp, "deletion", steps=8, progress=True)
    err = capsys.readouterr().err
    assert "deletion builtin.Occlusion" in err and frame["n_model_evals"].sum() > 0
    assert final_counts(err, "deletion builtin.Occlusion")[-1][0] == int(frame["n_model_evals"].sum())
    evaluate(tiny_model, exp, "deletion", steps=8, progress=False)
    assert capsys.readouterr().err == ""
    folder = tmp_path / "images"
    make_pngs(folder, n=3, size=16)
    summary = explain_dataset(
        tiny_model, folder, ["builtin.Occlusion"], out=tmp_path / "store", chunk_size=1, progress=True
    )
    err = capsys.readouterr().err
    assert summary.done == 3 and re.search(r"3/3 \[", err) and "evals" in err


def test_cli_writes_its_lines_above_the_bar(tmp_path) -> None:
    pngs = make_pngs(tmp_path / "images", size=16)
    args = ["explain", "cli_models:tiny", *map(str, pngs), "--preprocess", "unit", "-m", "builtin.Occlusion"]
    args += ["-p", "builtin.Occlusion:window=4", "--out", str(tmp_path / "out"), "--progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "builtin.Occlusion: " in result.stdout and "[1/1] builtin.Occlusion on 2 image(s)" in result.stdout
    exp = xb.Explanation.load(tmp_path / "out" / "builtin.Occlusion.npz")
    assert final_counts(result.stderr, "builtin.Occlusion")[-1][0] == exp.n_model_evals  # the bar, on stderr
    quiet = CliRunner().invoke(main, [*args[:-1], "--no-progress"])
    assert quiet.exit_code == 0 and "eval" not in quiet.stderr and "builtin.Occlusion: " in quiet.stdout


def test_expected_evals_guesses() -> None:
    assert progress.expected_evals("shap.Partition", {"max_evals": 300}, 4, 3, (224, 224)) == 1200
    assert progress.expected_evals("lime.Lime", {}, 2, 1, (8, 8)) == 2000
    nt = {"noise_tunnel": {"kind": "smoothgrad", "nt_samples": 4}, "n_steps": 16}
    # the path points per image, target and noise sample, and each image once (the demo measured 772, not 864)
    assert progress.expected_evals("captum.IntegratedGradients", nt, 4, 1, (8, 8)) == 4 * 16 * 4 + 4
    assert progress.expected_evals("gradcam.ScoreCAM", {}, 1, 1, (8, 8)) is None
    assert progress.expected_evals("lib.Unknown", {}, 1, 1, (8, 8)) is None
    assert np.isscalar(progress.expected_evals("builtin.Occlusion", {"window": [4, 4]}, 1, 1, (16, 16)))


def test_expected_evals_asks_the_method() -> None:
    """The estimate is the method's own hook; a hook that cannot read the params gives no estimate."""
    from xai_bridge.registry import MethodSpec

    mine = MethodSpec("lib.Mine", "mod:fn", evaluations=lambda params, n, t, hw: n * t * params.get("k", 3))
    assert progress.expected_evals(mine, {"k": 2}, 2, 3, (8, 8)) == 12
    assert progress.expected_evals(mine, {}, 1, 1, (8, 8)) == 3
    broken = MethodSpec("lib.Broken", "mod:fn", evaluations=lambda params, n, t, hw: n // 0)
    assert progress.expected_evals(broken, {}, 1, 1, (8, 8)) is None
    assert progress.expected_evals(MethodSpec("lib.Silent", "mod:fn"), {}, 1, 1, (8, 8)) is None
    assert progress.expected_evals("builtin.RISE", {}, 2, 5, (8, 8)) == 2 * 4000  # the method's own default
