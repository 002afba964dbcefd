"""Captioners and taggers: local models, caption scorers, and remote APIs behind one HTTP client.

The protocols (what a captioner and a scorer are) live in
:mod:`xai_bridge.captions.protocols`; this package implements them.
``local.py`` holds the transformers captioners, ``vlm.py`` the local
vision-language models, ``scorers.py`` the caption scorers. Remote APIs:
``client.py`` is the HTTP client every remote captioner shares (with
``keys.py``, ``retry.py``, ``encoding.py`` and the answer cache in
``cache.py``), ``remote.py`` the generic captioner and tagger, and
``azure.py``, ``openai.py`` and ``huggingface.py`` one provider each;
``detect.py`` and ``detect_vlm.py`` the remote object detectors on the same client
(``http.py`` re-exports the client's names for older imports). Names are imported on first access, so
importing this package loads none of them (and never requests or torch).

Example::

    from xai_bridge.adapters.captioners import AzureVisionV31Captioner, WordMatchScorer
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from xai_bridge.captions.protocols import (
        Captioner,
        CaptionScorer,
        CaptionTokens,
        FunctionCaptioner,
        SelfScoringCaptioner,
        as_captioner,
        captions_of,
        describe,
    )

    from .azure import (
        AZURE_V31_LIMITS,
        AZURE_V40_LIMITS,
        AzureVision40Captioner,
        AzureVision40Tagger,
        AzureVisionV31Captioner,
        AzureVisionV31Tagger,
    )
    from .cache import CacheError, DiskCache, cache_key, default_cache_dir, open_cache
    from .client import RemoteClient, RemoteStats
    from .detect import AZURE_V32_LIMITS, AzureVision40Detector, AzureVisionV32Detector, RemoteDetector
    from .detect_vlm import OpenAIDetector
    from .encoding import EncodedImage, ImageLimits, encode_image
    from .huggingface import HFInferenceCaptioner
    from .keys import AuthenticationError, InvalidKeyError, MalformedAnswer, RemoteCaptionError, Secret, check_key
    from .local import TransformersCaptioner
    from .openai import OPENAI_LIMITS, OpenAICaptioner
    from .remote import RemoteCaptioner, RemoteTagger, caption_text, tag_list
    from .retry import RateLimiter, RetryPolicy, parse_retry_after
    from .scorers import EmbeddingSimilarityScorer, TeacherForcingScorer, TokenScore, WordMatchScorer

# name -> submodule holding it
_LAZY: dict[str, str] = {
    "Captioner": "xai_bridge.captions.protocols",
    "FunctionCaptioner": "xai_bridge.captions.protocols",
    "SelfScoringCaptioner": "xai_bridge.captions.protocols",
    "TransformersCaptioner": ".local",
    "as_captioner": "xai_bridge.captions.protocols",
    "captions_of": "xai_bridge.captions.protocols",
    "describe": "xai_bridge.captions.protocols",
    "CaptionScorer": "xai_bridge.captions.protocols",
    "CaptionTokens": "xai_bridge.captions.protocols",
    "EmbeddingSimilarityScorer": ".scorers",
    "TeacherForcingScorer": ".scorers",
    "TokenScore": ".scorers",
    "WordMatchScorer": ".scorers",
    "AuthenticationError": ".keys",
    "EncodedImage": ".encoding",
    "ImageLimits": ".encoding",
    "InvalidKeyError": ".keys",
    "MalformedAnswer": ".keys",
    "RateLimiter": ".retry",
    "RemoteCaptionError": ".keys",
    "RemoteCaptioner": ".remote",
    "RemoteStats": ".client",
    "RemoteClient": ".client",
    "RemoteTagger": ".remote",
    "tag_list": ".remote",
    "RetryPolicy": ".retry",
    "Secret": ".keys",
    "caption_text": ".remote",
    "check_key": ".keys",
    "encode_image": ".encoding",
    "parse_retry_after": ".retry",
    "AZURE_V31_LIMITS": ".azure",
    "AZURE_V40_LIMITS": ".azure",
    "AzureVision40Captioner": ".azure",
    "AzureVisionV31Captioner": ".azure",
    "AzureVision40Tagger": ".azure",
    "AzureVisionV31Tagger": ".azure",
    "OPENAI_LIMITS": ".openai",
    "OpenAICaptioner": ".openai",
    "HFInferenceCaptioner": ".huggingface",
    "AZURE_V32_LIMITS": ".detect",
    "AzureVision40Detector": ".detect",
    "AzureVisionV32Detector": ".detect",
    "RemoteDetector": ".detect",
    "OpenAIDetector": ".detect_vlm",
    "CacheError": ".cache",
    "DiskCache": ".cache",
    "cache_key": ".cache",
    "default_cache_dir": ".cache",
    "open_cache": ".cache",
}

__all__ = [
    "AZURE_V31_LIMITS",
    "AZURE_V32_LIMITS",
    "AZURE_V40_LIMITS",
    "OPENAI_LIMITS",
    "AuthenticationError",
    "AzureVision40Captioner",
    "AzureVision40Detector",
    "AzureVision40Tagger",
    "AzureVisionV31Captioner",
    "AzureVisionV31Tagger",
    "AzureVisionV32Detector",
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
    "OpenAIDetector",
    "RateLimiter",
    "RemoteCaptionError",
    "RemoteCaptioner",
    "RemoteClient",
    "RemoteDetector",
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
    return getattr(importlib.import_module(module, __name__ if module.startswith(".") else None), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
