"""An OpenAI-compatible chat-completions vision captioner (OpenAI, vLLM, Ollama, LM Studio...)."""

from __future__ import annotations

import base64
from typing import Any

from .client import _Call
from .encoding import EncodedImage, ImageLimits
from .remote import RemoteCaptioner, _join, caption_text

__all__ = ["OPENAI_LIMITS", "OpenAICaptioner"]

#: OpenAI-style vision chat: up to 20 MB per image, PNG/JPEG/WEBP/GIF.
OPENAI_LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, formats=("PNG", "JPEG", "WEBP", "GIF"))


class OpenAICaptioner(RemoteCaptioner):
    """An OpenAI-compatible chat-completions vision endpoint (OpenAI, vLLM, Ollama, LM Studio...).

    The image goes as a base64 ``data:`` URL in an ``image_url`` message part.
    ``caption(images, prompt=question)`` sends a question instead of
    ``prompt``: the caption is then the model's answer (see
    :func:`xai_bridge.captions.explain_answer`); it is cached per prompt.

    Args:
        base_url: the API base, e.g. ``https://api.openai.com/v1`` or
            ``http://localhost:11434/v1`` (Ollama); ``/chat/completions`` is appended.
        model: the model name.
        prompt: the instruction sent with each image.
        key: the key (``Authorization: Bearer``; default ``$OPENAI_API_KEY``;
            optional, local servers need none).
        max_tokens: longest caption.
        temperature: sampling temperature (0: as deterministic as the server allows).
        detail: OpenAI's image ``detail`` (``"low"``, ``"high"``, ``"auto"``).
        **kwargs: see :class:`RemoteCaptioner`.
    """

    limits = OPENAI_LIMITS
    default_key_env = "OPENAI_API_KEY"
    supports_prompt = True

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        prompt: str = "Write a one-sentence caption of this image.",
        max_tokens: int = 60,
        temperature: float = 0.0,
        detail: str = "auto",
        **kwargs: Any,
    ) -> None:
        self.model = str(model)
        self.prompt = str(prompt)
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        self.detail = str(detail)
        super().__init__(_join(base_url, "chat/completions"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "detail": self.detail,
        }

    def _prompt_params(self, prompt: str) -> dict[str, Any]:
        return {"prompt": prompt}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        data_url = f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"
        body = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": self.prompt if prompt is None else prompt},
                        {"type": "image_url", "image_url": {"url": data_url, "detail": self.detail}},
                    ],
                }
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return _Call(self.url, {}, {}, json=body)

    def _parse(self, payload: Any) -> str:
        content = payload["choices"][0]["message"]["content"]
        if isinstance(content, list):  # content parts
            parts = [p for p in content if p.get("type") == "text"]
            content = " ".join(caption_text(p["text"], "choices[0].message.content[].text") for p in parts)
        return caption_text(content, "choices[0].message.content")
