"""Explain whole datasets: a resumable on-disk store, run locally or on Ray.

``explain_dataset`` (in :mod:`.local`) streams images from a folder, a glob or
a list file; :mod:`.store` is the store's layout; :mod:`.ray_engine` runs the
same job on Ray actors.
"""

from __future__ import annotations

from .local import explain_dataset, model_factory
from .store import DatasetSummary, Store, image_key, list_sources, model_fingerprint

__all__ = [
    "DatasetSummary",
    "Store",
    "explain_dataset",
    "image_key",
    "list_sources",
    "model_factory",
    "model_fingerprint",
]
