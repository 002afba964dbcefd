"""RISE, implemented in xai-bridge (numpy); needs no third-party library."""

from xai_bridge.registry import BackendSpec

SPECS = (
    BackendSpec(
        name="rise",
        target="xai_bridge.adapters.backends.rise:rise",
        family="perturbation",
        description="RISE (Petsiuk et al. 2018): seeded random masks, numpy, batched through model.predict; any model.",
    ),
)
