"""Deep Feature Factorization (Collins et al. 2018, https://arxiv.org/abs/1806.10206) through pytorch-grad-cam.

It factorises one image's layer activations into ``n_components`` concepts
(non-negative matrix factorisation, per image, deterministic) and defines its
own targets: one per concept, so ``T = n_components`` and the requested
``targets`` are not used (see :mod:`~xai_bridge.adapters.methods.gradcam`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np

from xai_bridge.contract import BackendResult, ExplainRequest, check_params, library_version, require_differentiable
from xai_bridge.errors import ParameterError

from ._runner import LAYER_PARAMS, enter, upsample

__all__ = ["deep_feature_factorization"]


def _resolve_head(module: Any, head: Any, channels: int) -> Callable[[Any], Any]:
    from torch import nn

    if callable(head) and not isinstance(head, str):
        return head
    modules = dict(module.named_modules())
    if isinstance(head, str):
        if head not in modules:
            raise ParameterError(f"head: no submodule named {head!r}; pass the classifier layer or its dotted name")
        return modules[head]
    if head is not None:
        raise ParameterError(f"head: expected None, a module, a callable or a dotted name, got {type(head).__name__}")
    linear = [m for m in modules.values() if isinstance(m, nn.Linear) and m.in_features == channels]
    if not linear:
        raise ParameterError(
            f"head: found no nn.Linear with {channels} inputs to score the concepts of the layer; pass head= "
            "(the classifier applied to the pooled layer output) or a layer feeding it"
        )
    return linear[-1]


def deep_feature_factorization(request: ExplainRequest) -> BackendResult:
    """Deep Feature Factorization (Collins et al. 2018, https://arxiv.org/abs/1806.10206).

    See the module docstring for how concepts map to ``(N, T)``.

    Params:
        layer, reshape_transform: as for Grad-CAM.
        n_components: concepts per image (default 5, as ``run_dff_on_image``).
        head: module or callable scoring a concept embedding ``(K, C)`` ->
            ``(K, classes)`` (default: the last ``nn.Linear`` with ``C`` inputs).
        top_k: labels kept per concept (default 2).
    """
    from .._layer_run import layer_aliases

    params = check_params(
        request.method, layer_aliases(request.params), {**LAYER_PARAMS, "n_components": 5, "head": None, "top_k": 2}
    )
    for key in ("n_components", "top_k"):
        if not isinstance(params[key], (int, np.integer)) or params[key] < 1:
            raise ParameterError(f"{key}: expected a positive integer, got {params[key]!r}")
    model = require_differentiable(request)
    with ExitStack() as stack:
        counter = enter(request, model, stack)
        maps, probs, layer = _factorize(request, model, params)
    labels = np.argsort(-probs, axis=2, kind="stable")[:, :, : int(params["top_k"])]  # (N, K, top_k)
    label_scores = np.take_along_axis(probs, labels, axis=2)
    extras: dict[str, np.ndarray] = {
        "concept_labels": labels.astype(np.int64),
        "concept_label_scores": label_scores.astype(np.float32),
        "concept_probs": probs.astype(np.float32),
    }
    return BackendResult(
        attributions=maps,
        params={**params, **layer.describe()},
        backend_version=library_version("grad-cam"),
        n_model_evals=counter.count,
        extras=extras,
        targets=labels[:, :, 0].astype(np.int64),
        target_names=_concept_names(labels, label_scores, getattr(model, "class_names", None)),
        scores=label_scores[:, :, 0].astype(np.float32),
    )


def _factorize(request: ExplainRequest, model: Any, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, Any]:
    """Each image's concept maps ``(N, K, H, W)``, class probabilities ``(N, K, classes)`` and the layer used."""
    import torch
    from pytorch_grad_cam import DeepFeatureFactorization
    from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff

    from .._layer_run import check_outputs, request_layer

    images, targets = request.images, request.targets
    n, k = len(images), int(params["n_components"])
    maps = np.zeros((n, k, *images.shape[1:3]), np.float32)
    probs_all = []
    net = model.pixel_module()
    x0 = model.pixel_tensor(images[:1])
    layer = request_layer(model, net, x0, targets, params)
    check_outputs(net, x0, targets, request.n_outputs)
    head: Callable[[Any], Any] | None = None
    for i in range(n):
        x = model.pixel_tensor(images[i : i + 1])
        factorizer = DeepFeatureFactorization(net, layer.module, layer.reshape_transform)
        try:
            with torch.no_grad():
                factorizer.activations_and_grads(x)
            activations = factorizer.activations_and_grads.activations[0].cpu().numpy()
        finally:
            factorizer.activations_and_grads.release()
        concepts, explanations = dff(activations, n_components=k)
        head = head or _resolve_head(model.module, params["head"], concepts.shape[0])
        with torch.no_grad():
            emb = torch.from_numpy(np.float32(concepts).T).to(model.device)
            logits = head(emb).float().cpu().numpy()
        probs_all.append(torch.softmax(torch.from_numpy(logits), dim=-1).numpy())
        maps[i] = upsample(explanations[0], tuple(images.shape[1:3]))
    return maps, np.stack(probs_all), layer


def _concept_names(labels: np.ndarray, label_scores: np.ndarray, names: Any) -> np.ndarray:
    """``"concept k: Egyptian cat:0.81, tabby:0.12"`` per image and concept."""

    def label(c: int) -> str:
        return ",".join(str(names[c]).split(",")[:3]) if names is not None else str(c)

    return np.array(
        [
            [
                f"concept {j}: " + ", ".join(f"{label(c)}:{p:.2f}" for c, p in zip(lab, sc, strict=False))
                for j, (lab, sc) in enumerate(zip(labels[i], label_scores[i], strict=False))
            ]
            for i in range(len(labels))
        ]
    )
