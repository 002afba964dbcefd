"""xai_bridge.evaluation.metrics routed to Quantus: parity with Quantus called directly on equivalent inputs.

evaluate adapts a predict-only model to Quantus' torch contract (float NCHW pixels in [0, 255],
rounded to uint8 NHWC and sent through ``model.predict``); here the same function written as a
torch module is given to Quantus directly, with the same seed and settings, and the values must agree.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
quantus = pytest.importorskip("quantus")
pytest.importorskip("pandas")

import xai_bridge as xb  # noqa: E402
from xai_bridge.evaluation.metrics import FaithfulnessCorrelation, RandomLogit, evaluate  # noqa: E402

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

S = 16


def weighted_quadrants(images: np.ndarray) -> np.ndarray:
    """Three outputs: weighted brightness of the quadrants (a model with a known, uneven dependence)."""
    x = images.astype(np.float64) / 255.0
    h, w = x.shape[1] // 2, x.shape[2] // 2
    tl, tr = x[:, :h, :w].mean(axis=(1, 2, 3)), x[:, :h, w:].mean(axis=(1, 2, 3))
    bl = x[:, h:, :w].mean(axis=(1, 2, 3))
    return np.stack([tl + 0.1 * tr, tr, 0.5 * bl + 0.5 * tl], axis=1)


class TorchQuadrants(torch.nn.Module):
    """The same function on float NCHW pixels in [0, 255], as Quantus wants a torch model."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double() / 255.0
        h, w = x.shape[2] // 2, x.shape[3] // 2
        tl, tr = x[:, :, :h, :w].mean(dim=(1, 2, 3)), x[:, :, :h, w:].mean(dim=(1, 2, 3))
        bl = x[:, :, h:, :w].mean(dim=(1, 2, 3))
        return torch.stack([tl + 0.1 * tr, tr, 0.5 * bl + 0.5 * tl], dim=1).float()


@pytest.fixture
def case():
    rng = np.random.default_rng(11)
    images = rng.integers(20, 256, (3, S, S, 3), dtype=np.uint8)
    maps = rng.normal(size=(3, 2, S, S)).astype(np.float32)
    maps[:, 0, : S // 2, : S // 2] += 2.0  # target 0 leans on the top-left quadrant
    targets = np.array([[0, 1], [2, 0], [1, 2]])
    exp = xb.Explanation(
        attributions=maps,
        images=images,
        targets=targets,
        target_names=targets.astype(str),
        scores=np.zeros((3, 2)),
        method="hand",
        library="hand",
    )
    return xb.BlackBoxModel(weighted_quadrants), images, exp


def _nchw(images: np.ndarray) -> np.ndarray:
    return np.transpose(images, (0, 3, 1, 2)).astype(np.float32)


def _values(df, exp, t: int) -> np.ndarray:
    """Values of target slot ``t`` in image order."""
    out = []
    for n in range(exp.n_images):
        rows = df[(df["image"] == n) & (df["target"] == exp.targets[n, t])]
        out.append(float(rows["value"].iloc[0]))
    return np.array(out)


def test_pointing_game_matches_quantus(case):
    model, images, exp = case
    rng = np.random.default_rng(5)
    masks = rng.random((3, 2, S, S)) < 0.3
    df = evaluate(model, exp, "pointing_game", masks=masks)
    assert set(df["value"]) <= {0.0, 1.0}
    for t in range(2):
        want = quantus.PointingGame(disable_warnings=True)(
            model=None,
            x_batch=_nchw(images),
            y_batch=exp.targets[:, t],
            a_batch=np.asarray(exp.attributions[:, t : t + 1]),
            s_batch=masks[:, t : t + 1].astype(float),
        )
        np.testing.assert_array_equal(_values(df, exp, t), np.asarray(want, float))
    # the hit/miss is the map's argmax inside the mask, computed here by hand as well
    for n in range(3):
        for t in range(2):
            peak = np.unravel_index(np.argmax(exp.attributions[n, t]), (S, S))
            assert _values(df, exp, t)[n] == float(masks[n, t][peak])


@pytest.mark.parametrize("softmax", [False, True])
def test_faithfulness_correlation_on_a_black_box_matches_quantus_on_a_torch_twin(case, softmax):
    model, images, exp = case
    metric = FaithfulnessCorrelation(nr_runs=15, subset_size=20, softmax=softmax)
    df = evaluate(xb.BlackBoxModel(weighted_quadrants, output_kind="logits"), exp, [metric], seed=4)
    for t in range(2):
        want = []
        for n in range(3):  # evaluate calls Quantus per image with numpy's global generator seeded
            np.random.seed(4)
            q = quantus.FaithfulnessCorrelation(
                nr_runs=15, subset_size=20, return_aggregate=False, disable_warnings=True
            )
            want += q(
                model=TorchQuadrants().eval(),
                x_batch=_nchw(images[n : n + 1]),
                y_batch=exp.targets[n : n + 1, t],
                a_batch=np.asarray(exp.attributions[n : n + 1, t : t + 1]),
                softmax=softmax,
                channel_first=True,
            )
        np.testing.assert_allclose(_values(df, exp, t), want, rtol=1e-4, atol=1e-5)
    assert (df["n_model_evals"] == 16).all()  # 1 + nr_runs per (image, target): 32 per image over its 2 targets
    state = np.random.get_state()[1].copy()
    evaluate(model, exp, [metric], seed=4)
    np.testing.assert_array_equal(np.random.get_state()[1], state)  # numpy's global state is restored


def test_faithfulness_correlation_is_seeded(case):
    model, _, exp = case
    metric = FaithfulnessCorrelation(nr_runs=10, subset_size=20)
    a = evaluate(model, exp, [metric], seed=1)["value"].to_numpy()
    b = evaluate(model, exp, [metric], seed=1)["value"].to_numpy()
    c = evaluate(model, exp, [metric], seed=2)["value"].to_numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_random_logit_on_a_black_box_matches_quantus(case):
    model, images, _exp0 = case
    exp = xb.explain(model, images[:2], "builtin.Occlusion", targets=[[0], [2]], window=8, stride=8, baseline=0)
    df = evaluate(model, exp, [RandomLogit()], seed=9)

    def direct(model, inputs, targets, **kwargs):
        imgs = np.transpose(inputs, (0, 2, 3, 1)).astype(np.uint8)
        return xb.explain(
            xb.BlackBoxModel(weighted_quadrants),
            imgs,
            "builtin.Occlusion",
            targets=[[int(t)] for t in targets],
            window=8,
            stride=8,
            baseline=0,
        ).attributions

    want = []
    for n in range(2):
        q = quantus.RandomLogit(num_classes=3, seed=9, disable_warnings=True)
        want += q(
            model=TorchQuadrants().eval(),
            x_batch=_nchw(images[n : n + 1]),
            y_batch=exp.targets[n : n + 1, 0],
            a_batch=np.asarray(exp.attributions[n : n + 1]),
            explain_func=direct,
            channel_first=True,
        )
    np.testing.assert_allclose(df["value"], want, atol=1e-6)
    assert (df["n_model_evals"] > 1).all()  # the off-class occlusion runs are counted


def test_constant_map_gives_nan_instead_of_a_quantus_error(case):
    model, images, _exp = case
    flat = xb.Explanation(
        attributions=np.zeros((1, 1, S, S), np.float32),
        images=images[:1],
        targets=np.array([[0]]),
        target_names=np.array([["0"]]),
        scores=np.zeros((1, 1)),
        method="flat",
        library="hand",
    )
    df = evaluate(model, flat, ("sparseness", "complexity", "faithfulness_corr"))
    assert df["value"].isna().all() and len(df) == 3
