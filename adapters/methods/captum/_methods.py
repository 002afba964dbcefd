"""One record per captum class: its parameters, capabilities and cost, read by the runners and the specs.

A record says what the method is (random, a baseline distribution, a
convergence delta, superpixels) so no caller keeps lists of names; where
captum declares a capability itself (``has_convergence_delta()``), the
record agrees with it (tests check). Each record also carries the method's
estimate of its model evaluations (:attr:`~xai_bridge.registry.MethodSpec.evaluations`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_bridge._validate import choice, int_at_least, int_or_default, number
from xai_bridge.errors import ParameterError
from xai_bridge.registry import Evaluations

from ._ig import AUTO_FIRST_STEPS, AUTO_RULE
from ._lrp import lrp_guard


def _guided(method: str, net: Any, x: Any) -> AbstractContextManager[Any]:
    """The guided methods' guard: clamped ReLUs rewritten as nn.ReLU + clamp (see ``_guided``)."""
    from .._guided import guided_relus

    return guided_relus(net, x, method)


#: A method's own checks: ``check(effective, given, batch_size)`` validates and completes ``effective`` in place.
Check = Callable[[dict[str, Any], Mapping[str, Any], int], None]

__all__ = ["GRADIENT_METHODS", "METHODS", "PERTURBATION_METHODS", "CaptumMethod", "has_random", "noise_samples", "pair"]


@dataclass(frozen=True)
class CaptumMethod:
    """How to run one captum class and what it is.

    Attributes:
        family: ``"gradient"`` (a torch model's pixel gradients) or
            ``"perturbation"`` (any model, through its outputs).
        defaults: the user params with their defaults (``noise_tunnel`` is
            added for every gradient method).
        description: one line for the method listing.
        ctor: params passed to the captum constructor.
        call: params passed to ``attribute``.
        random: whether the method draws random numbers itself (samples,
            noise); random baselines make any method random as well.
        distribution: whether ``baselines`` is a distribution sampled per image
            (DeepLiftShap, GradientShap) rather than a list averaged over.
        delta: whether the result reports captum's convergence delta per map
            (``return_convergence_delta``); captum's ``has_convergence_delta()``
            is also true for the distribution methods, whose deltas are per
            sample, so they do not report one.
        rows: whether every image, target and baseline runs as rows of shared
            calls (IntegratedGradients, see ``_ig``) instead of per target.
        superpixels: whether features are superpixels (``segmentation=``);
            ``min_segments`` is how many an image needs.
        check: the method's own parameter checks (see :data:`Check`).
        guard: a context manager around the run, given the network and the
            pixel batch (LRP's restores what captum leaves on the layers; the
            guided methods' rewrite clamped ReLUs, see ``_guided``).
        requires: import names needed beyond captum, torch and (for
            perturbation methods) scikit-image.
        evaluations: the run's model evaluations, see :class:`~xai_bridge.registry.MethodSpec`.
        quick: the cheapest params that still exercise it (:attr:`~xai_bridge.registry.MethodSpec.quick`).
    """

    family: str
    defaults: Mapping[str, Any]
    description: str
    ctor: tuple[str, ...] = ()
    call: tuple[str, ...] = ()
    random: bool = False
    distribution: bool = False
    delta: bool = False
    rows: bool = False
    superpixels: bool = False
    min_segments: int = 1
    check: Check | None = None
    requires: tuple[str, ...] = ()
    guard: Callable[[Any, Any], AbstractContextManager[Any]] | None = None
    evaluations: Evaluations | None = None
    quick: Mapping[str, Any] = field(default_factory=dict)


def has_random(spec: Any) -> bool:
    """Whether a ``baselines=`` value draws random baselines."""
    if isinstance(spec, list):
        return any(has_random(s) for s in spec)
    return isinstance(spec, str) and spec == "random"


def noise_samples(params: Mapping[str, Any]) -> float:
    """Samples per map of a ``noise_tunnel=`` value (1 without one; 10, captum's default, where unset)."""
    nt = params.get("noise_tunnel")
    if nt is None:
        return 1.0
    if isinstance(nt, Mapping):
        return float(nt.get("nt_samples", 10))
    return float(getattr(nt, "nt_samples", 10))  # a NoiseTunnel or a kind name


def pair(name: str, value: Any, limit: tuple[int, int]) -> tuple[int, int]:
    """A window or stride: an int or ``(h, w)`` positive integers, clipped to ``limit``."""
    vals = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        a, b = (int(v) for v in vals)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected a positive integer or an (h, w) pair, got {value!r}") from None
    if a < 1 or b < 1:
        raise ParameterError(f"{name}: expected positive sizes, got {value!r}")
    return min(a, limit[0]), min(b, limit[1])


def _check_ig(effective: dict[str, Any], given: Mapping[str, Any], batch_size: int) -> None:
    """IntegratedGradients: the rule, the chunk size and either a number of steps or ``"auto"``'s stopping rule."""
    from captum.attr._utils.approximation_methods import SUPPORTED_METHODS  # type: ignore[import-untyped]

    effective["method"] = choice("method", effective["method"], [*SUPPORTED_METHODS, AUTO_RULE])
    effective["internal_batch_size"] = int_or_default(
        "internal_batch_size", effective["internal_batch_size"], batch_size
    )
    if effective["n_steps"] != "auto":
        effective["n_steps"] = int_at_least("n_steps", effective["n_steps"], 1)
        del effective["tolerance"], effective["max_steps"]  # only n_steps="auto" uses them
        return
    effective["max_steps"] = int_at_least("max_steps", effective["max_steps"], AUTO_FIRST_STEPS)
    effective["tolerance"] = number("tolerance", effective["tolerance"], 0, low_open=True)
    if given.get("method", AUTO_RULE) != AUTO_RULE:
        raise ParameterError(
            f"method: n_steps='auto' integrates with its own nested rule (its points are reused when "
            f"the steps double), got method={given['method']!r}; leave method unset or give a number "
            f"of steps"
        )
    effective["method"] = AUTO_RULE


def _check_deeplift(effective: dict[str, Any], given: Mapping[str, Any], batch_size: int) -> None:
    effective["eps"] = number("eps", effective["eps"], 0, low_open=True)


def _check_gradient_shap(effective: dict[str, Any], given: Mapping[str, Any], batch_size: int) -> None:
    effective["n_samples"] = int_at_least("n_samples", effective["n_samples"], 1)
    effective["stdevs"] = number("stdevs", effective["stdevs"], 0)


def _number(params: Mapping[str, Any], key: str, default: float) -> float:
    value = params.get(key, default)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float(default)


def _gradient_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """One forward and backward pass per image, target and noise sample."""
    return int(n * t * noise_samples(params))


def _ig_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """``n_steps`` path points per image, target and baseline, and the end points once per image and baseline.

    With a noise tunnel, the path points per image, target and noise sample,
    and the image once (its score). With ``n_steps="auto"`` a guess (50 steps).
    """
    steps = _number(params, "n_steps", 50)
    if params.get("noise_tunnel") is not None:
        return int(n * t * steps * noise_samples(params) + n)
    if params.get("n_steps") == "auto":
        return int(n * t * (steps + 2))
    baselines = params.get("baselines", 0)
    k = len(baselines) if isinstance(baselines, list) else 1
    return int(n * t * k * steps + n * (1 + k))


def _windows(size: int, window: int, stride: int) -> int:
    return (size - window) // stride + 1


def _occlusion_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """The baseline once per image; per image and target, the image and each window position."""
    win = pair("window", params.get("window", 16), hw)
    stride = pair("stride", params.get("stride", 8), win)
    return n + n * t * (1 + _windows(hw[0], win[0], stride[0]) * _windows(hw[1], win[1], stride[1]))


def _segments(params: Mapping[str, Any], n: int) -> list[int]:
    """Superpixels of each image: precomputed labels' counts, else the algorithm's nominal ``n_segments`` (50)."""
    seg = params.get("segmentation")
    if isinstance(seg, np.ndarray):
        labels = np.broadcast_to(seg, (n, *seg.shape[-2:]))
        return [int(image.max()) + 1 for image in labels]
    return [int(getattr(seg, "params", {}).get("n_segments", 50))] * n


def _ablation_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """The baseline once per image; per image and target, the image and each superpixel ablated."""
    return n + t * sum(1 + s for s in _segments(params, n))


def _shapley_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """The baseline once per image; per image and target, the baseline and each superpixel of each permutation."""
    return n + t * sum(1 + int(params.get("n_samples", 25)) * s for s in _segments(params, n))


def _sampled_evals(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """The baseline once per image; ``n_samples`` per image and target."""
    return n + n * t * int(params.get("n_samples", 200))


_RANDOM_BASELINES = ["random"] * 5
_SUPERPIXEL = {"segmentation": None, "baselines": 0, "perturbations_per_eval": None}
_IG = {
    "baselines": 0,
    "n_steps": 50,
    "method": "gausslegendre",
    "internal_batch_size": None,
    "multiply_by_inputs": True,
    "tolerance": 0.01,
    "max_steps": 512,
}

#: Every captum class served, by captum's class name (registered as ``captum.<name>``).
METHODS: dict[str, CaptumMethod] = {
    "Saliency": CaptumMethod(
        "gradient",
        {"abs": True},
        "vanilla gradients (Simonyan et al. 2013)",
        call=("abs",),
        evaluations=_gradient_evals,
    ),
    "InputXGradient": CaptumMethod("gradient", {}, "input times gradient", evaluations=_gradient_evals),
    "IntegratedGradients": CaptumMethod(
        "gradient",
        _IG,
        "integrated gradients (Sundararajan et al. 2017), baselines may be a list to average",
        ctor=("multiply_by_inputs",),
        call=("n_steps", "method", "internal_batch_size"),
        check=_check_ig,
        delta=True,
        rows=True,
        evaluations=_ig_evals,
        quick={"n_steps": 4},
    ),
    "DeepLift": CaptumMethod(
        "gradient",
        {"baselines": 0, "multiply_by_inputs": True, "eps": 1e-10},
        "DeepLIFT rescale rule (Shrikumar et al. 2017)",
        ctor=("multiply_by_inputs", "eps"),
        check=_check_deeplift,
        delta=True,
        evaluations=_gradient_evals,
    ),
    "DeepLiftShap": CaptumMethod(
        "gradient",
        {"baselines": _RANDOM_BASELINES, "multiply_by_inputs": True},
        "DeepLIFT averaged over a baseline distribution",
        ctor=("multiply_by_inputs",),
        distribution=True,
        quick={"baselines": ["random"] * 2},
    ),
    "GradientShap": CaptumMethod(
        "gradient",
        {"baselines": _RANDOM_BASELINES, "n_samples": 5, "stdevs": 0.0, "multiply_by_inputs": True},
        "expected gradients over a baseline distribution (Lundberg & Lee 2017)",
        ctor=("multiply_by_inputs",),
        call=("n_samples", "stdevs"),
        check=_check_gradient_shap,
        random=True,
        distribution=True,
        quick={"n_samples": 3},
    ),
    "GuidedBackprop": CaptumMethod(
        "gradient",
        {},
        "guided backpropagation (Springenberg et al. 2014), on every ReLU and clamped ReLU (ReLU6)",
        guard=functools.partial(_guided, "captum.GuidedBackprop"),
        evaluations=_gradient_evals,
    ),
    "Deconvolution": CaptumMethod(
        "gradient",
        {},
        "deconvolution (Zeiler & Fergus 2014), on every ReLU and clamped ReLU (ReLU6)",
        guard=functools.partial(_guided, "captum.Deconvolution"),
        evaluations=_gradient_evals,
    ),
    "LRP": CaptumMethod(
        "gradient",
        {},
        "layer-wise relevance propagation (Bach et al. 2015) where captum has rules for every layer",
        guard=lrp_guard,
        evaluations=_gradient_evals,
    ),
    "Occlusion": CaptumMethod(
        "perturbation",
        {"window": 16, "stride": 8, "baselines": 0, "perturbations_per_eval": None},
        "sliding-window occlusion (Zeiler & Fergus 2014)",
        evaluations=_occlusion_evals,
        quick={"window": 8, "stride": 8},
    ),
    "FeatureAblation": CaptumMethod(
        "perturbation", dict(_SUPERPIXEL), "superpixel ablation", superpixels=True, evaluations=_ablation_evals
    ),
    "ShapleyValueSampling": CaptumMethod(
        "perturbation",
        {**_SUPERPIXEL, "n_samples": 25},
        "Shapley value sampling over superpixels (Castro et al. 2009)",
        random=True,
        superpixels=True,
        evaluations=_shapley_evals,
        quick={"n_samples": 2},
    ),
    "KernelShap": CaptumMethod(
        "perturbation",
        {**_SUPERPIXEL, "n_samples": 200},
        "Kernel SHAP over superpixels (Lundberg & Lee 2017)",
        random=True,
        superpixels=True,
        min_segments=2,
        requires=("sklearn",),
        evaluations=_sampled_evals,
        quick={"n_samples": 12},
    ),
    "Lime": CaptumMethod(
        "perturbation",
        {**_SUPERPIXEL, "n_samples": 200},
        "captum's LIME over superpixels (Ribeiro et al. 2016)",
        random=True,
        superpixels=True,
        min_segments=2,
        requires=("sklearn",),
        evaluations=_sampled_evals,
        quick={"n_samples": 12},
    ),
}

#: Gradient methods: defaults of their parameters (``noise_tunnel`` is added for all).
GRADIENT_METHODS: dict[str, dict[str, Any]] = {
    name: dict(m.defaults) for name, m in METHODS.items() if m.family == "gradient"
}
#: Perturbation methods (any model): defaults of their parameters.
PERTURBATION_METHODS: dict[str, dict[str, Any]] = {
    name: dict(m.defaults) for name, m in METHODS.items() if m.family == "perturbation"
}
