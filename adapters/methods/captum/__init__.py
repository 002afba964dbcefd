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

Params (by method; all validated, unknown names raise):
    Saliency: ``abs`` (default True).
    IntegratedGradients (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365):
        ``baselines`` (default 0; a list is averaged over), ``n_steps`` (50,
        or ``"auto"``: a nested rule on 4 points per baseline, doubled,
        every point reused, until each image and target's ``|convergence
        delta|`` (of its map, averaged over the baselines) is within
        ``tolerance`` (0.01, in output units) or ``max_steps`` points (512)
        would be passed; see :mod:`._ig`),
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

from __future__ import annotations

from xai_bridge.contract import BackendResult, ExplainRequest
from xai_bridge.errors import ParameterError
from xai_bridge.options import NoiseKind, NoiseTunnel
from xai_bridge.registry import MethodSpec

from .._drift import LibraryClasses
from ._gradient import run_gradient
from ._ig import AUTO_RULE
from ._methods import GRADIENT_METHODS, METHODS, PERTURBATION_METHODS, has_random
from ._perturbation import run_perturbation

__all__ = ["AUTO_RULE", "GRADIENT_METHODS", "METHODS", "PERTURBATION_METHODS", "NoiseKind", "NoiseTunnel", "run"]


def run(request: ExplainRequest) -> BackendResult:
    """Run the captum class named by ``request.options["cls"]`` (params and extras: see the module docstring)."""
    name = str(request.options.get("cls", ""))
    if name in GRADIENT_METHODS:
        return run_gradient(request, name)
    if name in PERTURBATION_METHODS:
        return run_perturbation(request, name)
    raise ParameterError(
        f"options.cls: unknown captum class {name!r}; expected one of "
        f"{sorted(GRADIENT_METHODS) + sorted(PERTURBATION_METHODS)}"
    )


SPECS = tuple(
    MethodSpec(
        name=f"captum.{cls}",
        target=f"{__name__}:run",
        requires=("captum", "torch") + (("skimage",) if method.family == "perturbation" else ()) + method.requires,
        extra="captum",
        family=method.family,
        needs_gradients=method.family == "gradient",
        options={"cls": cls},
        signed=method.family == "perturbation" or not method.defaults.get("abs", False),
        random=method.random or has_random(method.defaults.get("baselines", 0)),
        budget="n_samples" if method.family == "perturbation" and "n_samples" in method.defaults else None,
        budget_default=method.defaults.get("n_samples") if method.family == "perturbation" else None,
        evaluations=method.evaluations,
        quick=method.quick,
        description=f"captum {cls}: {method.description}; "
        + (
            "torch models, on image pixels (noise_tunnel= for SmoothGrad/VarGrad)."
            if method.family == "gradient"
            else "any model, batched through model.predict."
        ),
    )
    for cls, method in METHODS.items()
)

_LAYER = "attributes a hidden layer's units, not the image's pixels (Grad-CAM: pytorch-grad-cam's and torchcam's)"
_NEURON = "explains one hidden neuron, not a class score"
_BASE = "a base class or interface for writing methods, not a method"
_TEXT = "text / LLM inputs and outputs, not image classification"
_STAT = "a statistic of captum's Summarizer, not a method"
_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (_BASE, ("Attribution", "GradientAttribution", "PerturbationAttribution", "LayerAttribution")),
    (_BASE, ("NeuronAttribution", "LimeBase", "InterpretableEmbeddingBase", "InterpretableInput")),
    (_LAYER, ("InternalInfluence", "LayerActivation", "LayerConductance", "LayerDeepLift", "LayerDeepLiftShap")),
    (_LAYER, ("LayerFeatureAblation", "LayerFeaturePermutation", "LayerGradCam", "LayerGradientShap")),
    (_LAYER, ("LayerGradientXActivation", "LayerIntegratedGradients", "LayerLRP")),
    (_NEURON, ("NeuronConductance", "NeuronDeconvolution", "NeuronDeepLift", "NeuronDeepLiftShap")),
    (_NEURON, ("NeuronFeatureAblation", "NeuronGradient", "NeuronGradientShap", "NeuronGuidedBackprop")),
    (_NEURON, ("NeuronIntegratedGradients",)),
    (_TEXT, ("LLMAttribution", "LLMAttributionResult", "LLMGradientAttribution", "RemoteLLMAttribution")),
    (_TEXT, ("RemoteLLMProvider", "VLLMProvider", "TextTemplateInput", "TextTokenInput", "TokenReferenceBase")),
    (_TEXT, ("ImageMaskInput",)),
    (_STAT, ("ClassSummarizer", "Count", "MSE", "Max", "Mean", "Min", "StdDev", "Sum", "Summarizer", "Var")),
    (_STAT, ("SummarizerSingleTensor",)),
)

#: What the drift test reads: every public class of ``captum.attr`` is registered or excluded with a reason.
CLASSES = LibraryClasses(
    "captum.attr",
    "captum",
    excluded={
        **{name: reason for reason, names in _GROUPS for name in names},
        "NoiseTunnel": "a wrapper of gradient methods: the noise_tunnel= option of every captum gradient method",
        "ProductBaselines": "a baseline sampler for the text methods; baselines= covers images",
        "DataLoaderAttribution": "attributes a whole DataLoader's aggregate metric, not one image's class score",
        "FeaturePermutation": "permutes features across the images of a batch, so a map depends on the other images",
        "ShapleyValues": "exact Shapley values need 2^features evaluations; captum.ShapleyValueSampling is routed",
        "GuidedGradCam": "gradcam.GuidedGradCAM routes the same method (raw Grad-CAM times guided backprop)",
    },
)
