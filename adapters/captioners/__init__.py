"""Captioners and taggers: local models, caption scorers, and remote APIs behind one HTTP client.

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
    from .azure import (
        AZURE_V31_LIMITS,
        AZURE_V40_LIMITS,
        AzureVision40Captioner,
        AzureVision40Tagger,
        AzureVisionV31Captioner,
        AzureVisionV31Tagger,
    )
    from .cache import (
        CacheError,
        DiskCache,
        cache_key,
        default_cache_dir,
        open_cache,
    )
    from .http import (
        AuthenticationError,
        EncodedImage,
        ImageLimits,
        InvalidKeyError,
        MalformedAnswer,
        RateLimiter,
        RemoteCaptioner,
        RemoteCaptionError,
        RemoteClient,
        RemoteStats,
        RemoteTagger,
        RetryPolicy,
        Secret,
        caption_text,
        check_key,
        encode_image,
        parse_retry_after,
        tag_list,
    )
    from .huggingface import (
        HFInferenceCaptioner,
    )
    from .local import (
        Captioner,
        FunctionCaptioner,
        SelfScoringCaptioner,
        TransformersCaptioner,
        as_captioner,
        captions_of,
        describe,
    )
    from .openai import (
        OPENAI_LIMITS,
        OpenAICaptioner,
    )
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
    "Captioner": ".local",
    "FunctionCaptioner": ".local",
    "SelfScoringCaptioner": ".local",
    "TransformersCaptioner": ".local",
    "as_captioner": ".local",
    "captions_of": ".local",
    "describe": ".local",
    "CaptionScorer": ".scorers",
    "CaptionTokens": ".scorers",
    "EmbeddingSimilarityScorer": ".scorers",
    "TeacherForcingScorer": ".scorers",
    "TokenScore": ".scorers",
    "WordMatchScorer": ".scorers",
    "AuthenticationError": ".http",
    "EncodedImage": ".http",
    "ImageLimits": ".http",
    "InvalidKeyError": ".http",
    "MalformedAnswer": ".http",
    "RateLimiter": ".http",
    "RemoteCaptionError": ".http",
    "RemoteCaptioner": ".http",
    "RemoteStats": ".http",
    "RemoteClient": ".http",
    "RemoteTagger": ".http",
    "tag_list": ".http",
    "RetryPolicy": ".http",
    "Secret": ".http",
    "caption_text": ".http",
    "check_key": ".http",
    "encode_image": ".http",
    "parse_retry_after": ".http",
    "AZURE_V31_LIMITS": ".azure",
    "AZURE_V40_LIMITS": ".azure",
    "AzureVision40Captioner": ".azure",
    "AzureVisionV31Captioner": ".azure",
    "AzureVision40Tagger": ".azure",
    "AzureVisionV31Tagger": ".azure",
    "OPENAI_LIMITS": ".openai",
    "OpenAICaptioner": ".openai",
    "HFInferenceCaptioner": ".huggingface",
    "CacheError": ".cache",
    "DiskCache": ".cache",
    "cache_key": ".cache",
    "default_cache_dir": ".cache",
    "open_cache": ".cache",
}

__all__ = [
    "AZURE_V31_LIMITS",
    "AZURE_V40_LIMITS",
    "OPENAI_LIMITS",
    "AuthenticationError",
    "AzureVision40Captioner",
    "AzureVision40Tagger",
    "AzureVisionV31Captioner",
    "AzureVisionV31Tagger",
    "CacheError",
    "CaptionScorer",
    "CaptionTokens",
    "Captioner",
    "DiskCache",
    "EmbeddingSimilarityScorer",
    "EncodedImage",
    "FunctionCaptioner",
    "HFInferenceCaptioner",
    "ImageLimits",
    "InvalidKeyError",
    "MalformedAnswer",
    "OpenAICaptioner",
    "RateLimiter",
    "RemoteCaptionError",
    "RemoteCaptioner",
    "RemoteClient",
    "RemoteStats",
    "RemoteTagger",
    "RetryPolicy",
    "Secret",
    "SelfScoringCaptioner",
    "TeacherForcingScorer",
    "TokenScore",
    "TransformersCaptioner",
    "WordMatchScorer",
    "as_captioner",
    "cache_key",
    "caption_text",
    "captions_of",
    "check_key",
    "default_cache_dir",
    "describe",
    "encode_image",
    "open_cache",
    "parse_retry_after",
    "tag_list",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
