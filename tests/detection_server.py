"""A loopback server speaking Azure AI Vision's detection protocols, for tests and the docs (127.0.0.1 only).

* ``POST /computervision/imageanalysis:analyze?api-version=...&features=objects|people|objects,people``
  (Image Analysis 4.0: ``objectsResult.values[].boundingBox {x, y, w, h}`` + ``tags[{name, confidence}]``,
  ``peopleResult.values[].boundingBox`` + ``confidence``);
* ``POST /vision/v3.2/detect`` (``objects[].rectangle {x, y, w, h}``, ``object``, ``confidence``, ``parent``);
* ``POST /v1/chat/completions`` (an OpenAI-compatible vision model asked for boxes: it answers a fenced
  JSON block ``[{"label", "box": [x0, y0, x1, y1], "score"}]``; the key as ``Authorization: Bearer``).

The server looks at the image it is sent (:func:`find`): a white square is a
"dog", a red one a "cat" (and, for ``features=people``, a "person"); each box
is drawn around the square's pixels still visible, its confidence the share
of them left, so masking a square lowers its confidence and moves its box.
A wrong ``Ocp-Apim-Subscription-Key`` gets a 401 with Azure's JSON error body
(echoing the key, as a careless server does). Faults queued in ``faults``
take one request each: ``"429:<retry-after>"``, any status (``"500"``), or
``"echo"`` (the key inside every label), ``"prose"`` (a chat reply without the JSON asked for).
"""

from __future__ import annotations

import base64
import collections
import hashlib
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

__all__ = ["CAT", "DOG", "KEY", "AzureDetectServer", "find", "scene"]

KEY = "loopback-detect-key-0123456789"
DOG = (255, 255, 255), (36, 8, 56, 28)  # colour, box (x0, y0, x1, y1)
CAT = (230, 20, 20), (6, 36, 22, 56)


def scene(size: int = 64, seed: int = 0) -> np.ndarray:
    """Mid-grey noise with a white square (the dog) and a red one (the cat)."""
    img = np.random.default_rng(seed).integers(70, 150, (size, size, 3)).astype(np.uint8)
    for colour, (x0, y0, x1, y1) in (DOG, CAT):
        img[y0 * size // 64 : y1 * size // 64, x0 * size // 64 : x1 * size // 64] = colour
    return img


def find(image: np.ndarray) -> list[tuple[str, list[float], float]]:
    """``(name, [x, y, w, h], confidence)`` per square still (partly) visible."""
    h, w = image.shape[:2]
    px = image.astype(np.int16)
    found = []
    for name, ((r, g, b), (x0, y0, x1, y1)) in (("dog", DOG), ("cat", CAT)):
        hit = (np.abs(px[..., 0] - r) < 30) & (np.abs(px[..., 1] - g) < 30) & (np.abs(px[..., 2] - b) < 30)
        area = (x1 - x0) * (y1 - y0) * (h * w) / 64**2
        ys, xs = np.nonzero(hit)
        if len(ys) > 4:
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            found.append((name, box, round(min(1.0, len(ys) / area), 4)))
    return found


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        owner: AzureDetectServer = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fault = owner.begin(url.path)
        chat = url.path == "/v1/chat/completions"
        sent = self.headers.get("Authorization", "").removeprefix("Bearer ") if chat else ""
        sent = sent or self.headers.get("Ocp-Apim-Subscription-Key", "")
        if sent != owner.key:
            message = f"Access denied due to invalid subscription key {sent}."  # echoed, as a careless server does
            return self._send(401, {"error": {"code": "401", "message": message}})
        if fault is not None and fault.startswith("429"):
            return self._send(429, {"error": {"code": "429", "message": "Rate limit"}}, {"Retry-After": fault[4:]})
        if fault is not None and fault.isdigit():
            return self._send(int(fault), {"error": {"code": fault, "message": f"fault {fault}"}})
        if url.path not in ("/computervision/imageanalysis:analyze", "/vision/v3.2/detect", "/v1/chat/completions"):
            return self._send(404, {"error": {"code": "404", "message": "Resource not found"}})
        if chat:
            parts = json.loads(body)["messages"][0]["content"]
            body = base64.b64decode(
                next(p for p in parts if p["type"] == "image_url")["image_url"]["url"].split(",")[1]
            )
        image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        found = find(image)
        if fault == "echo":  # a server that puts the key in its answer
            found = [(f"{name} {owner.key}", box, c) for name, box, c in found]
        owner.answered[hashlib.sha256(body).hexdigest()] += 1
        meta = {"width": image.shape[1], "height": image.shape[0]}
        if chat:  # a VLM's reply: prose around a fenced JSON block, corners in pixels
            listed = [{"label": n, "box": [x, y, x + w, y + h], "score": c} for n, (x, y, w, h), c in found]
            reply = f"Here is what I see:\n```json\n{json.dumps(listed)}\n```"
            if fault == "prose":  # a model that ignored the instruction
                reply = "I see a dog and a cat."
            return self._send(200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": reply}}]})
        if url.path == "/vision/v3.2/detect":
            objects = [
                {
                    "rectangle": dict(zip("xywh", b, strict=True)),
                    "object": n,
                    "confidence": c,
                    "parent": {"object": "animal", "confidence": c},
                }
                for n, b, c in found
            ]
            return self._send(200, {"objects": objects, "requestId": "loopback", "metadata": meta})
        features = query.get("features", "").split(",")
        payload: dict[str, Any] = {"modelVersion": "2023-10-01", "metadata": meta}
        if "objects" in features:
            values = [
                {
                    "boundingBox": dict(zip("xywh", b, strict=True)),
                    "tags": [{"name": "thing", "confidence": c / 2}, {"name": n, "confidence": c}],
                }
                for n, b, c in found
            ]
            payload["objectsResult"] = {"values": values}
        if "people" in features:
            people = [
                {"boundingBox": dict(zip("xywh", b, strict=True)), "confidence": c}
                for n, b, c in found
                if n.startswith("cat")
            ]
            payload["peopleResult"] = {"values": people}
        return self._send(200, payload)


class AzureDetectServer:
    """A threaded loopback server speaking Azure's detection protocols; ``inject`` queues faults."""

    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.requests = 0
        self.answered: collections.Counter[str] = collections.Counter()
        self.faults: collections.deque[str] = collections.deque()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.owner = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def begin(self, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            return self.faults.popleft() if self.faults else None

    def __enter__(self) -> AzureDetectServer:
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
