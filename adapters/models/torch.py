"""Adapter for a torch ``nn.Module`` taking NCHW input, with declared preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from xai_bridge.adapters._torch import model_guard

from xai_bridge.batching import ScoreTap
from xai_bridge.errors import ModelInputError
from xai_bridge.models import Model, OutputKind
from xai_bridge.preprocess import GREY_WEIGHTS, Preprocess, require_preprocess

from ._differentiable import PixelModelBase, positive_batch_size

if TYPE_CHECKING:
    from ._table import ModelRequest

__all__ = ["PixelModule", "TorchModel", "wrap"]


class PixelModule(nn.Module):
    """Float ``(N, 3, H, W)`` pixels in [0, 255] -> preprocessing -> user's module.

    Every step is differentiable, so attributions land on image pixels.

    Args:
        model: the user's module (kept as a child, not copied).
        preprocess: the declared preprocessing.
        softmax: append a softmax over the last axis.
        channels_last: hand the module channels-last NCHW tensors.
        sigmoid: append a sigmoid instead (multi-label heads: each class its own probability).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        softmax: bool = False,
        channels_last: bool = False,
        sigmoid: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.softmax = softmax
        self.sigmoid = sigmoid
        self.channels_last = channels_last
        factor, offset = preprocess.scale.factor_offset
        self.factor, self.offset = float(factor), float(offset)
        device = _module_device(model)
        c = preprocess.channels
        mean = preprocess.mean or (0.0,) * c
        std = preprocess.std or (1.0,) * c
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32, device=device).view(1, c, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32, device=device).view(1, c, 1, 1))
        self.tap: ScoreTap | None = None
        self.n_outputs: int | None = None
        # A half-precision module (bfloat16, float16) is fed its own dtype and answers in float32:
        # the pixels, the preprocessing and every attribution stay float32.
        self.input_dtype = _half_dtype(model)
        # The wrapper's own flag only (the user's module keeps its mode): guards then find
        # nothing to switch when the user's module is already in eval mode.
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = self._forward(x)
        if out.ndim == 2:
            self.n_outputs = int(out.shape[1])
            if self.tap is not None and not self.tap.complete:
                _offer(self.tap, x, out)
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        inp = self.prepare(x)
        if self.input_dtype is not None:
            inp = inp.to(self.input_dtype)
        out = _logits(self.model(inp))
        if out.dtype != torch.float32 and out.is_floating_point():
            out = out.float()
        if self.sigmoid:
            return torch.sigmoid(out)
        return torch.softmax(out, dim=-1) if self.softmax else out

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The declared preprocessing alone: [0, 255] NCHW pixels -> the module's input."""
        pre = self.preprocess
        if pre.resize is not None:
            x = _resize_and_crop(x, pre)
        elif pre.size is not None and tuple(x.shape[-2:]) != pre.size:
            x = _interpolate(x, pre.size, pre)
        if pre.channels == 1:
            grey = torch.tensor(GREY_WEIGHTS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
            x = (x * grey).sum(dim=1, keepdim=True)  # not a buffer: weight fingerprints stay as they were
        x = x * self.factor + self.offset
        if pre.channel_order == "BGR" and pre.channels == 3:
            x = x.flip(1)
        if pre.mean is not None or pre.std is not None:
            x = (x - self.mean) / self.std  # type: ignore[operator]  # buffers are typed Tensor | Module
        if pre.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)
        elif self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _half_dtype(model: nn.Module) -> torch.dtype | None:
    """The module's floating dtype when it is a half-precision one (bfloat16, float16), else None."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    return dtype if dtype in (torch.bfloat16, torch.float16) else None


def _interpolate(x: torch.Tensor, size: tuple[int, int], pre: Preprocess) -> torch.Tensor:
    """Resize float pixels as Pillow does (antialiased filters; nearest samples pixel centres)."""
    mode = pre.interpolation or "bilinear"
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    if mode != "bicubic":
        return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=pre.antialias)
    # Bicubic overshoots, and Pillow clamps to the pixel range after each of its two passes (width
    # first): done here too, or the results differ by up to ~10 levels on textured images, not ~1.
    if x.shape[-1] != size[1]:
        x = F.interpolate(x, size=(x.shape[-2], size[1]), mode=mode, antialias=pre.antialias).clamp(0.0, 255.0)
    if x.shape[-2] != size[0]:
        x = F.interpolate(x, size=size, mode=mode, antialias=pre.antialias).clamp(0.0, 255.0)
    return x


def _resize_and_crop(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    assert pre.size is not None
    height, width = int(x.shape[-2]), int(x.shape[-1])
    rh, rw = pre.resized_size(height, width)
    if (rh, rw) != (height, width):
        x = _interpolate(x, (rh, rw), pre)
    top, left = pre.crop_offset(rh, rw)
    return x[..., top : top + pre.size[0], left : left + pre.size[1]]


def _logits(out: Any) -> torch.Tensor:
    """The output tensor of a module returning a tensor, ``.logits`` (Hugging Face), a dict or a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, dict):
        for key in ("logits", "output", "out"):
            if isinstance(out.get(key), torch.Tensor):
                return out[key]
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise ModelInputError(
        f"model: expected the module to return a tensor, an output with .logits, a dict with 'logits' or a tuple "
        f"starting with the logits, got {type(out).__name__}; wrap it in a module returning the logits tensor"
    )


class TorchModel(PixelModelBase):
    """A torch module as a :class:`xai_bridge.models.DifferentiableModel`.

    Args:
        module: the classifier; it is never modified (mode, ``requires_grad``,
            ``.grad`` and hooks are restored after every call) nor moved.
        preprocess: what the module expects; see :class:`~xai_bridge.models.Preprocess`.
        output_kind: what the module returns.
        class_names: names of the outputs, for ``target_names`` and class-name targets.
        batch_size: largest batch run at once (gradient methods use it as is).
        tune_batch: let ``predict`` (the path of perturbation methods) pick
            the fastest chunk size up to ``batch_size`` by timing its first
            calls (see :class:`~xai_bridge.batching.BatchTuner`); False: always
            chunks of ``batch_size``.
        channels_last: feed the module channels-last tensors (its weights are
            not converted). On CPUs with oneDNN convolutions and on GPUs this
            is often faster (EfficientNet-Lite0 on CPU: ~20% for forward and
            backward); outputs equal the default's up to float rounding.
            ``None`` (the default) decides once per model, on the first guarded
            call: on when the module has a ``Conv2d`` and gives the same
            outputs for a channels-last probe image as for a contiguous one
            (modules that ``view`` or reorder their activations fail that and
            keep contiguous inputs, silently). True / False force it.
        device: the module's device, as a check (inputs always go where
            the module's parameters are); None: take it from the module.
            xai-bridge never moves a module: ``module.to("cuda")`` before
            wrapping it. ``"cuda"`` without an index matches any GPU.
        softmax: explain softmax probabilities instead of the raw outputs.
        sigmoid: explain sigmoid probabilities instead (multi-label heads,
            whose classes are not exclusive: a softmax would make them compete).
    """

    def __init__(
        self,
        module: nn.Module,
        preprocess: Preprocess,
        output_kind: OutputKind | str = OutputKind.LOGITS,
        class_names: Sequence[str] | None = None,
        batch_size: int = 32,
        device: str | torch.device | None = None,
        softmax: bool = False,
        tune_batch: bool = True,
        channels_last: bool | None = None,
        sigmoid: bool = False,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise ModelInputError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
        preprocess = require_preprocess(preprocess, "a torch module", "Preprocess.imagenet()")
        size = positive_batch_size(batch_size)
        here = _module_device(module)
        if here.type == "meta":
            raise ModelInputError(
                "module: expected a module holding weights, got one on the meta device (no data); "
                "materialise it first, e.g. module.to_empty(device='cpu') then load_state_dict(...)"
            )
        if device is not None:
            _check_device(device, here)
        self._module = module
        self._device = here
        self._pixel = PixelModule(
            module, preprocess, softmax=softmax, channels_last=bool(channels_last), sigmoid=sigmoid
        )
        self._layout_settled = channels_last is not None
        kind = OutputKind.PROBABILITIES if softmax or sigmoid else output_kind
        self._setup(preprocess, kind, class_names, size, tune_batch)

    @property
    def module(self) -> nn.Module:
        """The user's module."""
        return self._module

    def with_module(self, module: nn.Module) -> TorchModel:
        """The same adapter around another module (e.g. a re-initialised copy).

        Preprocessing, output kind, class names, batch size and output activation are this model's.
        """
        return TorchModel(
            module,
            self.preprocess,
            output_kind=self.output_kind,
            class_names=self.class_names,
            batch_size=self.batch_size,
            softmax=bool(self._pixel.softmax),
            sigmoid=bool(self._pixel.sigmoid),
        )

    @property
    def activation(self) -> str | None:
        """What turns the module's outputs into the explained ones: ``"sigmoid"``, ``"softmax"`` or None.

        For callers recording which probabilities an explanation shows
        (multi-label heads: independent sigmoids, not a softmax across classes).
        """
        return "sigmoid" if self._pixel.sigmoid else "softmax" if self._pixel.softmax else None

    @property
    def channels_last(self) -> bool:
        """Whether the module is fed channels-last tensors (decided on the first guarded call when automatic)."""
        return bool(self._pixel.channels_last)

    def _before_run(self) -> None:
        self._settle_layout()

    def guard(self, freeze_params: bool = False) -> Any:
        """Eval mode inside; mode, requires_grad, grads and hooks restored after (the layout settled first).

        Covers :meth:`pixel_module` too (it holds the user's module as a child),
        so hooks a library leaves on the pixel wrapper are removed as well.
        """
        self._settle_layout()
        return model_guard(self._pixel, eval_mode=True, freeze_params=freeze_params)

    def _settle_layout(self) -> None:
        """Decide ``channels_last`` once: on when a channels-last probe gives the contiguous probe's outputs.

        Runs before any library registers hooks (``guard`` is entered first),
        on one seeded random image at the declared input size, in eval mode
        without gradients; the global RNG is not touched. Free once decided.
        """
        if self._layout_settled:
            return
        with self.exclusive():
            if self._layout_settled:
                return
            self._layout_settled = True
            if self.preprocess.layout != "NCHW" or not any(isinstance(m, nn.Conv2d) for m in self._module.modules()):
                return
            size = self.preprocess.size or (224, 224)
            probe = torch.rand((1, 3, *size), generator=torch.Generator().manual_seed(0)) * 255.0
            probe = probe.to(self._device)
            pixel = self._pixel
            try:
                with model_guard(pixel, eval_mode=True), torch.inference_mode():
                    plain = pixel._forward(probe)
                    pixel.channels_last = True
                    fast = pixel._forward(probe)
            except Exception:  # any failure: keep contiguous inputs
                pixel.channels_last = False
                return
            # float rounding differs between the two layouts' kernels; a reordered reshape differs by O(1)
            tolerance = 1e-4 if plain.dtype in (torch.float32, torch.float64) else 1e-2
            scale = float(plain.float().abs().max()) + 1e-6
            same = plain.shape == fast.shape and float((plain.float() - fast.float()).abs().max()) <= tolerance * scale
            pixel.channels_last = bool(same)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Outputs for uint8 NHWC images, ``(N, outputs)`` float32, batched."""

        def run(b: np.ndarray) -> np.ndarray:
            return self._pixel(self.pixel_tensor(b)).float().cpu().numpy()  # type: ignore[no-any-return]

        # inside this thread's inference() block the module is guarded already (one guard for all calls)
        with nullcontext() if self._inside_inference() else self.guard(), torch.inference_mode():
            return self._chunked(run, images)

    def __repr__(self) -> str:
        return (
            f"TorchModel({type(self._module).__name__}, preprocess={self.preprocess}, "
            f"output_kind={self.output_kind.value!r}, batch_size={self.batch_size}, device={self._device})"
        )


def wrap(module: nn.Module, request: ModelRequest) -> Model:
    """``as_model``'s entry for any other torch module: its preprocessing must be declared."""
    hint = " (torchvision: preprocess=<the weights enum>, e.g. ResNet50_Weights.IMAGENET1K_V2)"
    from_torchvision = type(module).__module__.startswith("torchvision.")
    pre = request.declared(
        "a torch module",
        "Preprocess.imagenet() or Preprocess(scale='unit')"
        + (hint if from_torchvision else "")
        + "; or wrap it yourself with xai_bridge.adapters.models.TorchModel",
    )
    kind = request.kind(OutputKind.LOGITS)
    return TorchModel(module, pre, output_kind=kind, class_names=request.class_names, batch_size=request.batch_size)


def _offer(tap: ScoreTap, x: torch.Tensor, out: torch.Tensor) -> None:
    """Give ``tap`` the rows of ``out`` whose input ``x`` (pixels, NCHW) is an unperturbed image."""
    images = tap.images
    if x.ndim != 4 or tuple(x.shape[1:]) != (images.shape[3], *images.shape[1:3]):
        return
    with torch.no_grad():
        stride = ScoreTap.STRIDE
        keys = x.detach()[:, :, ::stride, ::stride].sum(dim=(1, 2, 3), dtype=torch.float64).cpu().numpy()
        for row, i in tap.candidates(keys):
            if tap.seen(i):
                continue
            ref = torch.from_numpy(images[i]).to(x.device).permute(2, 0, 1).to(x.dtype)
            if torch.equal(x[row].detach(), ref):
                tap.record(i, out[row].detach().float().cpu().numpy())


def as_device(device: str | torch.device) -> torch.device:
    """``torch.device(device)``, or a one-line :class:`ModelInputError` naming the argument."""
    try:
        return torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelInputError(
            f"device: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}; "
            "pass the module's device or omit device"
        ) from None


def _check_device(device: str | torch.device, here: torch.device) -> None:
    """Refuse a ``device`` that is not the module's, in one line; ``"cuda"`` (no index) accepts any GPU."""
    want = as_device(device)
    # Parameters always carry an index on accelerators (cuda:0) and none on the CPU; an index given
    # on one side only is not a mismatch.
    if want.type != here.type or (want.index is not None and here.index is not None and want.index != here.index):
        raise ModelInputError(
            f"device: the module is on {here}, not {want}; move it first with module.to({str(want)!r}) "
            "(xai-bridge never moves your model)"
        )


def _module_device(module: nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device("cpu")
