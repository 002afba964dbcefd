"""Scores without a separate prediction pass (ScoreTap) and the cached CAM layer choice."""

from __future__ import annotations

import numpy as np
import torch
from conftest import TINY_PREPROCESS, make_tiny_net
from xai_bridge.adapters.methods._layers import choose_layer
from xai_bridge.adapters.models import BlackBoxModel, TorchModel

import xai_bridge as xb
from xai_bridge.batching import ScoreTap


def _forward_counter(net: torch.nn.Module) -> list[int]:
    calls = [0]
    net.register_forward_pre_hook(lambda _m, args: calls.__setitem__(0, calls[0] + int(args[0].shape[0])))
    return calls


def _outputs(model: TorchModel, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.pixel_module()(model.pixel_tensor(images)).numpy()


def test_explicit_targets_cost_no_prediction_pass(rgb_images) -> None:
    net = make_tiny_net(0)
    model = TorchModel(net, TINY_PREPROCESS, batch_size=8)
    calls = _forward_counter(net)  # registered before explain: the guard keeps it
    xb.explain(model, rgb_images, "gradcam.GradCAM", targets=[1, 3])  # learns the output count
    calls[0] = 0
    exp = xb.explain(model, rgb_images, "gradcam.GradCAM", targets=[1, 3])
    assert calls[0] == 2  # the CAM's own forward of 2 images; no trace, no prediction pass
    expected = _outputs(model, rgb_images)[[0, 1], [1, 3]]
    assert np.allclose(exp.scores[:, 0], expected, atol=1e-5)
    calls[0] = 0
    xb.explain(model, rgb_images, "gradcam.GradCAM", targets="top1")
    assert calls[0] == 4  # top-1 needs the prediction pass first


def test_method_that_never_sees_the_image_gets_a_prediction_pass(tiny_model, rgb_images) -> None:
    xb.explain(tiny_model, rgb_images, "builtin.Saliency", targets=0)
    exp = xb.explain(tiny_model, rgb_images, "rise", targets=[[0, 2], [4, 1]], n_masks=8)
    expected = np.take_along_axis(_outputs(tiny_model, rgb_images), exp.targets, axis=1)
    assert np.allclose(exp.scores, expected, atol=1e-5)


def test_ablation_forwards_do_not_replace_the_scores(tiny_model, rgb_images) -> None:
    """AblationCAM feeds the image itself again with channels ablated; the first, clean output wins."""
    xb.explain(tiny_model, rgb_images, "builtin.Saliency", targets=0)
    exp = xb.explain(tiny_model, rgb_images, "gradcam.AblationCAM", targets=[2, 2], layer="features.3")
    assert np.allclose(exp.scores[:, 0], _outputs(tiny_model, rgb_images)[:, 2], atol=1e-5)


def test_black_box_scores_from_the_methods_own_calls(rgb_images) -> None:
    seen: list[int] = []

    def fn(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return np.stack([x.mean(axis=(1, 2, 3)), x[..., 0].mean(axis=(1, 2))], axis=1) / 255.0

    box = BlackBoxModel(fn, batch_size=64)
    xb.explain(box, rgb_images, "builtin.Occlusion", targets=1, window=20, stride=20)
    seen.clear()
    exp = xb.explain(box, rgb_images, "builtin.Occlusion", targets=1, window=20, stride=20)
    assert sum(seen) == exp.n_model_evals  # occlusion's own calls only (they include the image itself)
    assert np.allclose(exp.scores[:, 0], fn(rgb_images)[:, 1], atol=1e-6)


def test_tap_matches_only_identical_images(rgb_images) -> None:
    images = rgb_images.copy()
    images[0, 0, 0, :2] = (10, 20)
    tap = ScoreTap(images)
    same_sum = images.copy()
    same_sum[0, 0, 0, :2] = (11, 19)  # image 0 altered, pixel sum unchanged
    tap.offer(same_sum[::-1], np.array([[1.0, 2.0], [3.0, 4.0]], np.float32))
    assert sorted(tap.outputs) == [1]  # row 0 is image 1 unchanged; the altered image 0 does not match
    assert tap.outputs[1].tolist() == [1.0, 2.0]
    assert tap.scores(np.array([[1], [0]])) is None
    tap.offer(images, np.array([[5.0, 6.0], [7.0, 8.0]], np.float32))  # the first output seen wins
    assert tap.scores(np.array([[1], [0]])).tolist() == [[6.0], [1.0]]


def test_layer_choice_cached_until_the_module_changes(tiny_model, rgb_images) -> None:
    net, module = tiny_model.pixel_module(), tiny_model.module
    x = tiny_model.pixel_tensor(rgb_images[:1])
    memo: dict = {}
    first = choose_layer(module, net, x, 0, "features.3", None, memo)
    assert choose_layer(module, net, x, 0, "features.3", None, memo) is first
    replacement = torch.nn.BatchNorm2d(8).eval()
    module.features[3] = replacement
    again = choose_layer(module, net, x, 0, "features.3", None, memo)
    assert again.module is replacement and again is not first
    auto = choose_layer(module, net, x, 0, None, None, memo)
    assert choose_layer(module, net, x, 0, None, None, memo) is auto
