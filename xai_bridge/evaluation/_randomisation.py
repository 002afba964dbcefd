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


def randomised_copy(model: DifferentiableModel, layers: Sequence[str] | None, seed: int) -> Any:
    """A ``TorchModel`` around a deep copy of ``model.module`` with ``layers`` re-initialised.

    Each named submodule (and its children) with a ``reset_parameters`` /
    ``reset_running_stats`` method is reset under ``torch.manual_seed(seed)``
    inside a forked RNG state; the user's module is never touched.

    Args:
        model: a :class:`~xai_bridge.models.DifferentiableModel` (e.g. ``TorchModel``).
        layers: dotted submodule names; None means the last submodule with parameters.
        seed: seed of the re-initialisation.

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
                if callable(reset):
                    reset()
                elif any(True for _ in sub.parameters(recurse=False)):
                    for p in sub.parameters(recurse=False):
                        p.normal_(0.0, 0.01)
    return inner.with_module(net)


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
    values = np.empty(exp.n_targets)
    for t in range(exp.n_targets):
        a, b = exp.attributions[0, t].reshape(-1), new.attributions[0, t].reshape(-1)
        if metric.absolute:
            a, b = np.abs(a), np.abs(b)
        values[t] = np.nan if np.ptp(a) == 0 or np.ptp(b) == 0 else float(spearmanr(a, b).statistic)
    return values
