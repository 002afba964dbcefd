"""torchcam (``pip install torchcam``): every CAM extractor with a class-score target.

A method is registered when the installed version defines its class (checked
by reading torchcam's source files, without importing it); when torchcam is
not installed every name is registered so that using one gives the install
hint. Not registered: ``RefineCAM`` (a product of min-max-scaled maps from
several layers, so no raw map) and ``LeGrad`` (torchvision ViT attention only).
"""

from __future__ import annotations

from xai_bridge.registry import BackendSpec

from . import defines_class

_MOD = "xai_bridge.adapters.backends.torchcam_backend"

# (class, source file in torchcam/methods, description)
_TABLE = (
    ("CAM", "activation.py", "CAM: activations weighted by the classifier's weights (needs GAP + one linear layer)"),
    ("ScoreCAM", "activation.py", "Score-CAM: weights from scores of activation-masked images"),
    ("SSCAM", "activation.py", "SS-CAM: Score-CAM with noise-smoothed masks (seeded)"),
    ("ISCAM", "activation.py", "IS-CAM: Score-CAM integrated over mask intensities"),
    ("GradCAM", "gradient.py", "Grad-CAM: activations weighted by mean gradients"),
    ("GradCAMpp", "gradient.py", "Grad-CAM++: second-order weighting of positive gradients"),
    (
        "SmoothGradCAMpp",
        "gradient.py",
        "Smooth Grad-CAM++: Grad-CAM++ with gradients averaged over noisy inputs (seeded)",
    ),
    ("XGradCAM", "gradient.py", "XGrad-CAM: gradients weighted by normalised activations"),
    ("LayerCAM", "gradient.py", "LayerCAM: positive gradients x activations per position"),
    ("FinerCAM", "gradient.py", "Finer-CAM: the target score minus the scores of the closest classes"),
)


SPECS = tuple(
    BackendSpec(
        name=f"torchcam.{cls}",
        target=f"{_MOD}:cam",
        requires=("torchcam", "torch"),
        extra="torchcam",
        family="cam",
        needs_gradients=True,
        options={"method": cls},
        description=f"torchcam {description}; raw maps at image resolution.",
    )
    for cls, relpath, description in _TABLE
    if defines_class("torchcam", f"methods/{relpath}", cls)
)
