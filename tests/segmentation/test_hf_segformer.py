"""A Hugging Face SegFormer saved and loaded back: processor preprocessing, id2label, Grad-CAM and occlusion."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import module_state
from seg_models import NAMES, saved_segformer

import xai_bridge as xb

pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def segformer(tmp_path_factory: pytest.TempPathFactory) -> object:
    return saved_segformer(tmp_path_factory.mktemp("segformer"))


def test_logits_are_the_processor_and_post_processing_of_transformers(segformer: object) -> None:
    from transformers import SegformerImageProcessor

    processor = SegformerImageProcessor.from_pretrained(segformer.name_or_path)  # type: ignore[attr-defined]
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # the processor's size: no resize
    seg = xb.HFSegmenter(segformer)  # the processor saved beside the model
    assert seg.class_names == NAMES
    ours = seg.segment(image[None])[0]
    with torch.no_grad():
        out = segformer(**processor(images=image, return_tensors="pt"))  # type: ignore[operator]
        ref = torch.nn.functional.interpolate(out.logits, size=(32, 32), mode="bilinear", align_corners=False)[0]
    np.testing.assert_allclose(ours, ref.numpy(), rtol=1e-4, atol=1e-6 * float(ref.abs().max()))
    predicted = processor.post_process_semantic_segmentation(out, target_sizes=[(32, 32)])[0].numpy()
    np.testing.assert_array_equal(ours.argmax(0), predicted)


def test_gradcam_and_occlusion_explain_a_region(segformer: object) -> None:
    image = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    before = module_state(segformer)
    cam = xb.explain(segformer, image, "gradcam.GradCAM")
    assert cam.params["layer"] and cam.attributions.shape == (1, 1, 32, 32)
    assert np.abs(cam.attributions).max() > 0 and str(cam.target_names[0, 0]).split(" (")[0] in NAMES
    region = np.zeros((32, 32), bool)
    region[8:24, 8:24] = True
    occ = xb.explain(segformer, image, "builtin.Occlusion", targets=xb.Region(region, "blue"), window=8, stride=8)
    assert list(occ.target_names[0]) == ["blue (25.0% of pixels)"] and occ.targets[0, 0] == 2
    assert np.abs(occ.attributions).max() > 0
    assert module_state(segformer) == before
