"""Captioners: local models, caption scorers, and remote APIs behind one HTTP client.

``local.py`` holds the captioner protocol, function and transformers
captioners; ``scorers.py`` the caption scorers; ``http.py`` the HTTP client
every remote captioner shares (retries, rate limit, image limits, keys) with
its answer cache in ``cache.py``; ``azure.py``, ``openai.py`` and
``huggingface.py`` one provider each. Names are imported on first access, so
importing this package loads none of them (and never requests or torch).

Example::

    from xai_bridge.adapters.captioners import AzureVisionV31Captioner, WordMatchScorer
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .azure import AZURE_V31_LIMITS, AZURE_V40_LIMITS, AzureVision40Captioner, AzureVisionV31Captioner
    from .cache import DiskCache, cache_key, default_cache_dir, open_cache
    from .http import (
        AuthenticationError,
        EncodedImage,
        ImageLimits,
        RateLimiter,
        RemoteCaptioner,
        RemoteCaptionError,
        RemoteStats,
        RetryPolicy,
        Secret,
        encode_image,
        parse_retry_after,
    )
    from .huggingface import HFInferenceCaptioner
    from .local import (
        Captioner,
        FunctionCaptioner,
        SelfScoringCaptioner,
        TransformersCaptioner,
        as_captioner,
        captions_of,
        describe,
    )
    from .openai import OPENAI_LIMITS, OpenAICaptioner
    from .scorers import (
        CaptionScorer,
        CaptionTokens,
        EmbeddingSimilarityScorer,
        TeacherForcingScorer,
        TokenScore,
        WordMatchScorer,
    )

# name -> submodule holding it
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        (
            "Captioner",
            "FunctionCaptioner",
            "SelfScoringCaptioner",
            "TransformersCaptioner",
            "as_captioner",
            "captions_of",
            "describe",
        ),
        ".local",
    ),
    **dict.fromkeys(
        (
            "CaptionScorer",
            "CaptionTokens",
            "EmbeddingSimilarityScorer",
            "TeacherForcingScorer",
            "TokenScore",
            "WordMatchScorer",
        ),
        ".scorers",
    ),
    **dict.fromkeys(
        (
            "AuthenticationError",
            "EncodedImage",
            "ImageLimits",
            "RateLimiter",
            "RemoteCaptionError",
            "RemoteCaptioner",
            "RemoteStats",
            "RetryPolicy",
            "Secret",
            "encode_image",
            "parse_retry_after",
        ),
        ".http",
    ),
    **dict.fromkeys(
        ("AZURE_V31_LIMITS", "AZURE_V40_LIMITS", "AzureVision40Captioner", "AzureVisionV31Captioner"), ".azure"
    ),
    **dict.fromkeys(("OPENAI_LIMITS", "OpenAICaptioner"), ".openai"),
    "HFInferenceCaptioner": ".huggingface",
    **dict.fromkeys(("DiskCache", "cache_key", "default_cache_dir", "open_cache"), ".cache"),
}

__all__ = [
    "AZURE_V31_LIMITS",
    "AZURE_V40_LIMITS",
    "OPENAI_LIMITS",
    "AuthenticationError",
    "AzureVision40Captioner",
    "AzureVisionV31Captioner",
    "CaptionScorer",
    "CaptionTokens",
    "Captioner",
    "DiskCache",
    "EmbeddingSimilarityScorer",
    "EncodedImage",
    "FunctionCaptioner",
    "HFInferenceCaptioner",
    "ImageLimits",
    "OpenAICaptioner",
    "RateLimiter",
    "RemoteCaptionError",
    "RemoteCaptioner",
    "RemoteStats",
    "RetryPolicy",
    "Secret",
    "SelfScoringCaptioner",
    "TeacherForcingScorer",
    "TokenScore",
    "TransformersCaptioner",
    "WordMatchScorer",
    "as_captioner",
    "cache_key",
    "captions_of",
    "default_cache_dir",
    "describe",
    "encode_image",
    "open_cache",
    "parse_retry_after",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
