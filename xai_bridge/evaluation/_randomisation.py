"""Model-parameter randomisation (Adebayo et al. 2018): explanations of a re-initialised copy, compared."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xai_bridge._seeding import GLOBAL_RNG_LOCK
from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.explanation import Explanation
from xai_bridge.models import CountingModel, DifferentiableModel

from ._quantus import _explain_like

if TYPE_CHECKING:  # pragma: no cover
    from ._settings import Randomisation


def randomised_copy(model: DifferentiableModel, layers: Sequence[str] | None, seed: int, he: bool = False) -> Any:
    """A ``TorchModel`` around a deep copy of ``model.module`` with ``layers`` re-initialised.

    Each named submodule (and its children) with a ``reset_parameters`` /
    ``reset_running_stats`` method is reset under ``torch.manual_seed(seed)``
    inside a forked RNG state; the user's module is never touched.

    Args:
        model: a :class:`~xai_bridge.models.DifferentiableModel` (e.g. ``TorchModel``).
        layers: dotted submodule names; None means the last submodule with parameters.
        seed: seed of the re-initialisation.
        he: re-initialise weights of two or more dims He-normal (fan in,
            biases zero) instead of by ``reset_parameters``: a deep network
            keeps the scale of its activations. PyTorch's default init
            shrinks them by a constant per layer (~1e-7 at EfficientNet's
            head): gradients stay exact, but CAM maps fall to ~1e-11, under
            the epsilons libraries add when they scale a map.

    Returns:
        The new ``TorchModel`` (same preprocessing, output kind, class names, batch size).
    """
    import torch

    inner: Any = model.wrapped if isinstance(model, CountingModel) else model
    if not callable(getattr(inner, "with_module", None)):
        raise ParameterError(
            f"model: randomisation re-initialises a torch module, got {type(inner).__name__}; wrap the module "
            "with xb.TorchModel(module, preprocess)"
        )
    module = inner.module
    net = copy.deepcopy(module)
    named = dict(net.named_modules())
    if layers is None:
        with_params = [n for n, m in net.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
        if not with_params:
            raise ParameterError("layers: the module has no submodule with parameters to randomise")
        layers = (with_params[-1],)
    missing = [name for name in layers if name not in named]
    if missing:
        raise ParameterError(f"layers: no submodule named {missing}; some valid names: {[n for n in named if n][-10:]}")
    with GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in layers:
            for sub in named[name].modules():
                reset = getattr(sub, "reset_parameters", None)
                if he and _he_normal(sub):
                    continue
                if callable(reset):
                    reset()
                elif any(True for _ in sub.parameters(recurse=False)):
                    for p in sub.parameters(recurse=False):
                        p.normal_(0.0, 0.01)
    return inner.with_module(net)


def _he_normal(module: Any) -> bool:
    """He-normal weights (fan in) and zero biases for a module with a weight of two or more dims; False if none."""
    from torch import nn

    weight = getattr(module, "weight", None)
    if not isinstance(weight, nn.Parameter) or weight.ndim < 2:
        return False
    nn.init.kaiming_normal_(weight, nonlinearity="relu")
    bias = getattr(module, "bias", None)
    if isinstance(bias, nn.Parameter):
        nn.init.zeros_(bias)
    return True


def _randomisation(metric: Randomisation, model: CountingModel, exp: Explanation, seed: int) -> np.ndarray:
    from scipy.stats import spearmanr

    inner = model.wrapped
    if not (isinstance(inner, DifferentiableModel) and hasattr(inner, "pixel_module") and hasattr(inner, "module")):
        raise MethodNotApplicableError(
            f"model: the randomisation check re-initialises layers of a torch module, but {type(inner).__name__} "
            "has none; wrap the torch nn.Module with TorchModel(module, preprocess=...)"
        )
    rand_model = randomised_copy(inner, metric.layers, seed)
    new = _explain_like(rand_model, exp, np.array(exp.images), exp.targets.tolist(), metric.params)
    model.count += int(new.n_model_evals)
    before, after = compared_maps(exp, metric.absolute), compared_maps(new, metric.absolute)
    values = np.empty(exp.n_targets)
    for t in range(exp.n_targets):
        a, b = before[0, t].reshape(-1), after[0, t].reshape(-1)
        values[t] = np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)
    return values


def cascade_stages(module: Any) -> list[str]:
    """The stages a cascading randomisation re-initialises, top (output side) first.

    A stage is a direct child of ``module`` that has parameters; a child that
    is a container of blocks (``nn.Sequential`` / ``nn.ModuleList`` with two or
    more children, e.g. timm's ``blocks``) gives one stage per block, as
    Adebayo et al. randomise a network block by block from the logits down.
    """
    from torch import nn

    stages: list[str] = []
    for name, child in module.named_children():
        if not any(True for _ in child.parameters()):
            continue
        inner = list(child.named_children())
        if isinstance(child, (nn.Sequential, nn.ModuleList)) and len(inner) > 1:
            stages += [f"{name}.{sub}" for sub, m in inner if any(True for _ in m.parameters())]
        else:
            stages.append(name)
    return stages[::-1]


def compared_maps(exp: Explanation, absolute: bool) -> np.ndarray:
    """The ``(N, T, H, W)`` maps a randomisation check rank-correlates, as Adebayo et al.'s code reduces them.

    Their absolute comparison is ``VisualizeImageGrayscale`` of the PAIR
    saliency library: the sum over colour channels of the absolute
    per-channel values, so a channel's positive and negative gradients do
    not cancel (the figures that show Guided Backprop as an edge detector);
    the signed comparison is the channel sum. Maps without per-channel
    values (CAMs, perturbation methods) are one channel already.

    Args:
        exp: the explanation (``raw`` holds its per-channel values, if any).
        absolute: the sum of absolute channel values, else the signed sum.
    """
    if not absolute:
        return np.asarray(exp.attributions)
    if exp.raw is not None:
        return np.abs(np.asarray(exp.raw)).sum(axis=2)
    return np.abs(np.asarray(exp.attributions))


def cascading_randomisation(
    model: Any,
    exp: Explanation,
    seed: int = 0,
    *,
    every_step: bool = False,
    depth: int | None = None,
    he: bool = True,
    absolute: bool = True,
) -> np.ndarray:
    """Spearman correlations of ``exp``'s maps with those of cumulatively randomised copies of ``model``.

    The stages of :func:`cascade_stages` are re-initialised from the top down,
    each step adding one (Adebayo et al. 2018, "cascading randomisation"); the
    explanation is re-run on each copy by the same backend with the same
    params, and each image and target's map is rank-correlated with its
    original (NaN where either map is constant). A method whose maps depend on
    the learned weights decorrelates; one whose maps do not (an edge detector)
    stays similar.

    Args:
        model: the torch model ``exp`` was made with (``TorchModel``).
        exp: the explanation to check.
        seed: seed of the re-initialisations.
        every_step: return every step of the cascade, else only the last one
            (one extra explanation).
        depth: how many stages from the top the cascade reaches (None: all).
        he: re-initialise He-normal (see :func:`randomised_copy`), so a
            deep network's maps keep a magnitude the libraries' epsilons do
            not swamp; False re-initialises each layer with its own
            ``reset_parameters``, as the paper re-initialises each layer
            with its own initialiser (see the note below).
        absolute: compare the sums of absolute channel values, the paper's
            "ABS" rank correlation (see :func:`compared_maps`); False
            compares the signed channel sums ("no ABS").

    Returns:
        ``(steps, N, T)`` correlations, one step when ``every_step`` is False.

    Note:
        On a clamped ReLU (``nn.ReLU6``) the re-initialisation decides how
        often the ceiling is reached, and no gradient, guided or not, passes
        above it. He-normal weights with BatchNorm reset to identity let
        activations grow through residual blocks past the ceiling where the
        trained network stays below it, which blocks most guided paths:
        Guided Backprop then decorrelates like the gradient. With
        ``he=False`` activations shrink instead, the ceiling is never reached
        and Guided Backprop stays the most similar map, the paper's ordering
        (the values on the bundled model are in docs/evaluation.md).
    """
    from scipy.stats import spearmanr

    inner: Any = model.wrapped if isinstance(model, CountingModel) else model
    if not hasattr(inner, "module") or not hasattr(inner, "pixel_module"):
        raise MethodNotApplicableError(
            f"model: the randomisation check re-initialises layers of a torch module, but {type(inner).__name__} "
            "has none; wrap the torch nn.Module with TorchModel(module, preprocess=...)"
        )
    stages = cascade_stages(inner.module)[:depth]
    steps = [stages[: k + 1] for k in range(len(stages))] if every_step else [stages]
    out = np.full((len(steps), exp.n_images, exp.n_targets), np.nan)
    before = compared_maps(exp, absolute)
    for s, layers in enumerate(steps):
        new = _explain_like(
            randomised_copy(inner, layers, seed, he=he), exp, np.array(exp.images), exp.targets.tolist()
        )
        after = compared_maps(new, absolute)
        for n in range(exp.n_images):
            for t in range(exp.n_targets):
                a, b = before[n, t].reshape(-1), after[n, t].reshape(-1)
                if np.ptp(a) > 0 and np.ptp(b) > 0:
                    out[s, n, t] = float(spearmanr(a, b).statistic)
    return out
