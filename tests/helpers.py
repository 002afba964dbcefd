"""Asserts and snapshots shared by the test modules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: The repository's root (tests live one or two folders below it).
REPO = Path(__file__).resolve().parents[1]


def assert_close(actual: Any, expected: Any, rel: float = 1e-5) -> None:
    """Equal to ``rel`` times the largest expected magnitude (values here can be ~1e-7 per pixel)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert actual.shape == expected.shape and scale > 0
    assert np.abs(actual - expected).max() <= rel * scale, (np.abs(actual - expected).max(), scale)


def module_state(net: Any) -> list[Any]:
    """Everything of a torch module a method must leave as it was: modes, submodule identity, requires_grad,
    .grad, hooks and the weights' values."""
    from xai_bridge.adapters._torch import hook_count

    return (
        [(n, m.training, type(m), id(m)) for n, m in net.named_modules()]
        + [
            (n, p.requires_grad, p.grad is None, p.detach().clone().numpy().tobytes())
            for n, p in net.named_parameters()
        ]
        + [hook_count(net)]
    )


def random_images(shape: tuple[int, ...], seed: int = 0) -> Any:
    """Seeded uniform uint8 pixels of ``shape`` (``(N, H, W, 3)`` images, or one ``(H, W, 3)`` image)."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
