"""Explain whole datasets: a resumable on-disk store, run locally or on Ray.

``explain_dataset`` (in :mod:`.run`) streams images from a folder, a glob or
a list file; :mod:`.store` is the store's layout; :mod:`.local` and
:mod:`.ray_engine` are the engines that run the chunks, in this process or on
Ray actors.
"""

from __future__ import annotations

from .local import model_factory
from .run import explain_dataset
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
