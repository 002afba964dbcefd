"""pytorch-grad-cam (``pip install grad-cam``): every CAM method, guided backprop, DFF.

A method is registered when the installed version defines its class (checked
by reading the library's source file, without importing it); when the library
is not installed every name is registered so that using one gives the install
hint.
"""

from __future__ import annotations

from xai_bridge.registry import BackendSpec

from . import defines_class

_MOD = "xai_bridge.adapters.backends.gradcam_backend"
_REQUIRES = ("pytorch_grad_cam", "torch", "cv2")

# (registered name, library source file, class, backend function, family, description)
_TABLE = (
    ("GradCAM", "grad_cam.py", "GradCAM", "cam", "cam", "Grad-CAM: activations weighted by mean gradients"),
    ("HiResCAM", "hirescam.py", "HiResCAM", "cam", "cam", "HiResCAM: element-wise gradients x activations, summed"),
    (
        "GradCAMPlusPlus",
        "grad_cam_plusplus.py",
        "GradCAMPlusPlus",
        "cam",
        "cam",
        "Grad-CAM++: second-order weighting of positive gradients",
    ),
    ("XGradCAM", "xgrad_cam.py", "XGradCAM", "cam", "cam", "XGrad-CAM: gradients weighted by normalised activations"),
    (
        "ScoreCAM",
        "score_cam.py",
        "ScoreCAM",
        "cam",
        "cam",
        "Score-CAM: weights from scores of activation-masked images",
    ),
    (
        "AblationCAM",
        "ablation_cam.py",
        "AblationCAM",
        "cam",
        "cam",
        "Ablation-CAM: weights from the score drop when ablating each channel",
    ),
    ("EigenCAM", "eigen_cam.py", "EigenCAM", "cam", "cam", "Eigen-CAM: first principal component of the activations"),
    (
        "EigenGradCAM",
        "eigen_grad_cam.py",
        "EigenGradCAM",
        "cam",
        "cam",
        "Eigen-Grad-CAM: first principal component of gradients x activations",
    ),
    ("LayerCAM", "layer_cam.py", "LayerCAM", "cam", "cam", "LayerCAM: positive gradients x activations per position"),
    (
        "FullGrad",
        "fullgrad_cam.py",
        "FullGrad",
        "cam",
        "cam",
        "FullGrad: input gradients plus every conv/BN bias gradient",
    ),
    (
        "GradCAMElementWise",
        "grad_cam_elementwise.py",
        "GradCAMElementWise",
        "cam",
        "cam",
        "Grad-CAM element-wise: ReLU of gradients x activations, summed",
    ),
    ("KPCA_CAM", "kpca_cam.py", "KPCA_CAM", "cam", "cam", "KPCA-CAM: first kernel-PCA component of the activations"),
    (
        "ShapleyCAM",
        "shapley_cam.py",
        "ShapleyCAM",
        "cam",
        "cam",
        "ShapleyCAM: gradient and Hessian-vector-product weights",
    ),
    (
        "FinerCAM",
        "finer_cam.py",
        "FinerCAM",
        "cam",
        "cam",
        "Finer-CAM: Grad-CAM of the target score against the most similar classes",
    ),
    ("FEM", "fem.py", "FEM", "cam", "cam", "Feature Explanation Method: k-sigma thresholded activations"),
    (
        "SegEigenCAM",
        "seg_eigen_cam.py",
        "SegEigenCAM",
        "cam",
        "cam",
        "Seg-Eigen-CAM: sign-corrected principal component of |gradients| x activations",
    ),
    ("RandomCAM", "random_cam.py", "RandomCAM", "cam", "cam", "Random channel weights: a sanity-check baseline"),
    (
        "GuidedBackprop",
        "guided_backprop.py",
        "GuidedBackpropReLUModel",
        "guided_backprop",
        "gradient",
        "Guided backpropagation: input gradients through ReLUs passing positive gradients only",
    ),
    (
        "GuidedGradCAM",
        "guided_backprop.py",
        "GuidedBackpropReLUModel",
        "guided_gradcam",
        "cam",
        "Guided Grad-CAM: raw Grad-CAM map times guided backprop, per channel",
    ),
    (
        "DeepFeatureFactorization",
        "feature_factorization/deep_feature_factorization.py",
        "DeepFeatureFactorization",
        "deep_feature_factorization",
        "cam",
        "Deep Feature Factorization: NMF concepts of a layer, one map per concept with its top labels",
    ),
)


SPECS = tuple(
    BackendSpec(
        name=f"gradcam.{name}",
        target=f"{_MOD}:{function}",
        requires=_REQUIRES,
        extra="gradcam",
        family=family,
        needs_gradients=True,
        options={"method": name} if function == "cam" else {},
        description=f"pytorch-grad-cam {description}; raw maps at image resolution.",
    )
    for name, relpath, cls, function, family, description in _TABLE
    if defines_class("pytorch_grad_cam", relpath, cls)
)
