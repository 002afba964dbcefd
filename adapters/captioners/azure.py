"""Azure AI Vision captioners and taggers: Computer Vision v3.1 ``analyze`` (seed 000) and Image Analysis 4.0.

Both send the raw image bytes and the key as ``Ocp-Apim-Subscription-Key``;
the HTTP plumbing (retries, rate limit, cache, key handling) is
:class:`~xai_bridge.adapters.captioners.remote.RemoteCaptioner`'s.

Example (seed 000)::

    captioner = AzureVisionV31Captioner("https://<name>.cognitiveservices.azure.com")  # key: $AZURE_VISION_KEY
    captioner.caption(images)  # -> ["a woman wearing glasses", ...]
    tagger = AzureVision40Tagger("https://<name>.cognitiveservices.azure.com")
    tagger.tag(images)  # -> [{"person": 0.99, "glasses": 0.93, ...}, ...]
"""

from __future__ import annotations

from typing import Any

from .client import _Call
from .encoding import EncodedImage, ImageLimits
from .remote import RemoteCaptioner, RemoteTagger, _join, caption_text, tag_list

__all__ = [
    "AZURE_V31_LIMITS",
    "AZURE_V40_LIMITS",
    "AzureVision40Captioner",
    "AzureVision40Tagger",
    "AzureVisionV31Captioner",
    "AzureVisionV31Tagger",
]

#: Azure Computer Vision v3.1 analyze: < 4 MB, at least 50x50, JPEG/PNG/GIF/BMP.
AZURE_V31_LIMITS = ImageLimits(max_bytes=4 * 1024 * 1024 - 1, min_side=50, formats=("JPEG", "PNG", "GIF", "BMP"))
#: Azure AI Vision 4.0 Image Analysis: < 20 MB, between 50x50 and 16000x16000.
AZURE_V40_LIMITS = ImageLimits(
    max_bytes=20 * 1024 * 1024 - 1, min_side=50, max_side=16000, formats=("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
)


class AzureVisionV31Captioner(RemoteCaptioner):
    """Azure Computer Vision v3.1 ``analyze?visualFeatures=Description`` (seed 000).

    Args:
        endpoint: the resource endpoint, e.g. ``https://<name>.cognitiveservices.azure.com``.
        key: the subscription key (sent as ``Ocp-Apim-Subscription-Key``;
            default ``$AZURE_VISION_KEY``).
        language: caption language.
        **kwargs: see :class:`RemoteCaptioner`.

    An answer without a caption (it happens on heavily masked images) gives ``""``.
    """

    limits = AZURE_V31_LIMITS
    default_image_format = "BMP"  # lossless, accepted, and ~70x cheaper to encode than PNG
    default_key_env = "AZURE_VISION_KEY"
    key_required = True

    def __init__(self, endpoint: str, *, language: str = "en", **kwargs: Any) -> None:
        self.language = language
        super().__init__(_join(endpoint, "vision/v3.1/analyze"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {"visualFeatures": "Description", "language": self.language}

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": key}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        return _Call(self.url, self._request_params(), {"Content-Type": "application/octet-stream"}, data=image.data)

    def _parse(self, payload: Any) -> str:
        captions = payload["description"]["captions"]
        return caption_text(captions[0]["text"], "description.captions[0].text") if captions else ""


class AzureVision40Captioner(RemoteCaptioner):
    """Azure AI Vision 4.0 Image Analysis (``imageanalysis:analyze?features=caption``).

    Args:
        endpoint: the resource endpoint.
        key: the subscription key (default ``$AZURE_VISION_KEY``).
        api_version: the ``api-version`` query parameter.
        gender_neutral_caption: ask for gender-neutral captions.
        language: caption language.
        **kwargs: see :class:`RemoteCaptioner`.
    """

    limits = AZURE_V40_LIMITS
    default_image_format = "BMP"
    default_key_env = "AZURE_VISION_KEY"
    key_required = True

    def __init__(
        self,
        endpoint: str,
        *,
        api_version: str = "2024-02-01",
        gender_neutral_caption: bool = False,
        language: str = "en",
        **kwargs: Any,
    ) -> None:
        self.api_version = api_version
        self.gender_neutral_caption = bool(gender_neutral_caption)
        self.language = language
        super().__init__(_join(endpoint, "computervision/imageanalysis:analyze"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {
            "api-version": self.api_version,
            "features": "caption",
            "language": self.language,
            "gender-neutral-caption": str(self.gender_neutral_caption).lower(),
        }

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": key}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        return _Call(self.url, self._request_params(), {"Content-Type": "application/octet-stream"}, data=image.data)

    def _parse(self, payload: Any) -> str:
        return caption_text(payload["captionResult"]["text"], "captionResult.text")


class AzureVisionV31Tagger(RemoteTagger):
    """Azure Computer Vision v3.1 ``analyze?visualFeatures=Tags``: ``{"tags": [{"name", "confidence"}, ...]}``.

    Args:
        endpoint: the resource endpoint, e.g. ``https://<name>.cognitiveservices.azure.com``.
        key: the subscription key (sent as ``Ocp-Apim-Subscription-Key``;
            default ``$AZURE_VISION_KEY``).
        language: tag language.
        **kwargs: see :class:`~xai_bridge.adapters.captioners.client.RemoteClient`.
    """

    limits = AZURE_V31_LIMITS
    default_key_env = "AZURE_VISION_KEY"
    key_required = True

    def __init__(self, endpoint: str, *, language: str = "en", **kwargs: Any) -> None:
        self.language = language
        super().__init__(_join(endpoint, "vision/v3.1/analyze"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {"visualFeatures": "Tags", "language": self.language}

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": key}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        return _Call(self.url, self._request_params(), {"Content-Type": "application/octet-stream"}, data=image.data)

    def _parse(self, payload: Any) -> dict[str, float]:
        return tag_list(payload["tags"], "tags")


class AzureVision40Tagger(RemoteTagger):
    """Azure AI Vision 4.0 Image Analysis ``imageanalysis:analyze?features=tags``: ``{"tagsResult": {"values": [...]}}``.

    Args:
        endpoint: the resource endpoint.
        key: the subscription key (default ``$AZURE_VISION_KEY``).
        api_version: the ``api-version`` query parameter.
        language: tag language.
        **kwargs: see :class:`~xai_bridge.adapters.captioners.client.RemoteClient`.
    """

    limits = AZURE_V40_LIMITS
    default_key_env = "AZURE_VISION_KEY"
    key_required = True

    def __init__(self, endpoint: str, *, api_version: str = "2024-02-01", language: str = "en", **kwargs: Any) -> None:
        self.api_version = api_version
        self.language = language
        super().__init__(_join(endpoint, "computervision/imageanalysis:analyze"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {"api-version": self.api_version, "features": "tags", "language": self.language}

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": key}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        return _Call(self.url, self._request_params(), {"Content-Type": "application/octet-stream"}, data=image.data)

    def _parse(self, payload: Any) -> dict[str, float]:
        return tag_list(payload["tagsResult"]["values"], "tagsResult.values")
