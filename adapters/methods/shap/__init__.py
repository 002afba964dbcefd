"""shap's Partition explainer (any model) and GradientExplainer (torch models): the specs and the backends.

* :mod:`._partition`: the Partition explainer on pixels through ``model.predict``,
  over shap's axis-aligned tree or semantic regions (``partition=``).
* :mod:`._maskers`: shap's image masker and explainer, their structure built
  once per image shape, handing the model uint8 images.
* :mod:`._gradient`: the GradientExplainer on ``model.pixel_module()``.

Maskers are an :class:`ImageMasker` at the API; shap's strings
(``"blur(128,128)"``) are produced only when the shap masker is built. shap is
imported inside the backend functions only, so this package (and
:class:`ImageMasker`) can be imported without shap.
"""

from __future__ import annotations

from xai_bridge.options import ImageMasker, MaskKind
from xai_bridge.registry import MethodSpec

from .._drift import LibraryClasses
from ._gradient import gradient, target_groups
from ._partition import PARTITION_DEFAULTS, partition, partition_evals

__all__ = ["ImageMasker", "MaskKind", "gradient", "partition", "target_groups"]

SPECS = (
    MethodSpec(
        name="shap.Partition",
        budget="max_evals",
        budget_default=int(PARTITION_DEFAULTS["max_evals"]),
        evaluations=partition_evals,
        quick={"max_evals": 24, "masker": "blur(8,8)"},
        target=f"{__name__}:partition",
        requires=("shap", "cv2"),
        extra="shap",
        family="perturbation",
        signed=True,
        random=True,  # shap breaks priority ties with numpy's global generator, seeded
        description="shap's Partition explainer (Owen values) with an image masker (inpaint, blur, constant); "
        "any model, batched through model.predict.",
        aliases=("shap.partition",),
    ),
    MethodSpec(
        name="shap.Gradient",
        target=f"{__name__}:gradient",
        requires=("shap", "torch"),
        extra="shap",
        family="gradient",
        needs_gradients=True,
        signed=True,
        random=True,
        description="shap's GradientExplainer (expected gradients) on image pixels of a torch model.",
        quick={"nsamples": 8},
        aliases=("shap.gradient",),
    ),
)

_TABULAR = "explains tabular features of a model's inputs, not image pixels"
#: What the drift test reads: every public class of ``shap.explainers`` is registered or excluded with a reason.
CLASSES = LibraryClasses(
    "shap.explainers",
    "shap",
    routed={"PartitionExplainer": "shap.Partition", "GradientExplainer": "shap.Gradient"},
    excluded={
        **dict.fromkeys(("TreeExplainer", "GPUTreeExplainer", "LinearExplainer", "AdditiveExplainer"), _TABULAR),
        "CoalitionExplainer": "Owen values over a user-given grouping of tabular features; images: shap.Partition",
        "DeepExplainer": "DeepLIFT-style SHAP; captum.DeepLiftShap routes the same method on image pixels",
        "ExactExplainer": "exact Shapley values need 2^features evaluations; on images shap.Partition",
        "KernelExplainer": "Kernel SHAP over tabular features; captum.KernelShap routes it over superpixels",
        "PermutationExplainer": "permutation sampling over tabular features; captum.ShapleyValueSampling on images",
        "SamplingExplainer": "Shapley sampling over tabular features; captum.ShapleyValueSampling on images",
    },
)
