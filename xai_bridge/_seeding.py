"""Seeding the global random generators that the wrapped libraries draw from.

shap, captum, lime, pytorch-grad-cam and torchcam draw from numpy's and
torch's *global* generators, so a seeded run has to seed those and put them
back. Two threads doing that at once would interleave their draws and get
results that differ from single-threaded runs; every seeded section holds
one process-wide lock, so seeded results are the same whatever else runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

__all__ = ["GLOBAL_RNG_LOCK", "numpy_seeded"]

#: Held by every section that seeds a global generator (re-entrant: sections nest).
GLOBAL_RNG_LOCK = threading.RLock()


@contextmanager
def numpy_seeded(seed: int) -> Iterator[None]:
    """Seed numpy's global generator inside the block (under the lock) and restore its state after."""
    with GLOBAL_RNG_LOCK:
        state = np.random.get_state()
        np.random.seed(int(seed) % 2**32)
        try:
            yield
        finally:
            np.random.set_state(state)
