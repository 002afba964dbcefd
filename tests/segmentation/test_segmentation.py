"""Semantic segmentation: region targets, the region score, parity with pytorch-grad-cam's tutorial, errors."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import module_state, random_images
from seg_models import ColourSegmenter, scene

import xai_bridge as xb
from xai_bridge.segmentation import SegmentationScoreModel, explain_segmentation, region_scores

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def minmax(a: np.ndarray) -> np.ndarray:
    return (a - a.min()) / (a.max() - a.min())


def test_region_score_is_the_summed_class_logits() -> None:
    logits = np.arange(2 * 3 * 2 * 2, dtype=float).reshape(2, 3, 2, 2)
    regions = np.array([[[1, 0], [0, 1]], [[1, 1], [1, 1]]], bool)
    got = region_scores(logits, regions, np.array([2, 0]))
    np.testing.assert_allclose(got, [[8 + 11, 0 + 1 + 2 + 3], [20 + 23, 12 + 13 + 14 + 15]])


def test_default_targets_are_the_predicted_classes_biggest_first() -> None:
    seg = ColourSegmenter()
    [exp] = explain_segmentation(seg, scene(), "builtin.Occlusion", window=4, stride=4)
    assert list(exp.target_names[0]) == [
        "background (77.2% of pixels)",
        "blue (15.0% of pixels)",
        "red (7.8% of pixels)",
    ]
    np.testing.assert_array_equal(exp.targets, [[0, 2, 1]])
    regions = exp.extras["regions"]
    assert regions.shape == (1, 3, 32, 40) and regions.dtype == bool
    assert regions[0, 2, 4:14, 4:14].all() and regions[0, 2].sum() == 100
    # scores: the class's mean softmax probability over the region on the unperturbed image
    logits = seg.segment(scene()[None])[0]
    probs = np.exp(logits) / np.exp(logits).sum(0)
    assert exp.scores[0, 2] == pytest.approx(probs[1][regions[0, 2]].mean(), rel=1e-5)
    # occluding the red square lowers the red region's score; windows that miss it change nothing
    red = exp.attributions[0, 2].copy()
    assert red[4:14, 4:14].min() > 0
    red[4:16, 4:16] = 0  # the 4x4 windows touching the square
    assert not red.any()


def test_regions_of_one_image_cost_one_image_of_perturbations() -> None:
    one, two = ColourSegmenter(), ColourSegmenter()
    mask = np.zeros((32, 40), bool)
    mask[0:4, 0:40] = True
    a = xb.explain(one, scene(), "builtin.RISE", targets="red", n_masks=40, seed=1)
    b = xb.explain(two, scene(), "builtin.RISE", targets=["red", xb.Region(mask, "background")], n_masks=40, seed=1)
    assert one.images == two.images and a.n_model_evals == b.n_model_evals
    np.testing.assert_allclose(b.attributions[:, :1], a.attributions, rtol=1e-5)
    assert list(b.target_names[0]) == ["red (7.8% of pixels)", "background (12.5% of pixels)"]
    # the score model is the numpy one for a black-box segmenter, with the region score as outputs
    model = SegmentationScoreModel(one, b.extras["regions"][0], b.targets[0], ["r", "b"])
    expected = region_scores(one.segment(scene()[None]), b.extras["regions"][0], b.targets[0])
    np.testing.assert_allclose(model.predict(scene()[None]), expected, rtol=1e-6)


def test_per_image_targets_stack_into_one_explanation() -> None:
    images = np.stack([scene(), scene()[:, ::-1]])
    exp = xb.explain(ColourSegmenter(), images, "builtin.Occlusion", targets=["red", "blue"], window=8, stride=8)
    assert exp.attributions.shape == (2, 1, 32, 40)
    assert [str(n) for n in exp.target_names[:, 0]] == ["red (7.8% of pixels)", "blue (15.0% of pixels)"]
    np.testing.assert_array_equal(exp.targets, [[1], [2]])


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ("bleu", "targets: the segmenter knows no class named 'bleu'; did you mean 'blue'?"),
        ("red", "targets: 'red' is predicted on no pixel of image 0 (predicted: background 100.0%); pass xb.Region("),
        (7, "targets: class 7 is out of range for a segmenter with 3 classes"),
    ],
)
def test_bad_targets_one_line(targets: object, message: str) -> None:
    image = scene() if targets != "red" else np.full((32, 40, 3), 120, np.uint8)
    with pytest.raises(xb.ParameterError) as err:
        xb.explain(ColourSegmenter(), image, "builtin.Occlusion", targets=targets)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_regions_one_line() -> None:
    with pytest.raises(xb.ParameterError, match=r"^Region.mask: the mask of 'red' is empty .*pass a mask that marks"):
        xb.Region(np.zeros((32, 40), bool), "red")
    with pytest.raises(xb.ParameterError, match=r"^targets: the Region mask of 'red' is 8x8 but image 0 is 32x40"):
        xb.explain(ColourSegmenter(), scene(), "builtin.Occlusion", targets=xb.Region(np.ones((8, 8), bool), "red"))


def test_a_gradient_method_on_a_black_box_segmenter_is_refused_before_running() -> None:
    seg = ColourSegmenter()
    with pytest.raises(xb.MethodNotApplicableError, match=r"^method: 'gradcam.GradCAM' needs gradients, but Colour"):
        xb.explain(seg, scene(), "gradcam.GradCAM")
    assert seg.images == 0


@pytest.mark.slow
def test_gradcam_equals_the_tutorial_recipe_on_deeplabv3() -> None:
    """pytorch-grad-cam's semantic segmentation tutorial, called directly, on the same model and region."""
    torch = pytest.importorskip("torch")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4).eval()
    before = module_state(net)
    image = random_images((64, 80, 3), seed=3)
    exp = xb.explain(net, image, "gradcam.GradCAM", layer="backbone.16")  # "top1": the biggest predicted class
    assert module_state(net) == before

    class SegmentationModelOutputWrapper(torch.nn.Module):  # the tutorial's wrapper
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(x)["out"]

    model = SegmentationModelOutputWrapper(net)
    input_tensor = torch.from_numpy(((image / 255.0 - MEAN) / STD).transpose(2, 0, 1)[None].astype(np.float32))
    output = model(input_tensor)
    category = int(exp.targets[0, 0])  # the class predicted on the most pixels
    mask_float = np.float32(output[0].argmax(dim=0).detach().numpy() == category)
    np.testing.assert_array_equal(exp.extras["regions"][0, 0], mask_float.astype(bool))
    # the mobilenet backbone's last stage, as layer4 is ResNet's
    with GradCAM(model=model, target_layers=[net.backbone["16"]]) as cam:
        grayscale_cam = cam(input_tensor=input_tensor, targets=[SemanticSegmentationTarget(category, mask_float)])[0]
    assert np.abs(minmax(exp.attributions[0, 0]) - grayscale_cam).max() < 1e-5
    net.zero_grad(set_to_none=True)
    assert module_state(net)[:-1] == before[:-1]


@pytest.mark.slow
def test_ig_and_shap_run_end_to_end_on_deeplabv3() -> None:
    torch = pytest.importorskip("torch")
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    net = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4).eval()
    before = module_state(net)
    image = random_images((32, 32, 3), seed=4)
    ig = xb.explain(net, image, "captum.IntegratedGradients", n_steps=4)
    assert ig.attributions.shape == (1, 1, 32, 32) and np.isfinite(ig.attributions).all()
    part = xb.explain(net, image, "shap.Partition", budget=16)
    assert part.attributions.shape == (1, 1, 32, 32) and np.isfinite(part.attributions).all()
    assert list(part.target_names[0]) == list(ig.target_names[0]) and part.params["segmenter"] == "TorchvisionSegmenter"
    assert module_state(net) == before
