"""captum (https://captum.ai): gradient methods on torch models, perturbation methods on any model."""

from xai_bridge.registry import BackendSpec

_TARGET = "xai_bridge.adapters.backends.captum_backend:run"

_GRADIENT = (
    ("Saliency", "vanilla gradients (Simonyan et al. 2013)"),
    ("InputXGradient", "input times gradient"),
    ("IntegratedGradients", "integrated gradients (Sundararajan et al. 2017), baselines may be a list to average"),
    ("DeepLift", "DeepLIFT rescale rule (Shrikumar et al. 2017)"),
    ("DeepLiftShap", "DeepLIFT averaged over a baseline distribution"),
    ("GradientShap", "expected gradients over a baseline distribution (Lundberg & Lee 2017)"),
    ("GuidedBackprop", "guided backpropagation (Springenberg et al. 2014)"),
    ("Deconvolution", "deconvolution (Zeiler & Fergus 2014)"),
    ("LRP", "layer-wise relevance propagation (Bach et al. 2015) where captum has rules for every layer"),
)

_PERTURBATION = (
    ("Occlusion", "sliding-window occlusion (Zeiler & Fergus 2014)"),
    ("FeatureAblation", "superpixel ablation"),
    ("ShapleyValueSampling", "Shapley value sampling over superpixels (Castro et al. 2009)"),
    ("KernelShap", "Kernel SHAP over superpixels (Lundberg & Lee 2017)"),
    ("Lime", "captum's LIME over superpixels (Ribeiro et al. 2016)"),
)

SPECS = tuple(
    BackendSpec(
        name=f"captum.{cls}",
        target=_TARGET,
        requires=("captum", "torch"),
        extra="captum",
        family="gradient",
        needs_gradients=True,
        options={"cls": cls},
        description=f"captum {cls}: {text}; torch models, on image pixels (noise_tunnel= for SmoothGrad/VarGrad).",
    )
    for cls, text in _GRADIENT
) + tuple(
    BackendSpec(
        name=f"captum.{cls}",
        target=_TARGET,
        requires=("captum", "torch", "skimage") + (("sklearn",) if cls in ("KernelShap", "Lime") else ()),
        extra="captum",
        family="perturbation",
        needs_gradients=False,
        options={"cls": cls},
        description=f"captum {cls}: {text}; any model, batched through model.predict.",
    )
    for cls, text in _PERTURBATION
)
