"""Guided methods on any ReLU family: clamped ReLUs rewritten as ``nn.ReLU`` + clamp while a run lasts.

captum's GuidedBackprop / Deconvolution and pytorch-grad-cam's guided
backprop change the backward pass of ``nn.ReLU`` modules only. ``nn.ReLU6``
(MobileNet, EfficientNet-Lite: 33 of them and no ``nn.ReLU`` in the bundled
model) and ``nn.Hardtanh(0, m)`` are the same function with a ceiling,
``min(ReLU(x), m)``, yet the libraries leave them alone, so the "guided" map
is silently the plain gradient. :func:`guided_relus` swaps each of them for
``_ClampedReLU`` (an ``nn.ReLU`` followed by the clamp: the same outputs, bit
for bit), which the libraries recognise, and puts the user's modules back in
``finally``.

A ReLU called as a function in ``forward`` (``F.relu``, ``torch.relu``,
``x.relu()``, ``F.relu6``, ``F.hardtanh``) cannot be swapped: one forward
pass of the first image counts them (a ``TorchFunctionMode``), and the run
is refused in one line when any is outside a ReLU module, as it is when the
model has no ReLU at all (GELU / SiLU networks), where a guided map would be
the plain gradient under another name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from xai_bridge.errors import MethodNotApplicableError

__all__ = ["guided_relus"]

#: ReLU-family functions a forward pass may call outside any module (counted by the probe).
_RELU_FUNCTIONS = frozenset(
    {
        F.relu,
        F.relu_,
        F.relu6,
        F.hardtanh,
        F.hardtanh_,
        torch.relu,
        torch.relu_,
        torch.Tensor.relu,
        torch.Tensor.relu_,
    }
)


class _ClampedReLU(nn.Sequential):
    """``min(ReLU(x), ceiling)``: ``nn.ReLU6`` / ``nn.Hardtanh(0, ceiling)`` with an ``nn.ReLU`` the libraries see."""

    def __init__(self, ceiling: float) -> None:
        super().__init__(nn.ReLU(), _Ceiling(ceiling))


class _Ceiling(nn.Module):
    """``clamp(x, max=ceiling)``: the part of a clamped ReLU above the ReLU."""

    def __init__(self, ceiling: float) -> None:
        super().__init__()
        self.ceiling = float(ceiling)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, max=self.ceiling)


class _Probe(TorchFunctionMode):
    """Counts ReLU-family function calls made outside an ``nn.ReLU`` module's forward."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.functional = 0
        self.modules = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in _RELU_FUNCTIONS and self.depth == 0:
            self.functional += 1
        return func(*args, **(kwargs or {}))

    def enter(self, _module: nn.Module, _args: Any) -> None:
        self.depth += 1
        self.modules += 1

    def leave(self, _module: nn.Module, _args: Any, _out: Any) -> None:
        self.depth -= 1


def _swap(net: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """Replace every clamped ReLU by a :class:`_ClampedReLU`; returns ``(parent, name, original)`` to put back."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.Hardtanh) and float(child.min_val) == 0.0:  # nn.ReLU6 is Hardtanh(0, 6)
                parent._modules[name] = _ClampedReLU(float(child.max_val))
                swapped.append((parent, name, child))
    return swapped


def _probe(net: nn.Module, x: torch.Tensor) -> _Probe:
    """One forward pass of ``x`` (no grad) counting ReLU modules and functional ReLUs."""
    probe = _Probe()
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    handles = [
        h for m in relus for h in (m.register_forward_pre_hook(probe.enter), m.register_forward_hook(probe.leave))
    ]
    try:
        with torch.no_grad(), probe:
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    return probe


@contextmanager
def guided_relus(net: nn.Module, x: torch.Tensor, method: str) -> Iterator[int]:
    """Make the guided rule of ``method`` apply to every ReLU of ``net`` while the context is open.

    Args:
        net: the pixel module (its modules are swapped in place and restored).
        x: one input batch for the probe pass (its first image is used).
        method: the registered name, for the error messages.

    Yields:
        How many clamped ReLUs were rewritten.

    Raises:
        MethodNotApplicableError: a functional ReLU, or no ReLU at all.
    """
    swapped = _swap(net)
    try:
        probe = _probe(net, x[:1])
        if probe.functional:
            raise MethodNotApplicableError(
                f"model: {method} changes the gradient of nn.ReLU modules, but the model's forward calls a ReLU "
                f"as a function {probe.functional} time(s) (F.relu, torch.relu, x.relu(), F.relu6), where no "
                f"rule applies; use nn.ReLU modules in the model, or captum.Saliency for the plain gradient"
            )
        if not probe.modules:
            raise MethodNotApplicableError(
                f"model: {method} changes the gradient of ReLUs, and the model has none (its activations are "
                f"e.g. GELU or SiLU), so the map would be the plain gradient; use captum.Saliency instead"
            )
        yield len(swapped)
    finally:
        for parent, name, original in reversed(swapped):
            parent._modules[name] = original
