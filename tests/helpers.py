"""Asserts and snapshots shared by the test modules."""

from __future__ import annotations

from typing import Any

import numpy as np


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
