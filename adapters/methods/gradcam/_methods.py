"""One record per pytorch-grad-cam class: how to build and call it, its parameters and their checks.

Adding a method of the library is one entry in :data:`METHODS`; its spec
(``gradcam.<name>``) is derived from the entry in the package's ``__init__``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xai_bridge._validate import choice, number
from xai_bridge.errors import ParameterError

from ._runner import LAYER_PARAMS, Build, Explain, build_ablation, build_finer, finer_maps

__all__ = ["METHODS", "SMOOTHING", "Kernel", "check_values", "defaults"]


class Kernel(str, enum.Enum):
    """Kernel of KPCA-CAM's kernel PCA (scikit-learn names)."""

    LINEAR = "linear"
    POLY = "poly"
    RBF = "rbf"
    SIGMOID = "sigmoid"
    COSINE = "cosine"


@dataclass(frozen=True)
class _CamClass:
    """How to build and call one pytorch-grad-cam class.

    Attributes:
        ctor: user params passed to the constructor, with their defaults.
        attrs: user params set as attributes after construction.
        call: user params of the call (FinerCAM).
        layer: whether the method uses a target layer.
        smoothing: whether ``aug_smooth`` / ``eigen_smooth`` apply.
        random: whether the method draws random numbers.
        freeze: run with parameters frozen (``requires_grad=False``); ShapleyCAM
            differentiates gradients, which needs the parameters in the graph.
        per_channel: whether it runs one forward pass per feature channel
            (Score-CAM, Ablation-CAM), so its cost is not known beforehand.
        build: how to construct it (None: the library class of that name).
        explain: how to call it (None: once per batch and target column).
        upsample: whether its raw maps are at layer resolution (FullGrad's
            are at image size already).
        quick: the cheapest params that still exercise it (:attr:`MethodSpec.quick`).
        description: one line for the method listing.
    """

    ctor: Mapping[str, Any] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)
    call: Mapping[str, Any] = field(default_factory=dict)
    layer: bool = True
    smoothing: bool = True
    random: bool = False
    freeze: bool = True
    per_channel: bool = False
    build: Build | None = None
    explain: Explain | None = None
    upsample: bool = True
    quick: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


#: Library class name -> how to run it; each is registered as ``gradcam.<name>`` (the specs: the package's ``__init__``).
METHODS: dict[str, _CamClass] = {
    "GradCAM": _CamClass(description="Grad-CAM: activations weighted by mean gradients"),
    "HiResCAM": _CamClass(description="HiResCAM: element-wise gradients x activations, summed"),
    "GradCAMPlusPlus": _CamClass(description="Grad-CAM++: second-order weighting of positive gradients"),
    "XGradCAM": _CamClass(description="XGrad-CAM: gradients weighted by normalised activations"),
    "ScoreCAM": _CamClass(
        attrs={"batch_size": 16},
        per_channel=True,
        quick={"batch_size": 8},
        description="Score-CAM: weights from scores of activation-masked images",
    ),
    "AblationCAM": _CamClass(
        ctor={"batch_size": 32, "ratio_channels_to_ablate": 1.0},
        per_channel=True,
        build=build_ablation,
        quick={"batch_size": 8},
        description="Ablation-CAM: weights from the score drop when ablating each channel",
    ),
    "EigenCAM": _CamClass(description="Eigen-CAM: first principal component of the activations"),
    "EigenGradCAM": _CamClass(description="Eigen-Grad-CAM: first principal component of gradients x activations"),
    "LayerCAM": _CamClass(description="LayerCAM: positive gradients x activations per position"),
    "FullGrad": _CamClass(
        layer=False, upsample=False, description="FullGrad: input gradients plus every conv/BN bias gradient"
    ),
    "GradCAMElementWise": _CamClass(description="Grad-CAM element-wise: ReLU of gradients x activations, summed"),
    "KPCA_CAM": _CamClass(
        ctor={"kernel": Kernel.SIGMOID, "gamma": None},
        random=True,
        description="KPCA-CAM: first kernel-PCA component of the activations",
    ),
    "ShapleyCAM": _CamClass(freeze=False, description="ShapleyCAM: gradient and Hessian-vector-product weights"),
    "FinerCAM": _CamClass(
        call={"alpha": 1.0, "comparison_categories": (1, 2, 3)},
        smoothing=False,
        build=build_finer,
        explain=finer_maps,
        quick={"comparison_categories": (1, 2)},
        description="Finer-CAM: Grad-CAM of the target score against the most similar classes",
    ),
    "FEM": _CamClass(ctor={"k": 2}, description="Feature Explanation Method: k-sigma thresholded activations"),
    "SegEigenCAM": _CamClass(
        description="Seg-Eigen-CAM: sign-corrected principal component of |gradients| x activations"
    ),
    "RandomCAM": _CamClass(random=True, description="Random channel weights: a sanity-check baseline"),
}

SMOOTHING = {"aug_smooth": False, "eigen_smooth": False}


def defaults(spec: _CamClass) -> dict[str, Any]:
    return {
        **(LAYER_PARAMS if spec.layer else {}),
        **(SMOOTHING if spec.smoothing else {}),
        **spec.ctor,
        **spec.attrs,
        **spec.call,
    }


def check_values(params: dict[str, Any]) -> None:
    """Refuse bad values before the library sees them; ``kernel`` is stored as spelled by scikit-learn."""
    for key in ("batch_size", "k"):
        value = params.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{key}: expected a positive integer, got {value!r}")
    comparison = params.get("comparison_categories", (1,))
    if isinstance(comparison, (str, bytes)) or not all(isinstance(c, (int, np.integer)) for c in comparison):
        raise ParameterError(f"comparison_categories: expected ranks as integers, e.g. (1, 2, 3), got {comparison!r}")
    if "ratio_channels_to_ablate" in params:
        number("ratio_channels_to_ablate", params["ratio_channels_to_ablate"], 0, 1, low_open=True)
    if "kernel" in params:  # the library's own check is an assertion deep in scikit-learn
        params["kernel"] = choice(
            "kernel", getattr(params["kernel"], "value", params["kernel"]), [k.value for k in Kernel]
        )
    if params.get("gamma") is not None:
        number("gamma", params["gamma"], 0, low_open=True)
    if "alpha" in params:
        number("alpha", params["alpha"])
    for key in ("aug_smooth", "eigen_smooth"):
        if key in params and not isinstance(params[key], (bool, np.bool_)):
            raise ParameterError(f"{key}: expected True or False, got {params[key]!r}")
