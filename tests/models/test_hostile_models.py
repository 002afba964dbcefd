"""Issue 28's hostile cases for the model adapters: each fault class once, each error one line.

Silent wrong results (class names that do not name the outputs, a weights
enum of another task, multi-label heads shown as softmax, image-shaped
outputs, prompts equal after tokenisation) and raw library errors on a
user's first model (grey models, damaged ONNX files, a truncated processor
config, a processor that does not resize). Keras cases live in
``test_models_keras.py`` (they need TensorFlow).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TINY_PREPROCESS, make_tiny_net  # noqa: E402
from torch import nn  # noqa: E402
from xai_bridge.adapters.models import TorchModel  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.errors import ModelInputError, XaiBridgeError  # noqa: E402


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(err.value)
    assert isinstance(err.value, XaiBridgeError) and "\n" not in text, text
    return text


def _images(n: int = 1, size: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


class _Grey(nn.Module):
    """A one-channel classifier: conv(1->4) -> pool -> linear(4->3)."""

    def __init__(self, out: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class _ImageOut(nn.Module):
    """An image-to-image network: (N, 3, H, W) -> (N, 3, 8, 8)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool2d(x, 8)


# ------------------------------------------------------------------------------------- names vs outputs


def test_two_names_for_three_outputs_is_one_line_not_an_index_error() -> None:
    net = nn.Sequential(make_tiny_net(0), nn.Linear(5, 3))
    model = TorchModel(net, TINY_PREPROCESS, class_names=["cat", "dog"])
    with pytest.raises(ModelInputError) as err:
        xb.explain(model, _images(), "builtin.Saliency", targets=2)
    assert "class_names: expected 3 names" in _one_line(err)


def test_imagenet_weights_on_a_ten_class_head_are_refused() -> None:
    tv = pytest.importorskip("torchvision")
    net = tv.models.resnet18(num_classes=10).eval()
    weights = tv.models.ResNet18_Weights.IMAGENET1K_V1  # its meta and transforms: nothing downloaded
    with pytest.raises(ModelInputError) as err:
        xb.explain(net, _images(size=64), "builtin.Saliency", preprocess=weights, targets=xb.top_k(3))
    text = _one_line(err)
    assert "expected 10 names" in text and "got 1000" in text and "'tench'" in text


def test_weights_of_a_video_task_are_refused() -> None:
    tv = pytest.importorskip("torchvision")
    from torchvision.models.video import R3D_18_Weights

    with pytest.raises(ModelInputError) as err:
        xb.as_model(tv.models.resnet18(num_classes=400), preprocess=R3D_18_Weights.KINETICS400_V1)
    assert "not an image-classification preset" in _one_line(err)


def test_image_shaped_torch_outputs_are_refused() -> None:
    with pytest.raises(ModelInputError) as err:
        xb.explain(_ImageOut(), _images(), "lime.Lime", preprocess=TINY_PREPROCESS, num_samples=8)
    assert "expected outputs of shape" in _one_line(err)  # batching's check, the one ONNX now shares


# ---------------------------------------------------------------------------------------------- ONNX


def _export(module: nn.Module, path: Path, shape: tuple[int, ...]) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.zeros(shape),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            dynamo=False,
        )
    return path


def test_onnx_image_shaped_output_is_refused_not_flattened(tmp_path: Path) -> None:
    path = _export(_ImageOut(), tmp_path / "img.onnx", (1, 3, 32, 32))
    with pytest.raises(ModelInputError) as err:
        xb.explain(str(path), _images(), "lime.Lime", preprocess=TINY_PREPROCESS, num_samples=8)
    assert "(1, 3, 8, 8)" in _one_line(err)


@pytest.mark.parametrize("content", [b"", b"not an onnx model at all", "truncated"])
def test_damaged_onnx_files_are_one_line(tmp_path: Path, content: Any) -> None:
    if content == "truncated":
        whole = _export(make_tiny_net(0), tmp_path / "whole.onnx", (1, 3, 32, 32)).read_bytes()
        content = whole[: len(whole) // 2]
    pytest.importorskip("onnxruntime")
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelInputError) as err:
        xb.as_model(str(path), preprocess=TINY_PREPROCESS)
    assert "is not a loadable ONNX model" in _one_line(err)


def test_onnx_directory_and_missing_path(tmp_path: Path) -> None:
    folder = tmp_path / "model.onnx"
    folder.mkdir()
    with pytest.raises(ModelInputError) as err:
        xb.as_model(str(folder), preprocess=TINY_PREPROCESS)
    assert "directory" in _one_line(err)
    with pytest.raises(FileNotFoundError) as missing:
        xb.as_model(str(tmp_path / "none.onnx"), preprocess=TINY_PREPROCESS)
    _one_line(missing)


def test_onnx_grey_input_gets_grey_pixels(tmp_path: Path) -> None:
    path = _export(_Grey(), tmp_path / "grey.onnx", (1, 1, 32, 32))
    model = xb.as_model(str(path), preprocess=xb.Preprocess(size=(32, 32)))
    images = _images(2)
    grey = np.stack([np.asarray(__import__("PIL.Image").Image.fromarray(im).convert("L")) for im in images])
    with torch.no_grad():
        want = _Grey()(torch.from_numpy(grey[:, None].astype(np.float32) / 255.0)).numpy()
    np.testing.assert_allclose(model.predict(images), want, atol=0.02)


# ------------------------------------------------------------------------------------ grey torch models


def test_grey_preprocess_numpy_and_torch_paths_agree() -> None:
    pre = xb.Preprocess(size=(16, 16), channels=1, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert pre.mean == (0.5,) and pre.std == (0.25,)
    model = TorchModel(_Grey(), pre)
    images = _images(2, size=24)
    via_torch = model.predict(images)
    with torch.no_grad():
        via_numpy = _Grey()(torch.from_numpy(pre.apply(images))).numpy()
    np.testing.assert_allclose(via_torch, via_numpy, atol=0.03)
    exp = xb.explain(model, images, "captum.IntegratedGradients", n_steps=8)
    assert exp.attributions.shape[:3] == (2, 1, 24) and np.isfinite(exp.attributions).all()


def test_grey_model_with_rgb_preprocess_is_one_line() -> None:
    with pytest.raises(ModelInputError) as err:
        xb.explain(_Grey(), _images(), "builtin.Saliency", preprocess=xb.Preprocess(size=(32, 32)))
    assert "failed on its first input" in _one_line(err) and "channels=1" in str(err.value)


def test_preprocess_channels_must_be_one_or_three() -> None:
    with pytest.raises(XaiBridgeError, match="Preprocess.channels"):
        xb.Preprocess(channels=2)


def test_timm_in_chans_1_is_explained() -> None:
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet18", in_chans=1, num_classes=4, pretrained=False).eval()
    model = xb.as_model(net)
    assert model.preprocess.channels == 1
    exp = xb.explain(net, _images(size=48), "builtin.Saliency")
    assert np.isfinite(exp.attributions).all()


# ------------------------------------------------------------------------------------------ transformers


def _hf_resnet(tmp_path: Path, **config: Any) -> Any:
    pytest.importorskip("transformers")
    from hf_tiny import saved_hf_resnet

    return saved_hf_resnet(tmp_path, num_labels=3, **config)


def test_multi_label_hf_model_gives_sigmoid_probabilities(tmp_path: Path) -> None:
    net = _hf_resnet(tmp_path, problem_type="multi_label_classification")
    model = xb.as_model(net)
    assert model.output_kind is xb.OutputKind.PROBABILITIES and model.activation == "sigmoid"
    images = _images(2)
    with torch.no_grad():
        logits = net(torch.from_numpy(model.preprocess.apply(images))).logits
    np.testing.assert_allclose(model.predict(images), torch.sigmoid(logits).numpy(), atol=1e-5)


def test_hf_num_channels_1_is_explained(tmp_path: Path) -> None:
    net = _hf_resnet(tmp_path, num_channels=1)
    exp = xb.explain(net, _images(), "builtin.Saliency")
    assert np.isfinite(exp.attributions).all()


def test_truncated_preprocessor_config_is_one_line(tmp_path: Path) -> None:
    net = _hf_resnet(tmp_path)
    config = tmp_path / "preprocessor_config.json"
    config.write_text(config.read_text()[:40])
    with pytest.raises(ModelInputError) as err:
        xb.as_model(net)
    assert "not a readable preprocessor_config.json" in _one_line(err)


def test_processor_without_resize_and_another_image_size_is_one_line(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(
        image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_labels=3
    )
    net = transformers.ViTForImageClassification(cfg).eval()
    processor = transformers.ViTImageProcessor(do_resize=False)
    json.dumps(processor.to_dict())
    with pytest.raises(ModelInputError) as err:
        xb.explain(net, _images(size=40), "builtin.Saliency", preprocess=processor)
    assert "model: failed on its first input (40x40" in _one_line(err)


# -------------------------------------------------------------------------------------------- zero-shot


def test_prompts_equal_after_tokenisation_are_refused() -> None:
    from xai_bridge.adapters.models._clip_towers import _refuse_same_tokens

    ids = torch.tensor([[1, 5, 6, 2, 0], [1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    with pytest.raises(ModelInputError) as err:
        _refuse_same_tokens(["a photo of a cat", "A photo of a cat ", "a dog"], ids, None)
    assert "'a photo of a cat' and 'A photo of a cat '" in _one_line(err)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    _refuse_same_tokens(["a", "b", "c"], ids, mask)  # the padding differs: different prompts


def test_zero_shot_model_refuses_prompts_equal_after_tokenisation() -> None:
    pytest.importorskip("transformers")
    import tempfile

    from hf_tiny import tiny_text_config, write_clip_vocab
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    with tempfile.TemporaryDirectory() as folder:
        tok = CLIPTokenizer(*map(str, write_clip_vocab(Path(folder))))
        torch.manual_seed(0)
        vision = dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
        clip = CLIPModel(CLIPConfig(text_config=tiny_text_config(tok), vision_config=vision, projection_dim=8)).eval()
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        with pytest.raises(ModelInputError) as err:
            xb.ZeroShotModel(clip, ["a photo of a cat", "A photo of a cat "], tokenizer=tok, image_processor=processor)
        assert "differ after tokenisation" in _one_line(err)
