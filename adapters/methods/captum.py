"""captum attribution methods (https://captum.ai) on image pixels.

One backend function, :func:`run`, serves every ``captum.<ClassName>`` name;
the registered option ``cls`` picks the captum class.

* Gradient methods (Saliency, InputXGradient, IntegratedGradients, DeepLift,
  DeepLiftShap, GradientShap, GuidedBackprop, Deconvolution, LRP) run on
  ``model.pixel_module()`` fed float ``(N, 3, H, W)`` pixels in [0, 255] inside
  ``model.guard(freeze_params=True)``, in chunks of ``model.batch_size`` images,
  one captum call per chunk and target column (seeded anew for each). ``raw``
  holds the per-channel values; ``attributions = raw.sum(axis=2)``.
  Any of them can be wrapped in captum's ``NoiseTunnel`` (``noise_tunnel=``).
* Perturbation methods (Occlusion, and FeatureAblation, ShapleyValueSampling,
  KernelShap, Lime over superpixels) work on any model: captum's float pixel
  tensors are rounded back to uint8 NHWC and sent through ``model.predict``
  (exact, since perturbed pixels stay integers for integer baselines). For a
  torch model they call ``pixel_module`` directly under ``no_grad``. They run
  one image at a time, so an image's result does not depend on the others.

Baselines (``baselines=``), in pixel units 0-255: a number (0 = black), an RGB
*tuple* ``(r, g, b)``, an image array ``(H, W, 3)`` or ``(N, H, W, 3)``,
``"random"`` (uniform noise in [0, 255) from ``numpy.random.default_rng(seed)``,
drawn baseline by baseline, image by image), ``"mean"`` (the image's mean
colour), or a *list* of those: IntegratedGradients then averages over the
baselines (e.g. several random baselines, as in the Keras IG tutorial);
DeepLiftShap and GradientShap use the list as their baseline distribution.

Every random draw is seeded from ``request.seed``: torch through
``torch.random.fork_rng`` + ``torch.manual_seed(seed)`` before each captum
call, numpy through a local ``Generator`` (and ``np.random.seed(seed)``, restored
after, since captum's GradientShap samples from numpy's global RNG); global RNG
state is left unchanged.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from xai_bridge import progress
from xai_bridge._validate import choice, flag, int_at_least, int_or_default, number, to_uint8
from xai_bridge.batching import BatchTuner, batched
from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.errors import MethodNotApplicableError, ParameterError
from xai_bridge.options import NoiseKind, NoiseTunnel
from xai_bridge.registry import MethodSpec

from ._segments import segment_images

__all__ = ["GRADIENT_METHODS", "PERTURBATION_METHODS", "NoiseKind", "NoiseTunnel", "run"]


# --- method table ---------------------------------------------------------------------------------------------

_RANDOM_BASELINES = ["random"] * 5

#: Gradient methods: defaults of their parameters (``noise_tunnel`` is added for all).
GRADIENT_METHODS: dict[str, dict[str, Any]] = {
    "Saliency": {"abs": True},
    "InputXGradient": {},
    "IntegratedGradients": {
        "baselines": 0,
        "n_steps": 50,
        "method": "gausslegendre",
        "internal_batch_size": None,
        "multiply_by_inputs": True,
        "tolerance": 0.01,
        "max_steps": 512,
    },
    "DeepLift": {"baselines": 0, "multiply_by_inputs": True, "eps": 1e-10},
    "DeepLiftShap": {"baselines": _RANDOM_BASELINES, "multiply_by_inputs": True},
    "GradientShap": {"baselines": _RANDOM_BASELINES, "n_samples": 5, "stdevs": 0.0, "multiply_by_inputs": True},
    "GuidedBackprop": {},
    "Deconvolution": {},
    "LRP": {},
}

_SUPERPIXEL = {"segmentation": None, "baselines": 0, "perturbations_per_eval": None}

#: Perturbation methods (any model): defaults of their parameters.
PERTURBATION_METHODS: dict[str, dict[str, Any]] = {
    "Occlusion": {"window": 16, "stride": 8, "baselines": 0, "perturbations_per_eval": None},
    "FeatureAblation": dict(_SUPERPIXEL),
    "ShapleyValueSampling": {**_SUPERPIXEL, "n_samples": 25},
    "KernelShap": {**_SUPERPIXEL, "n_samples": 200},
    "Lime": {**_SUPERPIXEL, "n_samples": 200},
}

#: captum's informational warnings, silenced inside the backend.
_CAPTUM_NOISE = ".*(did not already require gradients|Setting backward hooks|Setting forward, backward hooks).*"

_DELTA = {"IntegratedGradients", "DeepLift"}
#: Points per baseline of the first round of ``n_steps="auto"`` (then doubled).
_AUTO_FIRST_STEPS = 4
#: The rule of ``n_steps="auto"``, recorded as ``params["method"]``.
AUTO_RULE = "cosine_shifted_nested"
#: Rows (image x target x baseline) whose gradient sums ``n_steps="auto"`` holds at once.
_AUTO_ROWS = 64
_DISTRIBUTION = {"DeepLiftShap", "GradientShap"}
_RANDOM_METHODS = {"GradientShap", "ShapleyValueSampling", "KernelShap", "Lime"}


def run(request: ExplainRequest) -> BackendResult:
    """Run the captum class named by ``request.options["cls"]``.

    Params (by method; all validated, unknown names raise):
        Saliency: ``abs`` (default True).
        IntegratedGradients (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365):
            ``baselines`` (default 0; a list is averaged over), ``n_steps`` (50,
            or ``"auto"``: a nested rule on 4 points per baseline, doubled,
            every point reused, until each image and target's ``|convergence
            delta|`` (of its map, averaged over the baselines) is within
            ``tolerance`` (0.01, in output units) or ``max_steps`` points (512)
            would be passed; see :func:`_integrated_gradients_auto`),
            ``method`` ("gausslegendre"; ``"auto"`` records ``"cosine_shifted_nested"``),
            ``internal_batch_size`` (None: the model's
            batch size, with ``"auto"`` tuned chunks up to it as ``predict``'s;
            every image, target and baseline share its chunks),
            ``multiply_by_inputs`` (True).
        DeepLift (Shrikumar et al. 2017, https://arxiv.org/abs/1704.02685):
            ``baselines`` (0), ``multiply_by_inputs``, ``eps``.
        DeepLiftShap, GradientShap (Lundberg & Lee 2017, https://arxiv.org/abs/1705.07874):
            ``baselines`` (a distribution; default five random images),
            GradientShap also ``n_samples`` (5) and ``stdevs`` (0.0, pixel units).
        InputXGradient, GuidedBackprop (https://arxiv.org/abs/1412.6806),
            Deconvolution (https://arxiv.org/abs/1311.2901), LRP
            (Bach et al. 2015, https://doi.org/10.1371/journal.pone.0130140): none.
        Every gradient method: ``noise_tunnel`` (None, a :class:`NoiseTunnel`
            or a dict of its fields).
        Occlusion (Zeiler & Fergus 2014): ``window`` (16 or ``(h, w)``),
            ``stride`` (8 or ``(h, w)``), ``baselines`` (0), ``perturbations_per_eval``.
        FeatureAblation, ShapleyValueSampling (Castro et al. 2009), KernelShap,
            Lime (Ribeiro et al. 2016, https://arxiv.org/abs/1602.04938):
            ``segmentation`` (a :class:`~.segments.Segmentation`, default SLIC
            with 50 segments), ``baselines`` (0), ``perturbations_per_eval``
            (None: the model's batch size), and ``n_samples`` (25 permutations
            / 200 samples / 200 samples) for the sampling ones.

    Extras:
        convergence_delta: float32 ``(N, T)`` (IntegratedGradients, DeepLift,
            without noise tunnel): captum's completeness error, ``f(x) -
            f(baseline)`` minus the attributions' sum; for a list of IG
            baselines, the mean of the deltas (the delta of the average).
            Compare it with ``scores - base_scores``. IG's integrand is only
            piecewise smooth on ReLU-family networks, so captum's default
            Gauss-Legendre rule need not improve with ``n_steps`` (on
            EfficientNet-Lite0 an audit saw 3.3% of ``f(x) - f(baseline)`` at
            50 steps and 6.2% at 200); ``method="riemann_trapezoid"`` converges
            steadily (0.8% there). Raise ``n_steps`` with that rule when the
            delta matters.
        n_steps: int32 ``(N, T)`` (IntegratedGradients with ``n_steps="auto"``):
            the points per baseline each image and target used.
        segments: int32 ``(N, T, H, W)`` and superpixel_weights float32
            ``(N, T, S_max)`` (NaN padding) for the superpixel methods.
    """
    name = str(request.options.get("cls", ""))
    if name in GRADIENT_METHODS:
        return _run_gradient(request, name)
    if name in PERTURBATION_METHODS:
        return _run_perturbation(request, name)
    raise ParameterError(
        f"options.cls: unknown captum class {name!r}; expected one of "
        f"{sorted(GRADIENT_METHODS) + sorted(PERTURBATION_METHODS)}"
    )


# --- gradient methods -----------------------------------------------------------------------------------------


def _run_gradient(request: ExplainRequest, name: str) -> BackendResult:
    import torch
    from xai_bridge.adapters._torch import seeded

    params = check_params(request.method, request.params, {**GRADIENT_METHODS[name], "noise_tunnel": None})
    working = ", ".join(f"captum.{m}" for m in PERTURBATION_METHODS)
    model = require_differentiable(request, working=working)
    nt = NoiseTunnel.ensure(params["noise_tunnel"])
    images, targets, seed = request.images, request.targets, request.seed
    n, h, w, _ = images.shape
    t = targets.shape[1]
    rng = np.random.default_rng(seed)
    baselines = _baselines_list(params["baselines"], images, rng) if "baselines" in params else None
    effective = dict(params)
    for key in ("abs", "multiply_by_inputs"):
        if key in params:
            effective[key] = flag(key, params[key])
    if name == "IntegratedGradients":
        from captum.attr._utils.approximation_methods import SUPPORTED_METHODS  # type: ignore[import-untyped]

        effective["method"] = choice("method", params["method"], [*SUPPORTED_METHODS, AUTO_RULE])
        effective["internal_batch_size"] = int_or_default(
            "internal_batch_size", params["internal_batch_size"], model.batch_size
        )
        if params["n_steps"] == "auto":
            effective["max_steps"] = int_at_least("max_steps", params["max_steps"], _AUTO_FIRST_STEPS)
            effective["tolerance"] = number("tolerance", params["tolerance"], 0, low_open=True)
            if request.params.get("method", AUTO_RULE) != AUTO_RULE:
                raise ParameterError(
                    f"method: n_steps='auto' integrates with its own nested rule (its points are reused when "
                    f"the steps double), got method={params['method']!r}; leave method unset or give a number "
                    f"of steps"
                )
            effective["method"] = AUTO_RULE
        else:
            effective["n_steps"] = int_at_least("n_steps", params["n_steps"], 1)
            del effective["tolerance"], effective["max_steps"]  # only n_steps="auto" uses them
    if name == "DeepLift":
        effective["eps"] = number("eps", params["eps"], 0, low_open=True)
    if name == "GradientShap":
        effective["n_samples"] = int_at_least("n_samples", params["n_samples"], 1)
        effective["stdevs"] = number("stdevs", params["stdevs"], 0)
    if nt is not None:
        effective["noise_tunnel"] = nt.describe()
    if baselines is not None:
        effective["baselines"] = _describe_baselines(params["baselines"])

    net = model.pixel_module()
    x = model.pixel_tensor(images)
    if baselines is not None:  # on the model's device once, not once per call
        baselines = [b.to(x.device) for b in baselines]
    raw = np.zeros((n, t, 3, h, w), np.float32)
    delta = np.zeros((n, t), np.float32) if name in _DELTA and nt is None else None
    base_scores = None
    extras: dict[str, np.ndarray] = {}
    counter = [0]

    def count(_module: Any, args: tuple[Any, ...]) -> None:
        first = args[0]
        while isinstance(first, (tuple, list)):  # DeepLift's own pre-hook passes nested tuples
            first = first[0]
        counter[0] += int(first.shape[0])
        progress.tick(int(first.shape[0]))

    bs = int(getattr(model, "batch_size", n) or n)
    random = nt is not None or name in _RANDOM_METHODS or _has_random(params.get("baselines"))
    with model.guard(freeze_params=True), _lrp_rules(net, name), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_CAPTUM_NOISE)
        handle = net.register_forward_pre_hook(count)
        try:
            algo = _make_gradient(name, net, effective)
            all_targets = torch.as_tensor(targets, dtype=torch.int64, device=x.device)
            if name == "IntegratedGradients" and nt is None and baselines is not None:
                # every image, target and baseline as rows of shared captum calls (see _integrated_gradients)
                tuner = None
                memo = getattr(model, "memo", None)
                if params["n_steps"] == "auto" and params["internal_batch_size"] is None and memo is not None:
                    # the gradient passes' chunk size, tuned as predict's is (kept per model and image size)
                    tuner = memo.setdefault(("ig_auto_chunks", h, w), BatchTuner(int(model.batch_size)))
                raw, delta, base_scores, steps = _integrated_gradients(algo, x, targets, baselines, effective, tuner)
                if steps is not None:
                    extras["n_steps"] = steps
            else:
                for start in range(0, n, bs):  # images in chunks of the model's batch size
                    sl = slice(start, start + bs)
                    chunk = [b[sl] for b in baselines] if baselines is not None else None
                    for j in range(t):
                        with seeded(seed, x.device) if random else nullcontext():
                            attr, d = _gradient_call(name, algo, x[sl], all_targets[sl, j], chunk, effective, nt)
                        raw[sl, j] = attr
                        if delta is not None and d is not None:
                            delta[sl, j] = d
            if baselines is not None and base_scores is None:  # f(baseline), averaged over a list / distribution
                outs = []
                with torch.no_grad():
                    for start in range(0, n, bs):
                        outs.append(torch.stack([net(b[start : start + bs]) for b in baselines]).mean(0))
                out = torch.cat(outs)
                base_scores = out.gather(1, all_targets).float().cpu().numpy()
        except TypeError as exc:
            if name == "LRP" and "no rule defined" in str(exc):
                found = re.search(r"<class '([\w.]+)'>", str(exc))
                layer = found.group(1) if found else str(exc)
                raise MethodNotApplicableError(
                    f"model: captum.LRP has no propagation rule for layer type {layer.rsplit('.', 1)[-1]} ({layer}); "
                    "set a captum rule on those layers (layer.rule = EpsilonRule() etc.) or use another gradient "
                    "method, e.g. captum.IntegratedGradients"
                ) from None
            raise
        finally:
            handle.remove()
    return BackendResult(
        attributions=raw.sum(axis=2),
        raw=raw,
        params=effective,
        backend_version=_version(),
        base_scores=base_scores,
        n_model_evals=counter[0],
        extras={**extras, "convergence_delta": delta} if delta is not None else extras,
        uses_seed=random,
    )


def _integrated_gradients(
    algo: Any,
    x: Any,
    targets: np.ndarray,
    baselines: list[Any],
    params: Mapping[str, Any],
    tuner: BatchTuner | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """IG over every (image, target, baseline) row at once; returns raw, delta, base scores and steps used.

    The rows go through captum in groups whose size divides
    ``internal_batch_size``, so captum's chunks of (rows x steps) are full
    however few images there are (one image and ten random baselines fill
    them as well as ten images). The end points ``f(x)`` and ``f(baseline)``
    are evaluated once per image and baseline and give both the convergence
    delta, ``sum(attributions) - (f(x) - f(baseline))``, and ``base_scores``.
    ``n_steps="auto"`` goes to :func:`_integrated_gradients_auto`.

    Returns:
        ``raw`` float32 ``(N, T, 3, H, W)`` (mean over baselines), ``delta``
        float32 ``(N, T)`` (mean over baselines), ``base_scores`` float32
        ``(N, T)`` and, for ``"auto"``, int32 ``(N, T)`` steps.
    """
    import torch

    if params["n_steps"] == "auto":
        return _integrated_gradients_auto(algo.forward_func, x, targets, baselines, params, tuner)
    n, t = targets.shape
    k = len(baselines)
    ibs = int(params["internal_batch_size"])
    net = algo.forward_func
    tgt = torch.as_tensor(targets, dtype=torch.int64, device=x.device)
    fx, fb = _end_point_outputs(net, x, baselines, tgt, ibs)
    bases = torch.stack(baselines)  # (K, N, 3, H, W)
    ii, jj, kk = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(t), np.arange(k), indexing="ij"))
    gap = (fx[ii, jj] - fb[kk, ii, jj]).double()  # per row
    raw = torch.zeros((n * t, *x.shape[1:]), dtype=torch.float32, device=x.device)
    row_delta = torch.zeros(len(ii), dtype=torch.float64, device=x.device)
    auto = params["n_steps"] == "auto"
    steps = np.zeros(len(ii), np.int32)
    n_steps = _AUTO_FIRST_STEPS if auto else int(params["n_steps"])
    pending = np.arange(len(ii))
    while len(pending):
        last = not auto or n_steps * 2 > int(params["max_steps"])
        group = _group_size(ibs, len(pending))
        done = []
        for g in range(0, len(pending), group):
            rows = pending[g : g + group]
            attr = algo.attribute(
                x[ii[rows]],
                baselines=bases[kk[rows], ii[rows]],
                target=tgt[ii[rows], jj[rows]],
                n_steps=n_steps,
                method=params["method"],
                internal_batch_size=ibs,
            ).detach()
            d = attr.double().sum(dim=(1, 2, 3)) - gap[rows]
            ok = np.ones(len(rows), bool) if last else (d.abs() <= params["tolerance"]).cpu().numpy()
            if ok.any():
                keep = torch.as_tensor(np.flatnonzero(ok), device=x.device)
                flat = torch.as_tensor(ii[rows][ok] * t + jj[rows][ok], device=x.device)
                raw.index_add_(0, flat, attr.float()[keep] / k)
                row_delta[torch.as_tensor(rows[ok], device=x.device)] = d[keep]
                steps[rows[ok]] = n_steps
                done.append(rows[ok])
        pending = np.setdiff1d(pending, np.concatenate(done)) if done else pending
        n_steps *= 2
    delta = row_delta.view(n, t, k).mean(dim=2).float().cpu().numpy()
    base_scores = fb.mean(dim=0).float().cpu().numpy()
    used = steps.reshape(n, t, k).max(axis=2) if auto else None
    return raw.view(n, t, *x.shape[1:]).cpu().numpy(), delta, base_scores, used


def _end_point_outputs(net: Any, x: Any, baselines: list[Any], tgt: Any, batch: int) -> tuple[Any, Any]:
    """The target outputs at the images ``(N, T)`` and at each baseline ``(K, N, T)``, without gradients."""
    import torch

    n = x.shape[0]
    with torch.no_grad():
        fx = torch.cat([net(x[s : s + batch]) for s in range(0, n, batch)]).gather(1, tgt)
        fb = torch.stack(
            [torch.cat([net(b[s : s + batch]) for s in range(0, n, batch)]).gather(1, tgt) for b in baselines]
        )
    return fx, fb


def _integrated_gradients_auto(
    net: Any,
    x: Any,
    targets: np.ndarray,
    baselines: list[Any],
    params: Mapping[str, Any],
    tuner: BatchTuner | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """IG to a tolerance: a nested rule on 4, 8, 16, ... points per baseline, each doubling reusing every point.

    The path integral ``int_0^1 g(a) da`` is taken in ``u`` with
    ``a = (1 - cos(pi u)) / 2``: ``g(a(u)) a'(u)`` vanishes at both ends, and
    the points cluster there as Gauss-Legendre's do. Baseline ``k`` of ``K``
    uses the ``m`` points ``u = (j + s_k) / m`` with weights ``a'(u) / m``, a
    shifted rectangle rule, offsets ``s_k = (k + 1/2) / K``: together the
    baselines sample the path at ``K m`` distinct points, so the error common
    to their integrands averages out of the map (the average over baselines)
    as a ``K m``-point rule's would. Doubling to ``2m`` points with offset
    ``frac(2 s_k)`` keeps every point of ``m``, so a map that stops at ``m``
    points cost ``m`` gradient passes per baseline, whichever round it stopped
    in. Each (image, target) starts at 4 points per baseline, and all its
    baselines double while the convergence delta of its map (averaged over the
    baselines, the map returned) exceeds ``tolerance`` and ``2m <= max_steps``.
    The completeness error is a weak proxy of a map's accuracy on rough
    integrands: on EfficientNet-Lite0 with 10 random baselines, 32 points gave
    a smaller delta than a 50-point trapezoid (0.05 vs 0.24) but a larger L2
    distance to a 128-point map (18% vs 11%). The gradient is captum's: of the target output with
    respect to the path's images, batched over every (image, target,
    baseline, point): ``internal_batch_size`` at a time, or in chunks chosen
    by ``tuner`` (when ``internal_batch_size`` was left to its default: on
    these CPUs 4 images a pass are ~15% faster than 16).

    Returns:
        As :func:`_integrated_gradients`; the steps are the points used per
        baseline, int32 ``(N, T)``.
    """
    import torch

    n, t = targets.shape
    k = len(baselines)
    ibs = int(params["internal_batch_size"])
    tolerance, max_points = float(params["tolerance"]), int(params["max_steps"])
    multiply = bool(params["multiply_by_inputs"])
    tgt = torch.as_tensor(targets, dtype=torch.int64, device=x.device)
    fx, fb = _end_point_outputs(net, x, baselines, tgt, ibs)
    bases = torch.stack(baselines)  # (K, N, 3, H, W)
    raw = np.zeros((n, t, *x.shape[1:]), np.float32)
    delta = np.zeros((n, t), np.float32)
    steps = np.zeros((n, t), np.int32)
    pairs = [(i, j) for i in range(n) for j in range(t)]
    per_block = max(1, _AUTO_ROWS // k)
    for start in range(0, len(pairs), per_block):  # bounded memory: a block of pairs' gradient sums at a time
        block = pairs[start : start + per_block]
        ii = np.repeat([i for i, _ in block], k)
        jj = np.repeat([j for _, j in block], k)
        kk = np.tile(np.arange(k), len(block))
        start_points, diff = bases[kk, ii], x[ii] - bases[kk, ii]  # (R, 3, H, W)
        row_target = tgt[ii, jj]
        gap = (fx[ii, jj] - fb[kk, ii, jj]).double()  # (R,)
        weighted = torch.zeros_like(diff)  # sum of g(a(u)) a'(u) over each row's points so far
        offsets = (kk + 0.5) / k  # s of each row
        row_delta = torch.zeros(len(ii), dtype=torch.float64, device=x.device)
        live = np.arange(len(block))  # pairs still refining; all at m points a baseline
        rows = np.arange(len(ii))  # their rows
        m = _AUTO_FIRST_STEPS
        points = [(int(r), (q + offsets[r]) / m) for r in rows for q in range(m)]  # the new (row, u) of the round
        while True:
            _add_path_gradients(net, start_points, diff, row_target, points, weighted, ibs, tuner)
            r = torch.as_tensor(rows, device=x.device)
            row_delta[r] = (weighted[r] / m * diff[r]).double().sum(dim=(1, 2, 3)) - gap[r]
            d = row_delta.view(len(block), k)[live].mean(dim=1)
            # all of an (image, target)'s baselines refine together: refining only the worst ones until
            # their errors cancel in the mean passes maps far from converged (EfficientNet-Lite0, 10 random
            # baselines: 74% L2 error against a 128-point map at ~11 points a baseline)
            ok = (d.abs() <= tolerance).cpu().numpy() | (2 * m > max_points)
            for q in np.flatnonzero(ok):
                pair = live[q]
                mean_grad = weighted[pair * k : (pair + 1) * k] / m
                out = (mean_grad * diff[pair * k : (pair + 1) * k] if multiply else mean_grad).mean(dim=0)
                i, j = block[pair]
                raw[i, j] = out.float().cpu().numpy()
                delta[i, j] = float(d[q])
                steps[i, j] = m
            live = live[~ok]
            if not len(live):
                break
            rows = (live[:, None] * k + np.arange(k)).ravel()
            # 2m points with offset frac(2s) hold the m old ones at every other index; the others are new
            doubled = 2 * offsets[rows]
            offsets[rows] = doubled % 1.0
            m *= 2
            first_new = np.where(doubled < 1, 1, 0).tolist()
            points = [
                (int(r), (q + offsets[r]) / m) for r, f in zip(rows, first_new, strict=True) for q in range(f, m, 2)
            ]
    return raw, delta, fb.mean(dim=0).float().cpu().numpy(), steps


def _add_path_gradients(
    net: Any,
    start: Any,
    diff: Any,
    target: Any,
    points: list[tuple[int, float]],
    into: Any,
    batch: int,
    tuner: BatchTuner | None = None,
) -> None:
    """Add ``g(a(u)) a'(u)`` for every ``(row, u)`` of ``points`` into ``into[row]``, ``batch`` at a time or tuned.

    ``g`` is the target's input gradient at ``start + a * diff`` and
    ``a(u) = (1 - cos(pi u)) / 2``, ``a'(u) = pi sin(pi u) / 2``.
    """

    def run(chunk_ids: np.ndarray) -> np.ndarray:
        _path_gradient_chunk(net, start, diff, target, [points[int(c)] for c in chunk_ids[:, 0]], into)
        return np.zeros((len(chunk_ids), 1), np.float32)

    ids = np.arange(len(points)).reshape(-1, 1)
    if tuner is not None and len(points) > 1:
        tuner(run, ids)
    else:
        batched(run, ids, batch)


def _path_gradient_chunk(
    net: Any, start: Any, diff: Any, target: Any, chunk: list[tuple[int, float]], into: Any
) -> None:
    """One forward and backward pass over the path images of ``chunk``; their weighted gradients go into ``into``."""
    import math

    import torch

    if not chunk:
        return
    idx = torch.as_tensor([r for r, _ in chunk], device=diff.device)
    alpha = [(1 - math.cos(math.pi * u)) / 2 for _, u in chunk]
    weight = [math.pi * math.sin(math.pi * u) / 2 for _, u in chunk]
    a = torch.as_tensor(alpha, dtype=diff.dtype, device=diff.device).view(-1, 1, 1, 1)
    path = (start[idx] + a * diff[idx]).requires_grad_(True)
    out = net(path).gather(1, target[idx].view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(out, path)
    w = torch.as_tensor(weight, dtype=grad.dtype, device=grad.device).view(-1, 1, 1, 1)
    into.index_add_(0, idx, grad * w)


def _group_size(internal_batch_size: int, rows: int) -> int:
    """The largest divisor of ``internal_batch_size`` up to ``rows``: captum's chunks of rows x steps are then full."""
    if rows >= internal_batch_size:
        return internal_batch_size
    return max(d for d in range(1, rows + 1) if internal_batch_size % d == 0)


def _make_gradient(name: str, net: Any, params: Mapping[str, Any]) -> Any:
    import captum.attr as ca

    cls = getattr(ca, name)
    if name in ("IntegratedGradients", "DeepLiftShap", "GradientShap"):
        return cls(net, multiply_by_inputs=bool(params["multiply_by_inputs"]))
    if name == "DeepLift":
        return cls(net, multiply_by_inputs=bool(params["multiply_by_inputs"]), eps=float(params["eps"]))
    return cls(net)


def _gradient_call(
    name: str,
    algo: Any,
    x: Any,
    target: Any,
    baselines: list[Any] | None,
    params: Mapping[str, Any],
    nt: NoiseTunnel | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One captum call (or one per baseline for IG/DeepLift lists); returns (attr (N,3,H,W), delta (N,) or None)."""
    import captum.attr as ca

    kwargs: dict[str, Any] = {}
    if name == "Saliency":
        kwargs["abs"] = bool(params["abs"])
    if name == "IntegratedGradients":
        kwargs.update(
            n_steps=params["n_steps"], method=params["method"], internal_batch_size=params["internal_batch_size"]
        )
    if name == "GradientShap":
        kwargs.update(n_samples=params["n_samples"], stdevs=float(params["stdevs"]))
    want_delta = name in _DELTA and nt is None
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
        out = runner.attribute(x, target=target, **kwargs)
        return _np(out), None
    if name in _DISTRIBUTION:
        attrs = []
        for i in range(x.shape[0]):  # each image has its own distribution (e.g. its mean colour)
            dist = torch_cat([b[i : i + 1] for b in baselines]).to(x.device)
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


def torch_cat(tensors: Sequence[Any]) -> Any:
    """``torch.cat`` along the batch axis (kept tiny so torch is imported lazily)."""
    import torch

    return torch.cat(list(tensors))


#: What captum's LRP sets on every layer (``activations`` holds the layer's input tensors).
_LRP_LAYER_ATTRS = ("rule", "activations", "activation")


@contextmanager
def _lrp_rules(net: Any, name: str) -> Iterator[None]:
    """Put back what captum's LRP leaves on the layers, also when it raises.

    LRP sets ``rule`` (and deletes rules the user set), and ``activations``, a
    dict holding each layer's input tensors, on every layer; on a rule it sets
    relevance dicts holding gradients and hook handles. Each layer attribute
    is restored to what it was (absent ones removed) and a user's rule gets its
    own attributes back, so no tensor of the run stays referenced.
    """
    if name != "LRP":
        yield
        return
    missing = object()
    layers = [(m, {k: vars(m).get(k, missing) for k in _LRP_LAYER_ATTRS}) for m in net.modules()]
    rules = [
        (rule, dict(vars(rule)))
        for _, saved in layers
        if (rule := saved["rule"]) is not missing and rule is not None and hasattr(rule, "__dict__")
    ]
    try:
        yield
    finally:
        for layer, saved in layers:
            state = vars(layer)
            for key, value in saved.items():
                if value is missing:
                    state.pop(key, None)
                else:
                    state[key] = value
        for rule, attrs in rules:
            vars(rule).clear()
            vars(rule).update(attrs)


# --- perturbation methods -------------------------------------------------------------------------------------


def _run_perturbation(request: ExplainRequest, name: str) -> BackendResult:
    import captum.attr as ca
    import torch
    from xai_bridge.adapters._torch import seeded

    params = check_params(request.method, request.params, PERTURBATION_METHODS[name])
    model, images, targets, seed = request.model, request.images, request.targets, request.seed
    n, h, w, _ = images.shape
    t = targets.shape[1]
    per_eval = int_or_default(
        "perturbations_per_eval", params["perturbations_per_eval"], getattr(model, "batch_size", 32)
    )
    effective: dict[str, Any] = {**params, "perturbations_per_eval": per_eval}
    if isinstance(params["baselines"], list):
        raise ParameterError(
            f"baselines: captum.{name} takes one baseline (a number, RGB tuple, image, 'random' or 'mean'), not a list"
        )
    rng = np.random.default_rng(seed)
    baseline = _baselines_list(params["baselines"], images, rng)[0]  # (N, 3, H, W) float32
    effective["baselines"] = _describe_baselines(params["baselines"])
    forward, x_all, counter = _forward_func(model, images)
    kwargs: dict[str, Any] = {"perturbations_per_eval": per_eval}
    segments = None
    if name == "Occlusion":
        win = _pair("window", params["window"], (h, w))
        stride = _pair("stride", params["stride"], win)
        effective.update(window=list(win), stride=list(stride))
        kwargs.update(sliding_window_shapes=(3, *win), strides=(3, *stride))
    else:
        segments, effective["segmentation"] = segment_images(params["segmentation"], images)
        if name in ("KernelShap", "Lime") and (segments.reshape(n, -1).max(axis=1) < 1).any():
            raise ParameterError(
                f"segmentation: captum.{name} needs at least 2 superpixels per image, but an image got "
                "one; ask for more segments (e.g. Segmentation('slic', {'n_segments': 50}))"
            )
        if "n_samples" in params:
            effective["n_samples"] = kwargs["n_samples"] = int_at_least("n_samples", params["n_samples"], 1)
    algo = getattr(ca, name)(forward)
    attributions = np.zeros((n, t, h, w), np.float32)
    base_scores = np.zeros((n, t), np.float32)
    with _maybe_guard(model):
        for i in range(n):
            x = x_all[i : i + 1]
            b = baseline[i : i + 1].to(x.device)
            call = dict(kwargs)
            if segments is not None:
                call["feature_mask"] = torch.as_tensor(segments[i], dtype=torch.int64, device=x.device)[None, None]
            base_out = forward(b)
            for j in range(t):
                target = int(targets[i, j])
                with seeded(seed, x.device):
                    attr = algo.attribute(x, baselines=b, target=target, **call)
                attributions[i, j] = _np(attr)[0].mean(axis=0)  # every channel of a pixel shares one value
                base_scores[i, j] = float(base_out[0, target])
    extras: dict[str, np.ndarray] = {}
    if segments is not None:
        s_max = int(segments.max()) + 1
        weights = np.full((n, t, s_max), np.nan, np.float32)
        for i in range(n):
            sizes = np.bincount(segments[i].ravel(), minlength=s_max)
            for j in range(t):
                sums = np.bincount(segments[i].ravel(), weights=attributions[i, j].ravel(), minlength=s_max)
                present = sizes > 0
                weights[i, j, present] = sums[present] / sizes[present]
        extras = {"segments": np.repeat(segments[:, None], t, axis=1), "superpixel_weights": weights}
    return BackendResult(
        attributions=attributions,
        params=effective,
        backend_version=_version(),
        base_scores=base_scores,
        n_model_evals=counter[0],
        extras=extras,
        uses_seed=name in _RANDOM_METHODS or _has_random(params["baselines"]),
    )


def _forward_func(model: Any, images: np.ndarray) -> tuple[Callable[[Any], Any], Any, list[int]]:
    """``(forward, pixel tensor (N,3,H,W) float in [0,255], counter)``.

    A torch model's ``pixel_module`` is called directly (evaluations counted
    here); any other model gets uint8 NHWC batches through ``model.predict``
    (counted by the caller).
    """
    import torch

    counter = [0]
    if hasattr(model, "pixel_module") and hasattr(model, "pixel_tensor"):
        net = model.pixel_module()

        def forward_torch(x: Any) -> Any:
            counter[0] += int(x.shape[0])
            progress.tick(int(x.shape[0]))
            with torch.no_grad():
                return net(x)

        return forward_torch, model.pixel_tensor(images), counter

    def forward_predict(x: Any) -> Any:
        arr = x.detach().cpu().numpy().transpose(0, 2, 3, 1)
        out = model.predict(to_uint8(arr))
        return torch.as_tensor(np.asarray(out, dtype=np.float32), device=x.device)

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().contiguous()
    return forward_predict, x, counter


@contextmanager
def _maybe_guard(model: Any) -> Iterator[None]:
    if hasattr(model, "guard") and hasattr(model, "pixel_module"):
        with model.guard(freeze_params=True):
            yield
    else:
        yield


# --- baselines ------------------------------------------------------------------------------------------------


def _baselines_list(spec: Any, images: np.ndarray, rng: np.random.Generator) -> list[Any]:
    """Each baseline as a float32 tensor ``(N, 3, H, W)`` in pixel units (a list spec gives several)."""
    import torch

    specs = list(spec) if isinstance(spec, list) else [spec]
    if not specs:
        raise ParameterError("baselines: expected at least one baseline, got an empty list")
    out = []
    for s in specs:
        arr = np.stack([_one_baseline(s, img, rng, i) for i, img in enumerate(images)])
        out.append(torch.from_numpy(arr))
    return out


def _one_baseline(spec: Any, image: np.ndarray, rng: np.random.Generator, index: int) -> np.ndarray:
    h, w = image.shape[:2]
    hint = (
        "baselines: expected a number, an RGB tuple, an image array, 'random', 'mean' or a list of those "
        f"(pixel units 0-255), got {spec!r}"
    )
    if isinstance(spec, str):
        if spec == "random":
            return rng.uniform(0.0, 255.0, size=(3, h, w)).astype(np.float32)
        if spec == "mean":
            return np.broadcast_to(image.reshape(-1, 3).mean(0).astype(np.float32)[:, None, None], (3, h, w)).copy()
        raise ParameterError(hint)
    if isinstance(spec, bool):
        raise ParameterError(hint)
    if isinstance(spec, (int, float, np.integer, np.floating)):
        return np.full((3, h, w), float(spec), np.float32)
    if isinstance(spec, tuple):
        if len(spec) != 3 or not all(isinstance(v, (int, float, np.integer, np.floating)) for v in spec):
            raise ParameterError(hint)
        return np.broadcast_to(np.asarray(spec, np.float32)[:, None, None], (3, h, w)).copy()
    arr = np.asarray(spec)
    if arr.ndim == 4 and arr.shape[1:] == (h, w, 3):
        arr = arr[index]
    if arr.shape != (h, w, 3) or not np.issubdtype(arr.dtype, np.number):
        raise ParameterError(
            f"baselines: an image baseline must have shape {(h, w, 3)} (HWC, pixel units 0-255), "
            f"got {np.asarray(spec).shape}"
        )
    return arr.astype(np.float32).transpose(2, 0, 1).copy()


def _describe_baselines(spec: Any) -> Any:
    if isinstance(spec, list):
        return [_describe_baselines(s) for s in spec]
    if isinstance(spec, tuple):
        return [float(v) for v in spec]
    if isinstance(spec, np.ndarray):
        return f"array{tuple(spec.shape)}"
    if isinstance(spec, (np.integer, np.floating)):
        return spec.item()
    return spec


def _has_random(spec: Any) -> bool:
    if isinstance(spec, list):
        return any(_has_random(s) for s in spec)
    return isinstance(spec, str) and spec == "random"


# --- helpers --------------------------------------------------------------------------------------------------


def _pair(name: str, value: Any, limit: tuple[int, int]) -> tuple[int, int]:
    vals = (value, value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    try:
        a, b = (int(v) for v in vals)
    except (TypeError, ValueError):
        raise ParameterError(f"{name}: expected a positive integer or an (h, w) pair, got {value!r}") from None
    if a < 1 or b < 1:
        raise ParameterError(f"{name}: expected positive sizes, got {value!r}")
    return min(a, limit[0]), min(b, limit[1])


def _np(tensor: Any) -> np.ndarray:
    return tensor.detach().float().cpu().numpy()


def _version() -> str:
    return library_version("captum")


# --- registered names -----------------------------------------------------------------------------------------

#: One line per method for the listing; every key of the two tables above has one.
_DESCRIPTIONS = {
    "Saliency": "vanilla gradients (Simonyan et al. 2013)",
    "InputXGradient": "input times gradient",
    "IntegratedGradients": "integrated gradients (Sundararajan et al. 2017), baselines may be a list to average",
    "DeepLift": "DeepLIFT rescale rule (Shrikumar et al. 2017)",
    "DeepLiftShap": "DeepLIFT averaged over a baseline distribution",
    "GradientShap": "expected gradients over a baseline distribution (Lundberg & Lee 2017)",
    "GuidedBackprop": "guided backpropagation (Springenberg et al. 2014)",
    "Deconvolution": "deconvolution (Zeiler & Fergus 2014)",
    "LRP": "layer-wise relevance propagation (Bach et al. 2015) where captum has rules for every layer",
    "Occlusion": "sliding-window occlusion (Zeiler & Fergus 2014)",
    "FeatureAblation": "superpixel ablation",
    "ShapleyValueSampling": "Shapley value sampling over superpixels (Castro et al. 2009)",
    "KernelShap": "Kernel SHAP over superpixels (Lundberg & Lee 2017)",
    "Lime": "captum's LIME over superpixels (Ribeiro et al. 2016)",
}

SPECS = tuple(
    MethodSpec(
        name=f"captum.{cls}",
        target=f"{__name__}:run",
        requires=("captum", "torch"),
        extra="captum",
        family="gradient",
        needs_gradients=True,
        options={"cls": cls},
        signed=not defaults.get("abs", False),
        random=cls in _RANDOM_METHODS or _has_random(defaults.get("baselines", 0)),
        description=f"captum {cls}: {_DESCRIPTIONS[cls]}; torch models, on image pixels "
        "(noise_tunnel= for SmoothGrad/VarGrad).",
    )
    for cls, defaults in GRADIENT_METHODS.items()
) + tuple(
    MethodSpec(
        name=f"captum.{cls}",
        target=f"{__name__}:run",
        requires=("captum", "torch", "skimage") + (("sklearn",) if cls in ("KernelShap", "Lime") else ()),
        extra="captum",
        family="perturbation",
        signed=True,
        options={"cls": cls},
        random=cls in _RANDOM_METHODS,
        budget="n_samples" if cls in ("KernelShap", "Lime", "ShapleyValueSampling") else None,
        description=f"captum {cls}: {_DESCRIPTIONS[cls]}; any model, batched through model.predict.",
    )
    for cls in PERTURBATION_METHODS
)
