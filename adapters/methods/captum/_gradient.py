"""captum's gradient methods on a torch model's pixels: one captum call per chunk of images and target.

The model runs inside ``model.guard(freeze_params=True)``, fed float
``(N, 3, H, W)`` pixels in [0, 255], in chunks of ``model.batch_size``
images, one captum call per chunk and target column, seeded anew for each
where the method draws random numbers. IntegratedGradients with baselines
runs its rows together instead (:mod:`._ig`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

import numpy as np

from xai_bridge import progress
from xai_bridge._validate import flag
from xai_bridge.batching import BatchTuner
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.options import NoiseKind, NoiseTunnel

from ._baselines import baselines_list, describe_baselines
from ._ig import integrated_gradients
from ._methods import GRADIENT_METHODS, METHODS, PERTURBATION_METHODS, CaptumMethod, has_random

__all__ = ["run_gradient"]

#: captum's informational warnings, silenced inside the backend.
_CAPTUM_NOISE = ".*(did not already require gradients|Setting backward hooks|Setting forward, backward hooks).*"


class _Counter:
    """A forward pre-hook counting the rows every forward pass of the network sees (and ticking the bar)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _module: Any, args: tuple[Any, ...]) -> None:
        first = args[0]
        while isinstance(first, (tuple, list)):  # DeepLift's own pre-hook passes nested tuples
            first = first[0]
        self.count += int(first.shape[0])
        progress.tick(int(first.shape[0]))


def run_gradient(request: ExplainRequest, name: str) -> BackendResult:
    """Run captum's gradient class ``name`` (see :func:`~xai_bridge.adapters.methods.captum.run`)."""
    method = METHODS[name]
    params = check_params(request.method, request.params, {**GRADIENT_METHODS[name], "noise_tunnel": None})
    working = ", ".join(f"captum.{m}" for m in PERTURBATION_METHODS)
    model = require_differentiable(request, working=working)
    nt = NoiseTunnel.ensure(params["noise_tunnel"])
    rng = np.random.default_rng(request.seed)
    baselines = baselines_list(params["baselines"], request.images, rng) if "baselines" in params else None
    effective = _effective(method, params, request.params, model, nt)
    net = model.pixel_module()
    x = model.pixel_tensor(request.images)
    if baselines is not None:  # on the model's device once, not once per call
        baselines = [b.to(x.device) for b in baselines]
    random = nt is not None or method.random or has_random(params.get("baselines"))
    counter = _Counter()
    guard = method.guard(net, x) if method.guard is not None else nullcontext()
    with model.guard(freeze_params=True), guard, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CAPTUM_NOISE)
        handle = net.register_forward_pre_hook(counter)
        try:
            algo = _make(name, method, net, effective)
            raw, delta, base_scores, extras = _attribute(
                request, model, (algo, method), x, baselines, effective, nt, random
            )
        finally:
            handle.remove()
    return BackendResult(
        attributions=raw.sum(axis=2),
        raw=raw,
        params=effective,
        backend_version=library_version("captum"),
        base_scores=base_scores,
        n_model_evals=counter.count,
        extras={**extras, "convergence_delta": delta} if delta is not None else extras,
        uses_seed=random,
    )


def _effective(
    method: CaptumMethod, params: dict[str, Any], given: Mapping[str, Any], model: Any, nt: NoiseTunnel | None
) -> dict[str, Any]:
    """The params as checked and as the run uses them (recorded on the explanation)."""
    effective = dict(params)
    for key in ("abs", "multiply_by_inputs"):
        if key in params:
            effective[key] = flag(key, params[key])
    if method.check is not None:
        method.check(effective, given, int(model.batch_size))
    if nt is not None:
        effective["noise_tunnel"] = nt.describe()
    if "baselines" in params:
        effective["baselines"] = describe_baselines(params["baselines"])
    return effective


def _attribute(
    request: ExplainRequest,
    model: Any,
    captum: tuple[Any, CaptumMethod],
    x: Any,
    baselines: list[Any] | None,
    params: Mapping[str, Any],
    nt: NoiseTunnel | None,
    random: bool,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]]:
    """Raw maps ``(N, T, 3, H, W)``, convergence deltas, baseline scores and extras; inside the run's guard.

    ``captum`` is the captum object and its record; ``random`` seeds every call.
    """
    import torch
    from xai_bridge.adapters._torch import seeded

    algo, method = captum
    images, targets, seed = request.images, request.targets, request.seed
    n, h, w, _ = images.shape
    t = targets.shape[1]
    all_targets = torch.as_tensor(targets, dtype=torch.int64, device=x.device)
    extras: dict[str, np.ndarray] = {}
    base_scores = None
    delta: np.ndarray | None
    bs = int(getattr(model, "batch_size", n) or n)
    if method.rows and nt is None and baselines is not None:
        # every image, target and baseline as rows of shared captum calls (see _ig)
        tuner = None
        memo = getattr(model, "memo", None)
        if params["n_steps"] == "auto" and request.params.get("internal_batch_size") is None and memo is not None:
            # the gradient passes' chunk size, tuned as predict's is (kept per model and image size)
            tuner = memo.setdefault(("ig_auto_chunks", h, w), BatchTuner(int(model.batch_size)))
        raw, delta, base_scores, steps = integrated_gradients(algo, x, targets, baselines, params, tuner)
        if steps is not None:
            extras["n_steps"] = steps
    else:
        raw = np.zeros((n, t, 3, h, w), np.float32)
        delta = np.zeros((n, t), np.float32) if method.delta and nt is None else None
        for start in range(0, n, bs):  # images in chunks of the model's batch size
            sl = slice(start, start + bs)
            chunk = [b[sl] for b in baselines] if baselines is not None else None
            for j in range(t):
                with seeded(seed, x.device) if random else nullcontext():
                    attr, d = _call(method, algo, x[sl], all_targets[sl, j], chunk, params, nt)
                raw[sl, j] = attr
                if delta is not None and d is not None:
                    delta[sl, j] = d
    if baselines is not None and base_scores is None:  # f(baseline), averaged over a list / distribution
        base_scores = _baseline_scores(algo.forward_func, baselines, all_targets, bs)
    return raw, delta, base_scores, extras


def _baseline_scores(net: Any, baselines: list[Any], targets: Any, bs: int) -> np.ndarray:
    """The target outputs ``(N, T)`` at the baselines, averaged over a list or distribution."""
    import torch

    n = baselines[0].shape[0]
    outs = []
    with torch.no_grad():
        for start in range(0, n, bs):
            outs.append(torch.stack([net(b[start : start + bs]) for b in baselines]).mean(0))
    return torch.cat(outs).gather(1, targets).float().cpu().numpy()


def _make(name: str, method: CaptumMethod, net: Any, params: Mapping[str, Any]) -> Any:
    """The captum object, constructed with the method's constructor params."""
    import captum.attr as ca

    return getattr(ca, name)(net, **{key: params[key] for key in method.ctor})


def _call(
    method: CaptumMethod,
    algo: Any,
    x: Any,
    target: Any,
    baselines: list[Any] | None,
    params: Mapping[str, Any],
    nt: NoiseTunnel | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One captum call (or one per baseline for IG/DeepLift lists); returns (attr (N,3,H,W), delta (N,) or None)."""
    import captum.attr as ca

    kwargs: dict[str, Any] = {key: params[key] for key in method.call}
    want_delta = method.delta and nt is None
    runner = algo
    if nt is not None:
        runner = ca.NoiseTunnel(algo)
        kwargs.update(
            nt_type=NoiseKind(nt.kind).value,
            nt_samples=nt.nt_samples,
            stdevs=float(nt.stdevs),
            nt_samples_batch_size=nt.nt_samples_batch_size,
        )
    if baselines is None:
        return _np(runner.attribute(x, target=target, **kwargs)), None
    if method.distribution:
        import torch

        attrs = []
        for i in range(x.shape[0]):  # each image has its own distribution (e.g. its mean colour)
            dist = torch.cat([b[i : i + 1] for b in baselines]).to(x.device)
            attrs.append(_np(runner.attribute(x[i : i + 1], baselines=dist, target=target[i : i + 1], **kwargs)))
        return np.concatenate(attrs), None
    attrs, deltas = [], []
    for b in baselines:
        out = runner.attribute(
            x,
            baselines=b.to(x.device),
            target=target,
            **({"return_convergence_delta": True} if want_delta else {}),
            **kwargs,
        )
        if want_delta:
            attrs.append(_np(out[0]))
            deltas.append(_np(out[1]).reshape(-1))
        else:
            attrs.append(_np(out))
    return np.mean(attrs, axis=0), (np.mean(deltas, axis=0) if want_delta else None)


def _np(tensor: Any) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()
