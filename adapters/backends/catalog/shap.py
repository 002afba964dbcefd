"""shap: the Partition explainer (any model) and GradientExplainer (torch models)."""

from xai_bridge.registry import BackendSpec

_MOD = "xai_bridge.adapters.backends.shap_backend"

SPECS = (
    BackendSpec(
        name="shap.partition",
        target=f"{_MOD}:partition",
        requires=("shap", "cv2"),
        extra="shap",
        family="perturbation",
        description="shap's Partition explainer (Owen values) with an image masker (inpaint, blur, constant); "
        "any model, batched through model.predict.",
    ),
    BackendSpec(
        name="shap.gradient",
        target=f"{_MOD}:gradient",
        requires=("shap", "torch"),
        extra="shap",
        family="gradient",
        needs_gradients=True,
        description="shap's GradientExplainer (expected gradients) on image pixels of a torch model.",
    ),
)
