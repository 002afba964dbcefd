"""An OpenAI-compatible vision chat model asked for its detections as JSON, as a detector.

Vision-language models served behind chat completions (OpenAI, vLLM,
Ollama, LM Studio...) can name and locate objects when asked; this module
asks for ``[{"label", "box": [x0, y0, x1, y1], "score"}]`` and reads the
answer (a fenced ```json block or bare JSON) into the cached form of
:class:`~.detect.RemoteDetector`, so everything else -- the vocabulary,
boxes in the caller's pixels, retries, the cache, ``estimate_calls`` -- is
shared with the Azure detectors. A reply that is not that JSON is a
malformed answer: retried ``retry.max_malformed`` times, then an error.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from xai_bridge.errors import ParameterError

from .client import _Call
from .detect import RemoteDetector, _number
from .encoding import EncodedImage
from .keys import MalformedAnswer
from .openai import OPENAI_LIMITS
from .remote import _join

__all__ = ["OpenAIDetector"]

DEFAULT_PROMPT = (
    "Find every object in this {width}x{height} image. Answer with JSON only: a list of "
    '{{"label": "<name>", "box": [x0, y0, x1, y1], "score": <confidence 0..1>}}, '
    "the box in pixels (x the column, y the row)."
)
#: what one unit of a box coordinate is worth, per ``coordinates=``: pixels, or a fraction of the side
_SCALES = {"pixels": None, "normalized": 1.0, "per_mille": 1000.0}
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


class OpenAIDetector(RemoteDetector):
    """An OpenAI-compatible chat-completions vision model asked for boxes as JSON.

    Args:
        base_url: the API base, e.g. ``http://localhost:11434/v1``; ``/chat/completions`` is appended.
        model: the model name.
        prompt: the instruction; ``{width}`` and ``{height}`` are the size of the image sent.
        coordinates: how the model gives boxes: ``"pixels"`` (default), ``"normalized"``
            (0..1) or ``"per_mille"`` (0..1000, as some models are trained to).
        key: the key (``Authorization: Bearer``; default ``$OPENAI_API_KEY``; local servers need none).
        max_tokens: longest answer.
        temperature: sampling temperature (0: as deterministic as the server allows).
        **kwargs: see :class:`~xai_bridge.adapters.captioners.detect.RemoteDetector`.

    A detection without ``"score"`` scores 1. Example::

        detector = OpenAIDetector("http://localhost:8000/v1", "Qwen/Qwen2.5-VL-7B-Instruct")
        [exp] = xb.explain_detections(detector, "street.jpg", "builtin.DRISE", budget=300)
    """

    limits = OPENAI_LIMITS
    default_image_format = "PNG"
    default_key_env = "OPENAI_API_KEY"
    key_required = False

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        prompt: str = DEFAULT_PROMPT,
        coordinates: str = "pixels",
        max_tokens: int = 1000,
        temperature: float = 0.0,
        **kwargs: Any,
    ) -> None:
        if coordinates not in _SCALES:
            raise ParameterError(f"coordinates: expected one of {sorted(_SCALES)}, got {coordinates!r}")
        self.model = str(model)
        self.prompt = str(prompt)
        self.coordinates = coordinates
        self.max_tokens = int(max_tokens)
        self.temperature = float(temperature)
        super().__init__(_join(base_url, "chat/completions"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": self.prompt,
            "coordinates": self.coordinates,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        height, width = image.size
        data_url = f"data:{image.content_type};base64,{base64.b64encode(image.data).decode('ascii')}"
        text = self.prompt.format(width=width, height=height)
        content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": data_url}}]
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        return _Call(self.url, {}, {}, json=body)

    def _parse(self, payload: Any) -> list[dict[str, Any]]:
        text = payload["choices"][0]["message"]["content"]
        if not isinstance(text, str):
            raise MalformedAnswer(f"choices[0].message.content is {type(text).__name__}, not text")
        fenced = _FENCE.search(text)
        try:
            found = json.loads(fenced.group(1) if fenced else text)
        except ValueError:
            raise MalformedAnswer(f"the answer is not JSON: {text[:80]!r}") from None
        if isinstance(found, dict):  # {"objects": [...]} or one object
            found = found.get("objects", found.get("detections", [found]))
        if not isinstance(found, list):
            raise MalformedAnswer(f"the answer is {type(found).__name__}, not a list of detections")
        return [_corners(item) for item in found]

    def _received(self, answer: Any, image: EncodedImage) -> Any:
        """Boxes in the pixels of the image sent, as ``[x, y, w, h]`` (the cached form)."""
        height, width = image.size
        scale = _SCALES[self.coordinates]
        for obj in answer:
            x0, y0, x1, y1 = obj.pop("corners")
            if scale is not None:
                x0, x1, y0, y1 = x0 * width / scale, x1 * width / scale, y0 * height / scale, y1 * height / scale
            obj["box"] = [x0, y0, x1 - x0, y1 - y0]
        return super()._received(answer, image)


def _corners(item: Any) -> dict[str, Any]:
    """One ``{"label", "box", "score"}`` item checked; its box kept as corners until the image size is known."""
    if not isinstance(item, dict):
        raise MalformedAnswer(f"a detection is {type(item).__name__}, not an object")
    box, label = item.get("box", item.get("bbox")), item.get("label", item.get("name"))
    score: Any = item.get("score", item.get("confidence", 1.0))
    if (
        not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box))
        or box[2] < box[0]
        or box[3] < box[1]
    ):
        raise MalformedAnswer(f"a detection's box is {box!r:.60}, not [x0, y0, x1, y1]")
    if not isinstance(label, str) or not _number(score):
        raise MalformedAnswer(f"a detection's label and score are {label!r:.40}, {score!r:.20}")
    return {"corners": [float(v) for v in box], "name": label.strip(), "score": min(1.0, max(0.0, float(score)))}
