"""Seed 004 (and 003): LIME and shap on an NHWC callable expecting [-1, 1] and on a torch NCHW model,
with no user wrapper, equal to the libraries called through the wrappers users write by hand today."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_close
from PIL import Image
from torch import nn
from xai_bridge.adapters.models import ArrayModel, TorchModel

import xai_bridge as xb
from xai_bridge.viz.masks import image_and_mask

shap = pytest.importorskip("shap")
lime_image = pytest.importorskip("lime.lime_image")
from lime.wrappers.scikit_image import SegmentationAlgorithm  # noqa: E402

SIZE = 32  # the model's input size (InceptionV3's 299 in the seed)


class InceptionLike:
    """A tiny Keras-style model: float32 NHWC in [-1, 1] -> 6 softmax probabilities.

    It refuses anything else, like a real Keras model silently would not.
    """

    def __init__(self) -> None:
        self.weights = np.random.default_rng(0).normal(size=(4 * 4 * 3, 6)) * 3
        self.calls = 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 4 or x.shape[1:] != (SIZE, SIZE, 3) or x.dtype != np.float32:
            raise ValueError(f"expected float32 NHWC (N, {SIZE}, {SIZE}, 3), got {x.dtype} {x.shape}")
        if x.min() < -1 or x.max() > 1:
            raise ValueError(f"expected inputs in [-1, 1], got [{x.min()}, {x.max()}]")
        self.calls += 1
        pooled = x.reshape(len(x), 4, SIZE // 4, 4, SIZE // 4, 3).mean(axis=(2, 4)).reshape(len(x), -1)
        return xb.softmax(pooled @ self.weights)


class StrictNCHW(nn.Module):
    """A torch classifier that only accepts NCHW batches."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 5, stride=4)
        self.fc = nn.Linear(4 * 7 * 7, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected NCHW, got {tuple(x.shape)}")
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture(scope="module")
def cat(chelsea) -> np.ndarray:
    return np.asarray(Image.fromarray(chelsea).resize((150, 100), Image.BILINEAR))


def keras_style_predict(net: InceptionLike):
    """Seed 004's hand-written path: load_img(target_size) + inception preprocess_input inside predict."""

    def predict(batch: np.ndarray) -> np.ndarray:
        resized = [
            np.asarray(Image.fromarray(np.uint8(np.rint(im))).resize((SIZE, SIZE), Image.BILINEAR)) for im in batch
        ]
        return net(np.stack(resized).astype(np.float32) / 127.5 - 1.0)

    return predict


def torch_style_predict(net: nn.Module):
    """Seed 004's ``batch_model``: permute NHWC -> NCHW (plus the normalisation the net expects)."""

    def batch_model(images: np.ndarray) -> np.ndarray:
        net.eval()
        pixels = np.rint(images).astype(np.float32)  # xai-bridge models see uint8 images: shap's mean fill is rounded
        x = torch.FloatTensor(pixels).permute(0, 3, 1, 2).contiguous()
        with torch.no_grad():
            return net((x * (1 / 255.0) - 0.5) / 0.25).numpy()

    return batch_model


def _lime_reference(predict, image: np.ndarray, **kwargs):
    quickshift = SegmentationAlgorithm("quickshift", kernel_size=4, max_dist=200, ratio=0.2)
    return lime_image.LimeImageExplainer(random_state=0).explain_instance(
        image.astype(np.double),
        predict,
        segmentation_fn=lambda x: quickshift(x.astype(np.uint8)),
        random_seed=0,
        **kwargs,
    )


def test_lime_on_an_nhwc_inception_callable_needs_no_wrapper(cat) -> None:
    net = InceptionLike()
    model = ArrayModel(net, xb.Preprocess.inception(SIZE), batch_size=10)
    exp = xb.explain(model, cat, "lime", targets=xb.top_k(5), hide_color=0, num_samples=100, batch_size=10)
    assert exp.n_model_evals == 100 and net.calls == 1 + 10  # prediction pass + 10 batches of 10
    ref = _lime_reference(keras_style_predict(net), cat, top_labels=5, hide_color=0, num_samples=100, batch_size=10)
    assert exp.targets[0].tolist() == [int(k) for k in ref.top_labels]
    for j, label in enumerate(ref.top_labels):
        ranked = ref.local_exp[label]
        ids = [f for f, _ in ranked]
        assert exp.extras["superpixel_order"][0, j, : len(ids)].tolist() == ids
        assert_close(exp.extras["superpixel_weights"][0, j, ids], [w for _, w in ranked])
    # seed 004's views: the top class with the rest hidden / shown, and the 5th class
    for j, kw in [(0, dict(hide_rest=True)), (0, dict(hide_rest=False)), (4, dict(hide_rest=True))]:
        temp, mask = image_and_mask(exp, 0, j, positive_only=True, num_features=5, **kw)
        ref_temp, ref_mask = ref.get_image_and_mask(ref.top_labels[j], positive_only=True, num_features=5, **kw)
        assert np.array_equal(mask, ref_mask) and np.array_equal(temp, ref_temp.astype(np.uint8))


def test_shap_on_an_nhwc_inception_callable_needs_no_wrapper(cat) -> None:
    net = InceptionLike()
    model = ArrayModel(net, xb.Preprocess.inception(SIZE))
    exp = xb.explain(model, cat, "shap.Partition", targets=xb.top_k(4), masker="inpaint_telea", max_evals=60)
    predict = keras_style_predict(net)
    explainer = shap.Explainer(lambda x: predict(x.copy()), shap.maskers.Image("inpaint_telea", cat.shape))
    np.random.seed(0)
    ref = explainer(
        cat[None].astype(np.float64),
        max_evals=60,
        batch_size=50,
        outputs=shap.Explanation.argsort.flip[:4],
        silent=True,
    )
    assert_close(exp.raw, np.transpose(ref.values, (0, 4, 3, 1, 2)))
    assert np.allclose(exp.base_scores, ref.base_values, atol=1e-6)
    assert np.allclose(exp.raw.reshape(1, 4, -1).sum(-1), exp.scores - exp.base_scores, atol=1e-5)


def test_torch_nchw_model_needs_no_wrapper(cat) -> None:
    net = StrictNCHW()
    model = TorchModel(net, xb.Preprocess(scale="unit", mean=(0.5,) * 3, std=(0.25,) * 3), batch_size=10)
    small = np.ascontiguousarray(cat[: SIZE * 2, : SIZE * 2])
    small = np.asarray(Image.fromarray(small).resize((SIZE, SIZE), Image.BILINEAR))
    lime_exp = xb.explain(
        model, small, "lime", targets=xb.top_k(2), hide_color=0, num_samples=60, batch_size=10, segmentation="slic"
    )
    assert net.training  # the adapter ran it in eval mode and restored the user's mode
    slic = SegmentationAlgorithm("slic", start_label=0)
    ref = lime_image.LimeImageExplainer(random_state=0).explain_instance(
        small.astype(np.double),
        torch_style_predict(net),
        top_labels=2,
        hide_color=0,
        num_samples=60,
        batch_size=10,
        segmentation_fn=lambda x: slic(x.astype(np.uint8)),
        random_seed=0,
    )
    for j, label in enumerate(ref.top_labels):
        ranked = ref.local_exp[label]
        assert lime_exp.targets[0, j] == label
        assert_close(lime_exp.extras["superpixel_weights"][0, j, [f for f, _ in ranked]], [w for _, w in ranked])
    shap_exp = xb.explain(model, small, "shap.Partition", targets=xb.top_k(2), masker="inpaint_ns", max_evals=40)
    explainer = shap.Explainer(torch_style_predict(net), shap.maskers.Image("inpaint_ns", small.shape))
    np.random.seed(0)
    ref = explainer(
        small[None].astype(np.float64),
        max_evals=40,
        batch_size=50,
        outputs=shap.Explanation.argsort.flip[:2],
        silent=True,
    )
    assert_close(shap_exp.raw, np.transpose(ref.values, (0, 4, 3, 1, 2)))
