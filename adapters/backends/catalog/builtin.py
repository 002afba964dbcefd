"""Methods implemented in xai-bridge itself (no third-party library)."""

from xai_bridge.registry import BackendSpec

_MOD = "xai_bridge.adapters.backends.builtin"

SPECS = (
    BackendSpec(
        name="builtin.saliency",
        target=f"{_MOD}:saliency",
        requires=("torch",),
        extra="torch",
        family="gradient",
        needs_gradients=True,
        description="Gradient of the target output w.r.t. image pixels (Simonyan et al. 2014), via torch.autograd.",
    ),
    BackendSpec(
        name="builtin.occlusion",
        target=f"{_MOD}:occlusion",
        family="perturbation",
        description="Sliding-window occlusion in numpy, batched through model.predict; works on any model.",
    ),
)
