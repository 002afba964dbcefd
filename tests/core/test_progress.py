"""Progress: totals equal the evaluations the model received, per method family; ETA; log lines; no stderr.

Every family runs on the tiny seeded CNN (or the 2-layer ViT) of conftest.py
under one ``progress.session(True, ...)``; a forward pre-hook on the test's own
module counts the images the model really received during each stage.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import TINY_CLASSES, TINY_PREPROCESS, make_tiny_net, tiny_model_of_kind
from helpers import random_images

import xai_bridge as xb
from xai_bridge import progress
from xai_bridge._progress_rate import Throughput, format_seconds

SEG = {"segmentation": xb.Segmentation("slic", {"n_segments": 12})}
FAMILIES = [
    ("builtin.RISE", {"n_masks": 40}),
    ("builtin.Occlusion", {"window": 4}),
    ("shap.Partition", {"max_evals": 50}),
    ("lime.Lime", {"num_samples": 30}),
    ("captum.KernelShap", {"n_samples": 20}),
    ("captum.FeatureAblation", {}),  # the superpixels are counted during the run: the total is revised
    ("captum.ShapleyValueSampling", {"n_samples": 2}),
    ("captum.IntegratedGradients", {"n_steps": 8, "internal_batch_size": 5}),
    ("captum.IntegratedGradients", {"n_steps": 5, "noise_tunnel": {"kind": "smoothgrad", "nt_samples": 2}}),
    ("captum.Saliency", {"noise_tunnel": {"kind": "smoothgrad", "nt_samples": 3}}),
    ("builtin.Saliency", {}),
    ("gradcam.GradCAM", {}),  # a fresh model: the layer-tracing pass is counted in the total
    ("torchcam.GradCAM", {}),
    ("builtin.AttentionRollout", {}),
    ("builtin.LeGrad", {}),
]


def counted_model(kind: str = "any") -> tuple[object, list[int]]:
    """A fresh tiny model and a one-element list counting the images its module received."""
    model = tiny_model_of_kind(kind) if kind == "transformer" else None
    if model is None:
        model = xb.TorchModel(
            make_tiny_net(0), TINY_PREPROCESS, class_names=TINY_CLASSES, batch_size=8, tune_batch=False
        )
    seen = [0]
    model.module.register_forward_pre_hook(lambda _m, args: seen.__setitem__(0, seen[0] + len(args[0])))
    return model, seen


@pytest.mark.parametrize(("method", "params"), FAMILIES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(FAMILIES)])
def test_the_total_equals_what_the_model_received(method, params, monkeypatch, capsys) -> None:
    transformer = method in ("builtin.AttentionRollout", "builtin.LeGrad")
    model, seen = counted_model("transformer" if transformer else "any")
    images = random_images((2, 32, 32, 3) if transformer else (2, 16, 24, 3))
    at_stage: list[int] = []
    original = progress.Progress.stage

    def stage(self, label, total):  # the model's count when the method starts (after the prediction pass)
        at_stage.append(seen[0])
        original(self, label, total)

    monkeypatch.setattr(progress.Progress, "stage", stage)
    with progress.session(True, "test") as state:
        exp = xb.explain(model, images, method, xb.top_k(2), **params)
    received = seen[0] - at_stage[0]
    [only] = state.stages
    assert (only.total, only.done) == (received, received), method
    assert exp.n_model_evals == received
    assert state.bar.total == state.bar.n == received  # the bar ended at 100%
    capsys.readouterr()


def test_a_high_guess_ends_at_what_was_done(tiny_model, capsys) -> None:
    with progress.session(True, "test") as state:
        progress.stage("work", 100)
        progress.tick(30)
        progress.stage("next", 5)  # the first stage is over: its bar ended at 30/30, not 30%
        progress.tick(5)
    assert [(s.total, s.done) for s in state.stages] == [(100, 30), (5, 5)]
    assert "work: 100%" in capsys.readouterr().err


def test_evaluate_totals_per_metric_and_the_estimate(tiny_model, capsys) -> None:
    from xai_bridge.evaluation import estimate_evaluations, evaluate
    from xai_bridge.evaluation.metrics import FaithfulnessCorrelation, RandomLogit

    exp = xb.explain(tiny_model, random_images((2, 16, 16, 3)), "builtin.Saliency", xb.top_k(2), progress=False)
    metrics = ["deletion", FaithfulnessCorrelation(nr_runs=5, subset_size=16), RandomLogit(), "sparseness"]
    estimate = estimate_evaluations(exp, metrics, steps=4)
    assert estimate == {"deletion": 20, "faithfulness_corr": 24, "random_logit": 6, "sparseness": 0}
    with progress.session(True, "test") as state:
        frame = evaluate(tiny_model, exp, metrics, steps=4)
    # one stage per metric (random logit's re-runs of explain count into it), each total what was done
    assert [(s.label, s.total, s.done) for s in state.stages] == [
        ("deletion builtin.Saliency", 20, 20),
        ("faithfulness_corr builtin.Saliency", 24, 24),
        ("random_logit builtin.Saliency", 6, 6),
        ("sparseness builtin.Saliency", 0, 0),
    ]
    per_metric = frame.groupby("metric")["n_model_evals"].sum()
    assert {k: round(float(v)) for k, v in per_metric.items()} == estimate
    err = capsys.readouterr().err
    assert "evaluate: about 50 model evaluations (deletion 20, faithfulness_corr 24, random_logit 6" in err


def test_evaluate_quiets_tensorflow_and_restores_it(tiny_model, monkeypatch) -> None:
    from xai_bridge.evaluation import _quiet

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    tf_logger = logging.getLogger("tensorflow")
    monkeypatch.setattr(tf_logger, "level", logging.INFO)
    with _quiet.quiet_tensorflow():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2" and tf_logger.level == logging.ERROR
    assert "TF_CPP_MIN_LOG_LEVEL" not in os.environ and tf_logger.level == logging.INFO
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")  # the user's own choice is kept
    with _quiet.quiet_tensorflow():
        assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_the_eta_comes_from_recent_batches_not_the_first() -> None:
    rate = Throughput(window=20.0)
    rate.add(10, now=60.0)  # a first batch of 10 took a minute (imports, warm-up)
    assert rate.per_second() is None and rate.eta(10, 1000) is None  # no ETA from it
    for k in range(1, 6):
        rate.add(10 + 10 * k, now=60.0 + k)  # then 10 per second
    assert rate.per_second() == pytest.approx(10.0) and rate.eta(60, 1000) == pytest.approx(94.0)
    for k in range(6, 40):
        rate.add(10 + 10 * k + 10 * (k - 5), now=60.0 + k)  # the machine speeds up to 20 per second
    assert rate.per_second() == pytest.approx(20.0)  # only the last 20 s count
    assert format_seconds(94) == "1:34" and format_seconds(3725) == "1:02:05"


def test_the_bar_shows_the_measured_rate(capsys, monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
    with progress.session(True, "test") as state:
        progress.stage("work", 100)
        now[0] += 600.0  # a slow first batch: tqdm's own average would say 60 s per eval
        progress.tick(10)
        now[0] += 1.0
        progress.tick(10)
        assert state.bar.format_dict["rate"] == pytest.approx(10.0)
        assert "ETA 0:08" in state.line()


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_a_terminal_of_zero_columns_still_shows_the_bar(monkeypatch) -> None:
    """A pseudo-terminal nobody sized reports 0 columns; tqdm following it would draw empty lines."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))
    with os.fdopen(slave, "w", closefd=True) as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        monkeypatch.setattr(progress, "MIN_INTERVAL", 0.0)
        with progress.session(True, "test", total=4):
            progress.tick(3)
        terminal.flush()
        shown = os.read(master, 65536).decode()
    os.close(master)
    assert "3/4" in shown and "test" in shown


def test_outside_a_terminal_a_log_line_every_ten_seconds(monkeypatch, caplog) -> None:
    now = [0.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    caplog.set_level(logging.INFO, logger="xai_bridge.progress")
    with progress.session("auto", "explain") as state:
        assert state.bar is None and state.log
        progress.stage("builtin.RISE", 400)
        for _ in range(40):  # 40 batches of 10 evaluations, one every 0.75 s: 30 s in all
            now[0] += 0.75
            progress.tick(10)
    lines = [r.getMessage() for r in caplog.records if r.name == "xai_bridge.progress"]
    assert len(lines) == 3  # at the first batches past 10 s and 20 s, then the closing line
    assert lines[0] == "explain builtin.RISE: 140/400 evals (35%), 13.3 evals/s, ETA 0:20, 0:10 elapsed"
    assert lines[1].startswith("explain builtin.RISE: 280/400 evals (70%)")
    assert lines[-1] == "explain: done, 400 evals in 0:30"
    caplog.clear()
    with progress.session("auto", "explain"):  # a run shorter than 10 s logs nothing
        progress.stage("quick", 10)
        now[0] += 9.0
        progress.tick(10)
    assert not caplog.records


def test_log_lines_reach_stderr_until_logging_is_configured(monkeypatch, capsys) -> None:
    now = [0.0]
    monkeypatch.setattr(progress, "clock", lambda: now[0])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(progress.logger, "propagate", False)  # no handler anywhere: the plain fallback
    with progress.session("auto", "explain"):
        progress.stage("lime.Lime", None)
        now[0] += 11.0
        progress.tick(5)
    assert "xai_bridge.progress: explain lime.Lime: 5 evals" in capsys.readouterr().err
    monkeypatch.setattr(progress.logger, "level", logging.WARNING)  # the user silenced it
    with progress.session("auto", "explain"):
        now[0] += 11.0
        progress.tick(5)
    assert capsys.readouterr().err == ""


def test_progress_true_without_stderr_runs_silently(tiny_model, monkeypatch) -> None:
    images = random_images((1, 16, 16, 3))
    monkeypatch.setattr(sys, "stderr", None)
    exp = xb.explain(tiny_model, images, "builtin.Occlusion", window=8, progress=True)
    assert exp.n_model_evals > 0


def test_progress_true_with_fd2_closed_runs_silently(tmp_path) -> None:
    script = (
        "import os, sys; sys.path[:0] = ['tests']\n"
        "import numpy as np, xai_bridge as xb\n"
        "from conftest import make_tiny_net, TINY_PREPROCESS\n"
        "os.close(2)\n"
        "m = xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, batch_size=8, tune_batch=False)\n"
        "e = xb.explain(m, np.zeros((1, 16, 16, 3), np.uint8), 'builtin.Occlusion', window=8, progress=True)\n"
        "print('ok', e.n_model_evals)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok "), done.stdout + done.stderr


@pytest.mark.parametrize(
    ("method", "params"), [("builtin.Occlusion", {"window": 16, "stride": 16}), ("lime.Lime", {"num_samples": 20})]
)
def test_caption_totals_equal_the_captions_scored(method, params, capsys) -> None:
    from caption_server import rule_caption
    from test_caption import BRIGHT
    from xai_bridge.adapters.captioners.scorers import WordMatchScorer

    from xai_bridge.captions import FunctionCaptioner, explain_caption

    scored = [0]

    def counting(images: np.ndarray) -> list[str]:
        scored[0] += len(images)
        return [rule_caption(image) for image in images]

    with progress.session(True, "test") as state:
        [exp] = explain_caption(
            FunctionCaptioner(counting, batched=True), BRIGHT, method, scorer=WordMatchScorer(), **params
        )
    [only] = state.stages
    assert only.total == only.done == exp.n_model_evals > 0
    assert 1 <= scored[0] <= 1 + exp.n_model_evals  # the explained caption, then the images not seen before (memoised)
    capsys.readouterr()


@pytest.mark.slow
def test_evaluate_prints_no_tensorflow_lines_in_a_fresh_process(tmp_path) -> None:
    pytest.importorskip("quantus")
    script = (
        "import numpy as np, torch, xai_bridge as xb\n"
        "net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))\n"
        "m = xb.TorchModel(net.eval(), xb.Preprocess(size=(16, 16)), batch_size=8, tune_batch=False)\n"
        "e = xb.explain(m, np.full((1, 16, 16, 3), 90, np.uint8), 'builtin.Saliency', progress=False)\n"
        "print(xb.evaluate(m, e, 'sparseness', progress=False)['value'].notna().all())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert "absl" not in done.stderr and "oneDNN" not in done.stderr and "cuda" not in done.stderr, done.stderr


def test_a_log_line_names_the_method_once() -> None:
    """A detector run's session already names its method; the stage of that method does not repeat it."""
    state = progress.Progress(log=True, desc="detections builtin.RISE")
    state.stage("builtin.RISE", 10)
    assert state.line().startswith("detections builtin.RISE: 0/10 evals")
    state.stage("explain", 10)
    assert state.line().startswith("detections builtin.RISE explain: 0/10 evals")
