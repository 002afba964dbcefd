"""Factories for CLI tests (`cli_tiny:tiny`, `cli_tiny:box`); tests/ is on sys.path."""

import numpy as np
import torch


def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()


def box():
    return lambda x: np.stack([x[..., 0].mean(axis=(1, 2)), x[..., 2].mean(axis=(1, 2))], axis=1)
