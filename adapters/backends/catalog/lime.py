"""LIME for images (``lime.lime_image``), any model."""

from xai_bridge.registry import BackendSpec

SPECS = (
    BackendSpec(
        name="lime",
        target="xai_bridge.adapters.backends.lime_backend:lime",
        requires=("lime", "skimage", "sklearn"),
        extra="lime",
        family="perturbation",
        description="LIME image explanations (Ribeiro et al. 2016): superpixel weights and a pixel map; "
        "any model, batched through model.predict.",
    ),
)
