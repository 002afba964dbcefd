"""A Hugging Face inference-style image-to-text captioner (raw image body -> ``[{"generated_text": ...}]``)."""

from __future__ import annotations

from typing import Any

from .client import _Call
from .encoding import EncodedImage
from .remote import RemoteCaptioner, _join, caption_text

__all__ = ["HFInferenceCaptioner"]


class HFInferenceCaptioner(RemoteCaptioner):
    """A Hugging Face inference-style image-to-text endpoint (raw image body -> ``[{"generated_text": ...}]``).

    Args:
        model: a model id (appended to ``base_url``) or a full endpoint URL
            (e.g. a dedicated Inference Endpoint or a local text-generation server).
        base_url: where model ids are served.
        key: the token (``Authorization: Bearer``; default ``$HF_TOKEN``; optional).
        **kwargs: see :class:`RemoteCaptioner`.
    """

    default_key_env = "HF_TOKEN"

    def __init__(
        self, model: str, *, base_url: str = "https://router.huggingface.co/hf-inference/models", **kwargs: Any
    ) -> None:
        self.model = str(model)
        super().__init__(self.model if "://" in self.model else _join(base_url, self.model), **kwargs)

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        return _Call(self.url, {}, {"Content-Type": image.content_type}, data=image.data)

    def _parse(self, payload: Any) -> str:
        item = payload[0] if isinstance(payload, list) else payload
        return caption_text(item["generated_text"], "generated_text")
