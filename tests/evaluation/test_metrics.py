"""xai_bridge.evaluation.metrics: known answers on hand-made models and maps, parity with Quantus / grad-cam."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
quantus = pytest.importorskip("quantus")
pytest.importorskip("pandas")

from conftest import TINY_PREPROCESS, make_tiny_net  # noqa: E402
from helpers import REPO, random_images  # noqa: E402
from xai_bridge.adapters._torch import hook_count  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.evaluation.metrics import (  # noqa: E402
    COLUMNS,
    ROAD,
    Baseline,
    Deletion,
    FaithfulnessCorrelation,
    Insertion,
    Randomisation,
    RandomLogit,
    boxes_to_masks,
    evaluate,
    randomised_copy,
)

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

S = 16  # image side
GRAY = 200


def top_left_score(images: np.ndarray) -> np.ndarray:
    """Class 0: mean brightness of the top-left quadrant in [0, 1]; class 1: its complement."""
    x = images.astype(np.float64)
    h, w = x.shape[1] // 2, x.shape[2] // 2
    s = x[:, :h, :w].mean(axis=(1, 2, 3)) / 255.0
    return np.stack([s, 1.0 - s], axis=1)


def quadrant_map() -> np.ndarray:
    a = np.zeros((S, S), np.float32)
    a[: S // 2, : S // 2] = 1.0
    return a


def hand_explanation(maps: np.ndarray, images: np.ndarray, method: str, targets=None) -> xb.Explanation:
    n, t = maps.shape[:2]
    targets = np.zeros((n, t), np.int64) if targets is None else np.asarray(targets)
    return xb.Explanation(
        attributions=maps,
        images=images,
        targets=targets,
        target_names=targets.astype(str),
        scores=np.zeros((n, t)),
        method=method,
        library="hand",
    )


@pytest.fixture
def quadrant_case():
    images = np.full((2, S, S, 3), GRAY, np.uint8)
    images[1] = np.random.default_rng(1).integers(100, 256, (S, S, 3), dtype=np.uint8)
    quad = np.broadcast_to(quadrant_map(), (2, 1, S, S))
    return (
        xb.BlackBoxModel(top_left_score),
        images,
        [hand_explanation(quad, images, "quadrant"), hand_explanation(1.0 - quad, images, "inverse")],
    )


# ------------------------------------------------------------------ deletion / insertion
def test_deletion_insertion_exact_on_the_top_left_model(quadrant_case):
    model, _images, exps = quadrant_case
    df = evaluate(model, exps, ("deletion", "insertion"), steps=4)
    assert list(df.columns) == list(COLUMNS)
    assert len(df) == 2 * 2 * 2
    value = df.set_index(["method", "metric", "image"])["value"]
    s = GRAY / 255.0  # gray image: fractions 0, .25, .5, .75, 1 -> the quadrant is exactly the first 25%
    assert value["quadrant", "deletion", 0] == pytest.approx(s / 8, abs=1e-6)  # curve s,0,0,0,0
    assert value["inverse", "deletion", 0] == pytest.approx(7 * s / 8, abs=1e-6)  # curve s,s,s,s,0
    assert value["quadrant", "insertion", 0] == pytest.approx(7 * s / 8, abs=1e-6)
    assert value["inverse", "insertion", 0] == pytest.approx(s / 8, abs=1e-6)
    # random image: the highlighting map still beats its inverse on both
    assert value["quadrant", "deletion", 1] < value["inverse", "deletion", 1] - 0.3
    assert value["quadrant", "insertion", 1] > value["inverse", "insertion", 1] + 0.3
    assert (df["n_model_evals"] == 5).all()  # steps + 1 images per map, batched in one predict
    assert (df["seconds"] >= 0).all() and set(df["target"]) == {0}


def test_deletion_blur_baseline_and_softmax_settings(quadrant_case):
    model, _images, exps = quadrant_case
    blur = evaluate(model, exps[0], [Deletion(steps=4, baseline="blur", blur_radius=2.0)])
    black = evaluate(model, exps[0], [Deletion(steps=4)])
    assert blur["value"][0] == pytest.approx(GRAY / 255, abs=1e-6)  # a blurred flat image is the image: no drop
    assert blur["value"][1] - black["value"][1] > 0.5  # blurred noise keeps the quadrant's mean brightness
    logits = xb.BlackBoxModel(top_left_score, output_kind="logits")
    soft = evaluate(logits, exps[0][:1], [Insertion(steps=4, softmax=True)])
    s = GRAY / 255.0
    p0, p = 1 / (1 + np.e), np.exp(s) / (np.exp(s) + np.exp(1 - s))  # softmax of (0, 1) and of (s, 1 - s)
    assert soft["value"][0] == pytest.approx(0.125 * (p0 + p) + 0.75 * p, abs=1e-6)
    plain = evaluate(model, exps[0][:1], [Insertion(steps=4, softmax=True)])  # probabilities: left as they are
    assert plain["value"][0] == pytest.approx(7 * s / 8, abs=1e-6)
    with pytest.raises(ValueError, match="baseline"):
        Deletion(baseline="white")
    with pytest.raises(ValueError, match="steps"):
        evaluate(model, exps, "deletion", steps=0)


def test_nhwc_array_model_gives_the_same_curves(quadrant_case):
    _, _images, exps = quadrant_case
    nhwc = xb.ArrayModel(lambda x: top_left_score(np.clip(x * 255.0, 0, 255)), xb.Preprocess(layout="NHWC"))
    a = evaluate(nhwc, exps, ("deletion", "insertion"), steps=4)
    b = evaluate(xb.BlackBoxModel(top_left_score), exps, ("deletion", "insertion"), steps=4)
    np.testing.assert_allclose(a["value"], b["value"], atol=1e-6)


# ------------------------------------------------------------------ pointing game
def test_pointing_game_with_boxes_or_masks(quadrant_case):
    model, images, exps = quadrant_case
    noisy = [
        hand_explanation(
            np.asarray(e.attributions) + np.random.default_rng(0).random((2, 1, S, S)) * 0.01, images, e.method
        )
        for e in exps
    ]
    spiked = np.array(noisy[1].attributions)
    spiked[1, 0, 12, 12] += 1.0  # the inverse map of image 1 peaks in the bottom-right quadrant
    noisy[1] = hand_explanation(spiked, images, "inverse")
    half = S // 2
    by_box = evaluate(model, noisy, "pointing_game", boxes=[(0, 0, half, half)] * 2)
    assert by_box.set_index(["method", "image"])["value"].to_dict() == {
        ("quadrant", 0): 1.0,
        ("quadrant", 1): 1.0,
        ("inverse", 0): 0.0,
        ("inverse", 1): 0.0,
    }
    masks = boxes_to_masks([(0, 0, half, half), [(0, 0, half, half), (half, half, S, S)]], (S, S), 2)
    assert masks.sum() == 64 + 128
    by_mask = evaluate(model, noisy, "pointing_game", masks=masks)
    np.testing.assert_array_equal(by_mask["value"], [1, 1, 0, 1])  # the inverse's peak of image 1 is in its 2nd box
    assert (by_mask["n_model_evals"] == 0).all()
    with pytest.raises(ValueError, match="boxes/masks"):
        evaluate(model, noisy, "pointing_game")


def test_boxes_are_x0_y0_x1_y1_and_box_names_them(rgb_images):
    """x is the column and y the row, everywhere; ``xb.Box`` names the fields so they cannot be swapped."""
    named = boxes_to_masks([xb.Box(x0=30, y0=2, x1=44, y1=10)], (40, 48), 1)
    plain = boxes_to_masks([(30, 2, 44, 10)], (40, 48), 1)
    expected = np.zeros((1, 40, 48), bool)
    expected[0, 2:10, 30:44] = True  # rows 2..9, columns 30..43
    np.testing.assert_array_equal(named, expected)
    np.testing.assert_array_equal(plain, expected)
    maps = np.zeros((1, 1, 40, 48), np.float32)
    maps[0, 0, 5, 40] = 1.0  # the peak: row 5, column 40
    exp = hand_explanation(maps, rgb_images[:1], "peak")
    box = xb.Box(x0=36, y0=0, x1=48, y1=8)
    assert evaluate(xb.BlackBoxModel(top_left_score), exp, "pointing_game", boxes=[box])["value"][0] == 1.0
    swapped = (box.y0, box.x0, box.y1, box.x1)  # the order the README used to show
    assert evaluate(xb.BlackBoxModel(top_left_score), exp, "pointing_game", boxes=[swapped])["value"][0] == 0.0
    with pytest.raises(
        ValueError, match=r"boxes: box Box\(x0=41.0, y0=2.0, x1=45.0, y1=60.0\) of image 0 has no pixel"
    ):
        boxes_to_masks([(41, 2, 45, 60), (2, 41, 60, 45)], (40, 40), 2)


def test_readme_shows_boxes_in_the_documented_order():

    readme = (REPO / "README.md").read_text()
    assert "(y0, x0" not in readme and "xb.Box(x0=" in readme


# ------------------------------------------------------------------ Quantus parity (no model)
@pytest.mark.parametrize("name,cls", [("sparseness", "Sparseness"), ("complexity", "Complexity")])
def test_sparseness_and_complexity_match_quantus(name, cls, rgb_images):
    maps = np.random.default_rng(3).normal(size=(2, 2, 40, 48)).astype(np.float32)
    exp = hand_explanation(maps, rgb_images, "random", targets=[[0, 1], [2, 3]])
    df = evaluate(xb.BlackBoxModel(top_left_score), exp, name)
    x = np.transpose(rgb_images, (0, 3, 1, 2)).astype(np.float32)
    for t in range(2):
        want = getattr(quantus, cls)(disable_warnings=True)(
            model=None, x_batch=x, y_batch=exp.targets[:, t], a_batch=maps[:, t : t + 1]
        )
        got = df[df["target"].isin(exp.targets[:, t])].sort_values("image")["value"].to_numpy()
        np.testing.assert_allclose(got, np.asarray(want, np.float64), rtol=1e-6)
    sparse = evaluate(
        xb.BlackBoxModel(top_left_score),
        [hand_explanation(np.broadcast_to(quadrant_map(), (1, 1, S, S)), np.zeros((1, S, S, 3), np.uint8), "q")],
        "sparseness",
    )
    assert sparse["value"][0] == pytest.approx(0.75)  # Gini of a map with 1/4 ones, 3/4 zeros


# ------------------------------------------------------------------ Quantus parity (with a model)
def test_faithfulness_correlation_matches_quantus_with_the_same_seed(tiny_model, rgb_images):
    exp = xb.explain(tiny_model, rgb_images, "builtin.Saliency")
    df = evaluate(tiny_model, exp, [FaithfulnessCorrelation(nr_runs=12, subset_size=64)], seed=7)
    x = np.transpose(rgb_images, (0, 3, 1, 2)).astype(np.float32)
    values = []
    for n in range(2):  # evaluate runs Quantus per image with the seed set
        np.random.seed(7)
        q = quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=64, return_aggregate=False, disable_warnings=True)
        values += q(
            model=tiny_model.pixel_module().eval(),
            x_batch=x[n : n + 1],
            y_batch=exp.targets[n : n + 1, 0],
            a_batch=np.asarray(exp.attributions[n : n + 1]),
            softmax=False,
            channel_first=True,
        )
    np.testing.assert_allclose(df["value"], values, rtol=1e-4, atol=1e-5)
    assert np.isfinite(df["value"]).all() and (df["n_model_evals"] == 13).all()  # 1 unperturbed + 12 runs


def test_faithfulness_correlation_knows_the_quadrant_on_a_black_box(quadrant_case):
    model, _images, exps = quadrant_case
    df = evaluate(model, [e[1] for e in exps], [FaithfulnessCorrelation(nr_runs=20, subset_size=32)], seed=0)
    v = df.set_index("method")["value"]
    # the score drop grows with the subset's pixels in the quadrant (noisy: Quantus' "black" is the image
    # minimum and the pixels differ), which is the quadrant map's subset sum and minus the inverse's
    assert v["quadrant"] > 0.7 and v["inverse"] < -0.7
    assert (df["n_model_evals"] == 21).all()


def test_random_logit_matches_quantus_and_counts_evaluations(tiny_model, rgb_images):
    exp = xb.explain(tiny_model, rgb_images[:1], "builtin.Saliency")
    df = evaluate(tiny_model, exp, "random_logit", seed=3)

    def direct(model, inputs, targets, **kwargs):  # the same method through explain, on the same pixels
        imgs = np.transpose(inputs, (0, 2, 3, 1)).astype(np.uint8)
        return xb.explain(tiny_model, imgs, "builtin.Saliency", targets=[[int(t)] for t in targets]).attributions

    q = quantus.RandomLogit(num_classes=5, seed=3, disable_warnings=True)
    x = np.transpose(rgb_images[:1], (0, 3, 1, 2)).astype(np.float32)
    want = q(
        model=tiny_model.pixel_module().eval(),
        x_batch=x,
        y_batch=exp.targets[:, 0],
        a_batch=np.asarray(exp.attributions),
        explain_func=direct,
        channel_first=True,
    )
    assert df["value"][0] == pytest.approx(float(want[0]), abs=1e-6)
    assert df["n_model_evals"][0] >= 2  # the off-class explanation's predict + backward pass are counted
    with pytest.raises(ValueError, match="num_classes"):
        evaluate(tiny_model, exp, [RandomLogit(num_classes=1)])


# ------------------------------------------------------------------ ROAD (grad-cam)
def texture_score(images: np.ndarray) -> np.ndarray:
    """Class 0: high-frequency energy of the top-left quadrant (imputation smooths it away)."""
    x = images.astype(np.float64).mean(axis=3)
    q = x[:, : x.shape[1] // 2, : x.shape[2] // 2]
    e = np.abs(np.diff(q, axis=1)).mean(axis=(1, 2)) / 255.0
    return np.stack([e, 1 - e], axis=1)


def test_road_morf_and_lerf_rank_the_quadrant_map_first():
    img = random_images((1, S, S, 3), seed=2)
    quad = np.broadcast_to(quadrant_map() + np.linspace(0, 0.01, S * S).reshape(S, S), (1, 1, S, S))
    exps = [hand_explanation(quad, img, "quadrant"), hand_explanation(-quad, img, "inverse")]
    model = xb.BlackBoxModel(texture_score)
    df = evaluate(model, exps, [ROAD("morf", percentiles=(50, 80)), ROAD("lerf", percentiles=(20, 50))], seed=0)
    v = df.set_index(["method", "metric"])["value"]
    assert v["quadrant", "road_morf"] < v["inverse", "road_morf"] - 0.05  # removing the quadrant first hurts more
    assert v["quadrant", "road_lerf"] > v["inverse", "road_lerf"] + 0.05  # keeping it longest hurts less
    assert (df["n_model_evals"] == 4).all()  # grad-cam: (original + imputed) per percentile
    from pytorch_grad_cam.metrics.road import ROADMostRelevantFirstAverage
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    class Rounded(torch.nn.Module):  # grad-cam's torch contract for the black box, as evaluate adapts it
        def forward(self, x):
            imgs = np.clip(np.rint(x.numpy().transpose(0, 2, 3, 1)), 0, 255).astype(np.uint8)
            return torch.from_numpy(texture_score(imgs).astype(np.float32))

    torch.manual_seed(0)
    cam = (quad[:, 0] - quad.min()) / (quad.max() - quad.min())  # min-max scaled, grad-cam's CAM range
    want = ROADMostRelevantFirstAverage([50, 80])(
        torch.from_numpy(img.transpose(0, 3, 1, 2).astype(np.float32)),
        cam.astype(np.float32),
        [ClassifierOutputTarget(0)],
        Rounded(),
    )
    assert v["quadrant", "road_morf"] == pytest.approx(float(want[0]), abs=1e-6)
    again = evaluate(model, exps, [ROAD("morf", percentiles=(50, 80))], seed=0)
    np.testing.assert_array_equal(again["value"], df[df.metric == "road_morf"]["value"])  # seeded noise
    with pytest.raises(ValueError, match="road_morf"):
        evaluate(model, exps, "road")


# ------------------------------------------------------------------ randomisation
def test_randomisation_never_touches_the_users_model(rgb_images):
    net = make_tiny_net(0).train()
    net.fc.weight.requires_grad_(False)
    model = xb.TorchModel(net, TINY_PREPROCESS, batch_size=8)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    exp = xb.explain(model, rgb_images, "gradcam.GradCAM")
    same = evaluate(model, exp, [Randomisation(layers=())])
    np.testing.assert_allclose(same["value"], 1.0, atol=1e-6)  # nothing randomised -> the same maps
    rand = evaluate(model, exp, [Randomisation(layers=("fc", "features.3"))], seed=1)
    assert (rand["value"] < 0.9).all()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.training and not net.fc.weight.requires_grad and hook_count(net) == 0
    copy1 = randomised_copy(model, ("fc",), seed=5).module
    copy2 = randomised_copy(model, ("fc",), seed=5).module
    assert torch.equal(copy1.fc.weight, copy2.fc.weight) and not torch.equal(copy1.fc.weight, net.fc.weight)
    assert torch.equal(copy1.features[0].weight, net.features[0].weight)
    with pytest.raises(ValueError, match="layers"):
        evaluate(model, exp, [Randomisation(layers=("nope",))])
    # params a backend recorded but does not accept are dropped on the re-run (retry with its valid names)
    sal = xb.explain(model, rgb_images, "builtin.Saliency")
    extra = dataclasses.replace(sal, params={**sal.params, "added_by_backend": "x"})
    np.testing.assert_allclose(evaluate(model, extra, [Randomisation(layers=())])["value"], 1.0, atol=1e-6)
    with pytest.raises(TypeError, match="added_by_backend"):  # explicit params are used as given
        evaluate(model, extra, [Randomisation(layers=(), params={"added_by_backend": 1})])
    with pytest.raises(xb.MethodNotApplicableError, match="TorchModel"):
        evaluate(
            xb.BlackBoxModel(top_left_score),
            hand_explanation(np.zeros((1, 1, S, S)), np.zeros((1, S, S, 3), np.uint8), "x"),
            "randomisation",
        )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_absolute_randomisation_compares_absolute_channel_sums(rgb_images):
    """Adebayo et al.'s ABS comparison: per-channel absolute values summed, not the absolute channel sum."""
    from scipy.stats import spearmanr

    model = xb.TorchModel(make_tiny_net(0), TINY_PREPROCESS, batch_size=8)
    exp = xb.explain(model, rgb_images[:1], "captum.InputXGradient")
    got = evaluate(model, exp, [Randomisation(layers=("fc",), absolute=True)], seed=3)["value"].iloc[0]
    copy = randomised_copy(model, ("fc",), seed=3)
    new = xb.explain(copy, rgb_images[:1], "captum.InputXGradient", targets=exp.targets.tolist())
    a, b = (np.abs(np.asarray(e.raw))[0, 0].sum(axis=0).ravel() for e in (exp, new))
    assert got == pytest.approx(spearmanr(a, b).statistic, abs=1e-9)
    summed = (np.abs(np.asarray(e.attributions))[0, 0].ravel() for e in (exp, new))
    assert got != pytest.approx(spearmanr(*summed).statistic, abs=1e-3)  # not |channel sum|


def test_randomisation_decorrelates_gradcam_on_efficientnet(effnet, chelsea):
    from PIL import Image

    img = np.asarray(Image.fromarray(chelsea).resize((224, 224), Image.BILINEAR))[None]
    before = {k: v.clone() for k, v in effnet.module.state_dict().items()}
    exp = xb.explain(effnet, img, "gradcam.GradCAM")
    df = evaluate(effnet, exp, [Randomisation(layers=())])
    assert df["value"][0] == pytest.approx(1.0, abs=1e-6)
    rand = evaluate(effnet, exp, [Randomisation(layers=("classifier", "conv_head", "bn2"))], seed=0)
    assert rand["value"][0] < 0.5, rand
    for k, v in effnet.module.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not effnet.module.training and hook_count(effnet.module) == 0


# ------------------------------------------------------------------ captions
def test_caption_explanations_score_each_token_column():
    from caption_server import rule_caption
    from xai_bridge.adapters.captioners.scorers import WordMatchScorer

    from xai_bridge.captions import CaptionScoreModel, explain_caption

    bright = np.full((32, 32, 3), 230, np.uint8)
    [exp] = explain_caption(
        rule_caption, bright, "builtin.Occlusion", scorer=WordMatchScorer(), window=16, stride=16, baseline=0
    )
    model = CaptionScoreModel(rule_caption, WordMatchScorer(), exp.params["caption"])
    tl = np.zeros((1, 32, 32), bool)
    tl[:, :16, :16] = True
    df = evaluate([model], [exp], ("deletion", "pointing_game"), steps=4, masks=tl)
    dele = df[df.metric == "deletion"].set_index("target")["value"]
    # blue (TL), dog (TR), white (BL), car (BR): their quadrant is the first 25% removed -> curve 1,0,0,0,0
    for position in (1, 2, 5, 6):
        assert dele.iloc[position] == pytest.approx(0.125)
    pg = df[df.metric == "pointing_game"]["value"].to_numpy()
    assert pg[1] == 1.0 and pg[2] == 0.0  # "blue" points into the top-left quadrant, "dog" does not


def test_metric_names_and_errors(quadrant_case):
    model, _, exps = quadrant_case
    with pytest.raises(ValueError, match="valid names"):
        evaluate(model, exps, "nope")
    with pytest.raises(ValueError, match="once"):
        evaluate(model, exps, ["deletion", Deletion()])
    with pytest.raises(ValueError, match="seed"):
        evaluate(model, exps, "deletion", seed=-1)
    assert Deletion(baseline="blur").baseline is Baseline.BLUR
    df = evaluate(model, exps[0], Insertion(steps=2))
    assert df["metric"].tolist() == ["insertion", "insertion"] and (df["n_model_evals"] == 3).all()
