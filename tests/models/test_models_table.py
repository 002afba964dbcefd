"""as_model's adapter table, the one error for a missing preprocess, and the old import paths of the split."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from conftest import TINY_PREPROCESS
from helpers import random_images
from xai_bridge.adapters.models import ArrayModel, OnnxModel, TorchModel, _table
from xai_bridge.adapters.models._differentiable import PixelModelBase
from xai_bridge.adapters.models.transformers import transformers_model

import xai_bridge as xb
from xai_bridge.errors import ParameterError


def test_table_keeps_the_order_of_precedence() -> None:
    # bundled models by name, a tagger before any callable, Keras before torch, Hugging Face and timm before
    # other torch modules
    names = [entry.name for entry in _table.ADAPTERS]
    assert names == ["bundled model", "tagger", "keras", "onnx", "transformers", "timm", "torch", "function"]
    bundled = _table.ADAPTERS[0]
    assert bundled.recognise("efficientnet_lite0") and not bundled.recognise("model.onnx")
    for entry in _table.ADAPTERS:
        module, function = entry.target.split(":")
        assert module and function == "wrap"


def test_recognising_and_refusing_import_no_library() -> None:
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import xai_bridge as xb
        model = xb.as_model(lambda x: np.zeros((len(x), 2)))
        assert type(model).__name__ == "BlackBoxModel", model
        try:
            xb.as_model(42)
        except xb.ModelInputError as exc:
            assert str(exc).startswith("model: expected a Model"), exc
        heavy = {"torch", "keras", "tensorflow", "onnxruntime", "transformers", "timm", "torchvision"}
        print(sorted(heavy & set(sys.modules)))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_model_protocol_imports_no_caption_code() -> None:
    # the old cycle models.py -> captions/tags.py -> explain -> contract -> models.py is gone
    code = "import sys, xai_bridge.models; print(sorted(m for m in sys.modules if m.startswith('xai_bridge.captions')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize(
    "build",
    [
        lambda net: TorchModel(net, None),  # type: ignore[arg-type]
        lambda net: TorchModel(net, "imagenet"),  # type: ignore[arg-type]
        lambda net: ArrayModel(lambda x: x, None),  # type: ignore[arg-type]
        lambda net: OnnxModel("missing.onnx", None),  # type: ignore[arg-type]
        lambda net: transformers_model(net),
        lambda net: xb.as_model(net),
        lambda net: xb.as_model("missing.onnx"),
    ],
    ids=["torch", "torch-wrong-type", "arrays", "onnx", "transformers", "as_model-torch", "as_model-onnx"],
)
def test_a_missing_preprocess_is_one_parameter_error(tiny_net, build) -> None:
    with pytest.raises(ParameterError, match=r"^preprocess: .*preprocess=") as info:
        build(tiny_net)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)  # what callers caught before


def test_a_bad_batch_size_is_a_parameter_error(tiny_net) -> None:
    for bad in (0, -1, True, "many"):
        with pytest.raises(ParameterError, match="batch_size: expected a positive integer"):
            TorchModel(tiny_net, TINY_PREPROCESS, batch_size=bad)  # type: ignore[arg-type]


def test_old_import_paths_still_work() -> None:
    from xai_bridge.adapters.models.tags import TagModel

    from xai_bridge.captions import TagModel as from_captions
    from xai_bridge.models import Preprocess, Scale
    from xai_bridge.preprocess import Preprocess as Declared
    from xai_bridge.preprocess import Scale as DeclaredScale

    assert Preprocess is Declared is xb.Preprocess and Scale is DeclaredScale is xb.Scale
    assert from_captions is TagModel is xb.TagModel


def test_taggers_are_recognised_by_the_table() -> None:
    class Tagger:
        def tag(self, images: np.ndarray) -> list[dict[str, float]]:
            return [{"dog": 0.9} for _ in images]

    model = xb.as_model(Tagger(), batch_size=7)
    assert isinstance(model, xb.TagModel) and model.batch_size == 7


def test_image_key_is_the_caption_models_key() -> None:
    # TagModel's memo and estimate_calls' dry run look answers up by the same key
    from xai_bridge.captions import model as caption_model
    from xai_bridge.models import image_key

    image = random_images((5, 7, 3))
    assert image_key(image) == caption_model._digest(image)
    assert image_key(image) != image_key(image.reshape(7, 5, 3))


def test_torch_models_share_the_differentiable_base(tiny_model) -> None:
    assert isinstance(tiny_model, PixelModelBase) and isinstance(tiny_model, xb.DifferentiableModel)
    with torch.no_grad(), tiny_model.explaining():
        assert torch.is_grad_enabled()


def test_the_model_core_imports_adapters_only_through_the_table() -> None:
    """models.py and preprocess.py name no adapter: the one import into adapters/ is adapter_table()."""
    import ast
    from pathlib import Path

    root = Path(xb.__file__).parent
    found = []
    for name in ("models.py", "preprocess.py"):
        for node in ast.walk(ast.parse((root / name).read_text())):
            if isinstance(node, ast.ImportFrom) and "adapters" in (node.module or ""):
                found.append((name, node.module, [a.name for a in node.names]))
    assert found == [("models.py", "adapters.models", ["_table"])]
