"""ONNX graphs (exported from the tiny torch net) give the same perturbation results as the torch model."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'xai-bridge[onnx]')")
pytest.importorskip("onnx", reason="onnx is not installed (pip install 'xai-bridge[onnx]')")

from conftest import TINY_PREPROCESS, make_tiny_net  # noqa: E402
from helpers import random_images  # noqa: E402
from xai_bridge.adapters.models import OnnxModel  # noqa: E402

import xai_bridge as xb  # noqa: E402
from xai_bridge.errors import MethodNotApplicableError  # noqa: E402


class _NHWC(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 3, 1, 2))


def export(module: torch.nn.Module, path: Path, shape: tuple[int, ...], dynamic: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice (the new one needs onnxscript)
        torch.onnx.export(
            module,
            torch.zeros(shape),
            str(path),
            input_names=["pixels"],
            output_names=["logits"],
            dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}} if dynamic else None,
            dynamo=False,
        )
    return path


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    return make_tiny_net(0)


@pytest.fixture(scope="module")
def onnx_path(net: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", (1, 3, 32, 32), dynamic=True)


@pytest.fixture
def images() -> np.ndarray:
    return random_images((2, 32, 32, 3), seed=1)  # the model's size


def torch_model(net: torch.nn.Module) -> xb.TorchModel:
    return xb.TorchModel(net, TINY_PREPROCESS, batch_size=8, tune_batch=False)


def test_session_and_path_read_the_graph(net: torch.nn.Module, onnx_path: Path, images: np.ndarray) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = torch_model(net).predict(images)
    for given in (session, onnx_path, str(onnx_path)):
        model = xb.models.as_model(given, preprocess=xb.Preprocess(mean=(0.5,) * 3, std=(0.25,) * 3))
        assert isinstance(model, OnnxModel)
        assert (model.input_name, model.output_name, model.fixed_batch) == ("pixels", "logits", None)
        assert model.preprocess.layout == "NCHW" and model.preprocess.size == (32, 32)  # size from the graph
        np.testing.assert_allclose(model.predict(images), expected, rtol=1e-4, atol=1e-5)


def test_fixed_batch_and_nhwc_graph(net: torch.nn.Module, tmp_path: Path, images: np.ndarray) -> None:
    path = export(_NHWC(net), tmp_path / "nhwc1.onnx", (1, 32, 32, 3), dynamic=False)
    model = OnnxModel(path, TINY_PREPROCESS, batch_size=8)
    assert model.fixed_batch == 1 and model.preprocess.layout == "NHWC"
    batch = np.concatenate([images, images[::-1], images[:1]])  # 5 images, one run each
    np.testing.assert_allclose(model.predict(batch), torch_model(net).predict(batch), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("lime", {"num_samples": 100}),
        ("builtin.occlusion", {"window": 8, "stride": 8}),
        ("captum.Occlusion", {"window": 8, "stride": 8}),
        ("shap.partition", {"max_evals": 64}),
        ("rise", {"n_masks": 64}),
    ],
)
def test_perturbation_methods_equal_the_torch_model(
    net: torch.nn.Module, onnx_path: Path, images: np.ndarray, method: str, params: dict[str, object]
) -> None:
    onnx = xb.explain(onnx_path, images, method, targets=[[1], [3]], preprocess=TINY_PREPROCESS, **params)
    ref = xb.explain(torch_model(net), images, method, targets=[[1], [3]], **params)
    assert np.abs(ref.attributions).max() > 0
    np.testing.assert_allclose(
        onnx.attributions, ref.attributions, rtol=1e-4, atol=1e-4 * np.abs(ref.attributions).max()
    )
    np.testing.assert_allclose(onnx.scores, ref.scores, rtol=1e-4, atol=1e-5)


def test_gradient_methods_are_refused(onnx_path: Path, images: np.ndarray) -> None:
    with pytest.raises(MethodNotApplicableError, match="needs gradients"):
        xb.explain(onnx_path, images, "captum.Saliency", preprocess=TINY_PREPROCESS)


def test_bad_output_and_missing_file(onnx_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"output: expected one of the graph's outputs \['logits'\]"):
        OnnxModel(onnx_path, TINY_PREPROCESS, output="probs")
    with pytest.raises(FileNotFoundError, match="model: no ONNX file"):
        OnnxModel(tmp_path / "missing.onnx", TINY_PREPROCESS)


def test_as_model_imports_neither_keras_nor_onnxruntime() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, xai_bridge as xb\n"
        "xb.models.as_model(lambda x: np.zeros((len(x), 2)))\n"
        "xb.models.as_model(lambda x: np.zeros((len(x), 2)), preprocess=xb.Preprocess())\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'onnxruntime', 'onnx', 'torch') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
