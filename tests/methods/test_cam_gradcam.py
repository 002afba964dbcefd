"""pytorch-grad-cam backends: parity with the library called directly, raw maps, cleanup, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from xai_bridge.adapters.models import hook_count

import xai_bridge as xb
from xai_bridge.contract import ExplainRequest

gc = pytest.importorskip("pytorch_grad_cam")
cv2 = pytest.importorskip("cv2")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

#: Every class-score CAM method of pytorch-grad-cam 1.5.7 that runs on one layer.
LAYER_METHODS = (
    "GradCAM",
    "HiResCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "ScoreCAM",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "LayerCAM",
    "GradCAMElementWise",
    "KPCA_CAM",
    "ShapleyCAM",
    "FEM",
    "SegEigenCAM",
    "RandomCAM",
)
TARGETS = [1, 3]


def minmax(a: np.ndarray) -> np.ndarray:
    """Per-map min-max over the last two axes."""
    lo = a.min(axis=(-2, -1), keepdims=True)
    return (a - lo) / ((a - lo).max(axis=(-2, -1), keepdims=True) + 1e-12)


def library_maps(model, images, cls_name: str, targets, seed: int = 0, **ctor):
    """The library called directly on the same pixel module and layer: (normalised output, raw maps)."""
    net = model.pixel_module()
    layer = model.module.features
    x = model.pixel_tensor(images)
    tgts = [ClassifierOutputTarget(t) for t in targets]
    with model.guard():
        cam = getattr(gc, cls_name)(net, [layer], None, **ctor)
        try:
            np.random.seed(seed)
            normalised = cam(x, tgts)
            raw = None
            if cls_name != "ShapleyCAM":  # its Hessian-vector product cannot run twice on one graph
                acts = cam.activations_and_grads.activations[0].numpy()
                grads = cam.activations_and_grads.gradients[0].numpy() if cam.activations_and_grads.gradients else None
                np.random.seed(seed)
                low = cam.get_cam_image(x, layer, tgts, acts, grads, False)
                raw = np.stack([cv2.resize(np.float32(np.maximum(c, 0)), (x.shape[-1], x.shape[-2])) for c in low])
        finally:
            cam.activations_and_grads.release()
    return normalised, raw


def test_every_method_is_registered() -> None:
    names = set(xb.available_methods())
    expected = {f"gradcam.{m}" for m in LAYER_METHODS} | {
        "gradcam.FullGrad",
        "gradcam.FinerCAM",
        "gradcam.GuidedBackprop",
        "gradcam.GuidedGradCAM",
        "gradcam.DeepFeatureFactorization",
    }
    assert expected <= names
    spec = xb.default_registry().spec("gradcam.GradCAM")
    assert spec.family == "cam" and spec.needs_gradients and spec.extra == "gradcam"
    assert xb.default_registry().spec("gradcam.GuidedBackprop").family == "gradient"


@pytest.mark.parametrize("method", LAYER_METHODS)
def test_parity_with_the_library(tiny_model, rgb_images, method) -> None:
    exp = xb.explain(tiny_model, rgb_images, f"gradcam.{method}", targets=TARGETS)
    normalised, raw = library_maps(tiny_model, rgb_images, method, TARGETS)
    ours = exp.attributions[:, 0]
    assert ours.shape == (2, 40, 48) and exp.params["layer"] == "features"
    assert np.allclose(minmax(ours), normalised, atol=1e-5), "min-max of the raw map is the library's output"
    if raw is not None:
        assert np.allclose(ours, raw, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(raw).max())))
    assert ours.max() > 0


def test_gradcam_and_layercam_by_hand(tiny_model, rgb_images) -> None:
    """Raw values, not only shapes: Grad-CAM / LayerCAM from their formulas on the hooked layer."""
    x = tiny_model.pixel_tensor(rgb_images)
    acts = {}
    handle = tiny_model.module.features.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    try:
        out = tiny_model.pixel_module()(x)
    finally:
        handle.remove()
    a = acts["a"]
    (g,) = torch.autograd.grad(out[[0, 1], TARGETS].sum(), a)
    a, g = a.detach().numpy(), g.numpy()
    gradcam = np.maximum((g.mean(axis=(2, 3))[:, :, None, None] * a).sum(axis=1), 0)
    layercam = np.maximum((np.maximum(g, 0) * a).sum(axis=1), 0)
    tiny_model.module.zero_grad(set_to_none=True)
    for name, low in (("GradCAM", gradcam), ("LayerCAM", layercam)):
        expected = np.stack([cv2.resize(np.float32(c), (48, 40)) for c in low])
        got = xb.explain(tiny_model, rgb_images, f"gradcam.{name}", targets=TARGETS).attributions[:, 0]
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-7)


def test_one_target_per_image_and_several_columns(tiny_model, rgb_images) -> None:
    exp = xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", targets=[[1, 2], [3, 0]])
    normalised, _ = library_maps(tiny_model, rgb_images, "GradCAM", [2, 0])
    assert np.allclose(minmax(exp.attributions[:, 1]), normalised, atol=1e-5)
    single = xb.explain(tiny_model, rgb_images[1:], "gradcam.GradCAM", targets=0).attributions[0, 0]
    assert np.allclose(exp.attributions[1, 1], single, atol=1e-7), "images in a batch do not interact"


def test_fullgrad_and_finercam_parity(tiny_model, rgb_images) -> None:
    exp = xb.explain(tiny_model, rgb_images, "gradcam.FullGrad", targets=TARGETS)
    with tiny_model.guard():
        fullgrad = gc.FullGrad(tiny_model.pixel_module(), [])
        try:
            expected = fullgrad(tiny_model.pixel_tensor(rgb_images), [ClassifierOutputTarget(t) for t in TARGETS])
        finally:
            fullgrad.activations_and_grads.release()
    assert np.allclose(minmax(exp.attributions[:, 0]), expected, atol=1e-5)
    assert "layer" not in exp.params

    finer = xb.explain(tiny_model, rgb_images, "gradcam.FinerCAM", targets=2, alpha=0.5)
    with tiny_model.guard():
        lib = gc.FinerCAM(tiny_model.pixel_module(), [tiny_model.module.features])
        try:
            expected = lib(tiny_model.pixel_tensor(rgb_images), None, alpha=0.5, target_idx=2)
        finally:
            lib.base_cam.activations_and_grads.release()
    assert np.allclose(minmax(finer.attributions[:, 0]), expected, atol=1e-5)


def test_eigen_and_aug_smoothing(tiny_model, rgb_images) -> None:
    eigen = xb.explain(tiny_model, rgb_images, "gradcam.LayerCAM", targets=TARGETS, eigen_smooth=True)
    with tiny_model.guard():
        lib = gc.LayerCAM(tiny_model.pixel_module(), [tiny_model.module.features])
        try:
            x, tgts = tiny_model.pixel_tensor(rgb_images), [ClassifierOutputTarget(t) for t in TARGETS]
            expected = lib(x, tgts, eigen_smooth=True)
            augmented = lib(x, tgts, aug_smooth=True)
        finally:
            lib.activations_and_grads.release()
    assert np.allclose(minmax(eigen.attributions[:, 0]), expected, atol=1e-5)
    aug = xb.explain(tiny_model, rgb_images, "gradcam.LayerCAM", targets=TARGETS, aug_smooth=True)
    plain = xb.explain(tiny_model, rgb_images, "gradcam.LayerCAM", targets=TARGETS)
    assert not np.allclose(aug.attributions, plain.attributions)
    # the library averages min-max-scaled maps, xai-bridge raw maps: close, not equal
    for i in range(2):
        assert np.corrcoef(aug.attributions[i, 0].ravel(), augmented[i].ravel())[0, 1] > 0.95
    assert aug.n_model_evals == plain.n_model_evals + 5 * 2


def test_guided_backprop_parity_and_relus_put_back(tiny_model, rgb_images) -> None:
    relus = [tiny_model.module.features[1], tiny_model.module.features[4]]
    exp = xb.explain(tiny_model, rgb_images, "gradcam.GuidedBackprop", targets=[[1, 2], [3, 0]])
    # the library puts back new nn.ReLU() objects; the backend puts back the user's own
    assert tiny_model.module.features[1] is relus[0] and tiny_model.module.features[4] is relus[1]
    with tiny_model.guard():
        lib = gc.GuidedBackpropReLUModel(tiny_model.pixel_module(), device=None)
        try:
            expected = lib(tiny_model.pixel_tensor(rgb_images[1:]), target_category=0)
        finally:
            tiny_model.module.features[1], tiny_model.module.features[4] = relus
    assert exp.raw.shape == (2, 2, 3, 40, 48)
    assert np.allclose(exp.raw[1, 1], expected.transpose(2, 0, 1), atol=1e-9)
    assert np.allclose(exp.attributions, exp.raw.sum(axis=2))


def test_guided_gradcam_is_raw_cam_times_guided_backprop(tiny_model, rgb_images) -> None:
    ggc = xb.explain(tiny_model, rgb_images, "gradcam.GuidedGradCAM", targets=TARGETS)
    cam = xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", targets=TARGETS)
    gb = xb.explain(tiny_model, rgb_images, "gradcam.GuidedBackprop", targets=TARGETS)
    assert np.allclose(ggc.raw, gb.raw * cam.attributions[:, :, None], rtol=1e-5, atol=1e-12)
    assert ggc.params["layer"] == "features"


def test_deep_feature_factorization_parity(tiny_model, rgb_images) -> None:
    from pytorch_grad_cam import DeepFeatureFactorization

    exp = xb.explain(
        tiny_model, rgb_images, "gradcam.DeepFeatureFactorization", targets=[[1, 4], [3, 0]], n_components=3
    )
    assert exp.attributions.shape == (2, 3, 40, 48)  # one map per concept: T = n_components
    for i in range(2):
        with tiny_model.guard():
            lib = DeepFeatureFactorization(
                tiny_model.pixel_module(), tiny_model.module.features, computation_on_concepts=tiny_model.module.fc
            )
            try:
                _, maps, outputs = lib(tiny_model.pixel_tensor(rgb_images[i : i + 1]), 3)
            finally:
                lib.activations_and_grads.release()
        probs = torch.softmax(torch.from_numpy(outputs), dim=-1).numpy()
        for ours, lib_map in zip(exp.attributions[i], maps[0], strict=False):
            # the library min-max scales at layer resolution, then resizes: an affine map of ours
            design = np.stack([ours.ravel(), np.ones(ours.size)], axis=1).astype(np.float64)
            (scale, offset), *_ = np.linalg.lstsq(design, lib_map.ravel().astype(np.float64), rcond=None)
            assert scale > 0 and np.abs(design @ [scale, offset] - lib_map.ravel()).max() < 1e-5
        assert np.allclose(exp.extras["concept_probs"][i], probs, atol=1e-6)
        assert exp.targets[i].tolist() == probs.argmax(axis=1).tolist()
        assert np.allclose(exp.scores[i], probs.max(axis=1), atol=1e-6)
        assert exp.extras["concept_labels"][i].tolist() == np.argsort(-probs, axis=1)[:, :2].tolist()
    name = exp.target_names[0, 1]
    assert name.startswith("concept 1: ") and name.count(":") == 3  # "concept 1: cat:0.41, dog:0.30"


def test_vit_token_grid_parity(rgb_images) -> None:
    from conftest import TINY_PREPROCESS
    from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform
    from test_layers import tiny_vit

    model = xb.TorchModel(tiny_vit(), TINY_PREPROCESS)
    exp = xb.explain(model, rgb_images, "gradcam.GradCAM", targets=TARGETS)
    assert exp.params["layer"] == "blocks.1.norm1"
    assert exp.params["reshape_transform"] == {"__type__": "TokenGrid", "prefix_tokens": 1, "height": 4, "width": 4}
    with model.guard():
        lib = gc.GradCAM(
            model.pixel_module(),
            [model.module.blocks[-1].norm1],
            reshape_transform=lambda t: vit_reshape_transform(t, 4, 4),
        )
        try:
            expected = lib(model.pixel_tensor(rgb_images), [ClassifierOutputTarget(t) for t in TARGETS])
        finally:
            lib.activations_and_grads.release()
    assert exp.attributions.max() > 0
    assert np.allclose(minmax(exp.attributions[:, 0]), expected, atol=1e-5)
    assert hook_count(model.pixel_module()) == 0


def test_hooks_mode_and_params_restored_when_the_method_raises(tiny_model, rgb_images) -> None:
    net = tiny_model.module
    net.train()
    net.fc.weight.requires_grad_(False)

    def bad(t: torch.Tensor) -> torch.Tensor:
        if t.shape[0] > 1:
            raise RuntimeError("bad transform")
        return t

    with pytest.raises(RuntimeError, match="bad transform"):
        xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", targets=TARGETS, reshape_transform=bad)
    assert hook_count(tiny_model.pixel_module()) == 0
    assert all(m.training for m in net.modules())
    assert not net.fc.weight.requires_grad and net.features[0].weight.requires_grad
    assert all(p.grad is None for p in net.parameters())


def test_ablation_layer_put_back_when_the_method_raises(tiny_model, rgb_images, monkeypatch) -> None:
    from pytorch_grad_cam.ablation_layer import AblationLayer

    features = tiny_model.module.features

    def boom(self, *args, **kwargs) -> None:
        raise RuntimeError("ablation failed")

    monkeypatch.setattr(AblationLayer, "set_next_batch", boom)
    with pytest.raises(RuntimeError, match="ablation failed"):
        xb.explain(tiny_model, rgb_images, "gradcam.AblationCAM", targets=TARGETS)
    assert tiny_model.module.features is features
    assert hook_count(tiny_model.pixel_module()) == 0


def test_errors(tiny_model, rgb_images) -> None:
    with pytest.raises(xb.UnknownMethodError, match="Did you mean 'gradcam.GradCAMPlusPlus'"):
        xb.explain(tiny_model, rgb_images, "torchcam.GradCAMPlusPlus")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['layers'\]; valid parameters are"):
        xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", layers="features")
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['layer'\]"):
        xb.explain(tiny_model, rgb_images, "gradcam.FullGrad", layer="features")
    with pytest.raises(ValueError, match="layer: 'fc' outputs shape"):
        xb.explain(tiny_model, rgb_images, "gradcam.GradCAM", layer="fc")
    with pytest.raises(ValueError, match="kernel: expected one of"):
        xb.explain(tiny_model, rgb_images, "gradcam.KPCA_CAM", kernel="gauss")
    from xai_bridge.adapters.methods import gradcam as gradcam_backend

    request = ExplainRequest(
        method="gradcam.GradCAM",
        model=tiny_model,
        images=rgb_images,
        targets=np.array([[1], [7]]),
        params={},
        seed=0,
        options={"method": "GradCAM"},
    )
    with pytest.raises(ValueError, match="targets: class 7 is out of range for a model with 5 outputs"):
        gradcam_backend.cam(request)
    with pytest.raises(xb.MethodNotApplicableError, match="needs gradients"):
        xb.explain(xb.BlackBoxModel(lambda x: np.ones((len(x), 2))), rgb_images, "gradcam.GradCAM")


def test_random_cam_is_seeded(tiny_model, rgb_images) -> None:
    a = xb.explain(tiny_model, rgb_images, "gradcam.RandomCAM", targets=TARGETS, seed=3)
    b = xb.explain(tiny_model, rgb_images, "gradcam.RandomCAM", targets=TARGETS, seed=3)
    c = xb.explain(tiny_model, rgb_images, "gradcam.RandomCAM", targets=TARGETS, seed=4)
    assert np.array_equal(a.attributions, b.attributions) and not np.allclose(a.attributions, c.attributions)
    assert a.seed == 3


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam.GradCAM", "gradcam.LayerCAM"])
def test_effnet_chelsea_max_inside_the_cat(effnet, chelsea, method) -> None:
    exp = xb.explain(effnet, chelsea, method, targets=285)
    heat = exp.attributions[0, 0]
    assert exp.params["layer"] == "bn2" and heat.shape == chelsea.shape[:2]
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert 20 <= y < 300 and 40 <= x < 370, (y, x)  # the cat fills the image except the right-hand border
    assert heat[:, :370].mean() > heat[:, 400:].mean()
    assert hook_count(effnet.pixel_module()) == 0
