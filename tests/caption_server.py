"""A loopback captioning server for tests and benchmarks (127.0.0.1 only).

It speaks six protocols:

* ``POST /vision/v3.1/analyze?visualFeatures=Description`` (Azure Computer Vision v3.1 captions)
* ``POST /vision/v3.1/analyze?visualFeatures=Tags`` (v3.1 tags: ``{"tags": [{"name", "confidence"}]}``)
* ``POST /computervision/imageanalysis:analyze?api-version=2024-02-01&features=caption`` (Azure AI Vision 4.0)
* ``POST /computervision/imageanalysis:analyze?api-version=2024-02-01&features=tags``
  (4.0 tags: ``{"tagsResult": {"values": [{"name", "confidence"}]}}``)
* ``POST /v1/chat/completions`` (OpenAI-compatible vision chat, image as a data URL;
  the text part is the prompt, answered by :func:`rule_answer`)
* ``POST /models/<id>`` (Hugging Face inference image-to-text)

Captions come from :func:`rule_caption`, a deterministic rule on the mean
brightness of the image's quadrants, so masking a quadrant changes one word;
tags from :func:`rule_tags` (one tag per quadrant, its confidence growing
with the quadrant's distance from mid-grey); answers to a question from
:func:`rule_answer` (a question naming ``animal`` is answered by the
top-right quadrant alone, ``colour``/``color`` by the top-left; any other
prompt gets the caption).

Faults are scripted with :meth:`CaptionServer.inject`: each incoming request
takes the next fault in the queue, then requests are answered normally.
Faults before the answer: ``"429"``, ``"429:<retry-after>"``, ``"500"``,
``"503"``, ``"timeout"``, ``"malformed"``, ``"401"``, ``"redirect:<status>:<url>"``
(``<url>`` may be another server; empty: this same URL, a redirect loop).
Faults in how the (otherwise correct) answer is delivered: ``"trickle"``
(the body one byte per ``trickle_interval`` seconds), ``"trickle-headers"``
(the headers so), ``"reset"`` (half the body, then a TCP reset), ``"short"``
(half the body, then a clean close: shorter than its Content-Length),
``"badgzip"`` (``Content-Encoding: gzip`` on bytes that are not gzip),
``"null"`` (the caption field is JSON ``null``), ``"long-caption"`` (a caption
of ``big_bytes`` characters), ``"huge"`` (a 200 answer of ``big_bytes`` bytes of HTML),
``"huge-chunked"`` (the same, chunked, without a Content-Length).
Every loop is bounded by the size of what it sends and stops when the client
hangs up. The server counts requests, faults and -- per image
SHA-256 -- successful answers, so tests can check that every image was
answered exactly once.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import io
import json
import socket
import struct
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
from PIL import Image

__all__ = ["WORDS", "CaptionServer", "rule_answer", "rule_caption", "rule_tags"]

#: Word pairs chosen by the top-left, top-right, bottom-left, bottom-right quadrant (dark, bright).
WORDS = (("red", "blue"), ("cat", "dog"), ("green", "white"), ("tree", "car"))


def rule_caption(image: np.ndarray) -> str:
    """``"a {TL} {TR} near a {BL} {BR}"``: each word picked by its quadrant's mean brightness (> 127.5)."""
    h, w = image.shape[:2]
    quads = (image[: h // 2, : w // 2], image[: h // 2, w // 2 :], image[h // 2 :, : w // 2], image[h // 2 :, w // 2 :])
    picks = [WORDS[i][int(q.mean() > 127.5)] for i, q in enumerate(quads)]
    return f"a {picks[0]} {picks[1]} near a {picks[2]} {picks[3]}"


def _quadrants(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[:2]
    return [image[: h // 2, : w // 2], image[: h // 2, w // 2 :], image[h // 2 :, : w // 2], image[h // 2 :, w // 2 :]]


def rule_tags(image: np.ndarray) -> dict[str, float]:
    """One tag per quadrant, ``WORDS[i][bright]``, confidence ``0.5 + |mean - 127.5| / 255`` (rounded to 1e-4)."""
    tags: dict[str, float] = {}
    for i, q in enumerate(_quadrants(image)):
        mean = float(q.mean())
        name = WORDS[i][int(mean > 127.5)]
        tags[name] = max(tags.get(name, 0.0), round(0.5 + abs(mean - 127.5) / 255.0, 4))
    return tags


def rule_answer(image: np.ndarray, question: str) -> str:
    """The answer to ``question``: the top-right word for an animal question, top-left for a colour, else the caption."""
    quads = _quadrants(image)
    words = [WORDS[i][int(q.mean() > 127.5)] for i, q in enumerate(quads)]
    text = question.lower()
    if "animal" in text:
        return f"a {words[1]}"
    if "colour" in text or "color" in text:
        return words[0]
    return rule_caption(image)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True
    owner: CaptionServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps({"error": {"code": code, "message": message}}).encode(), headers=headers)

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        fault = owner._begin(url.path)
        if owner.latency:
            time.sleep(owner.latency)
        route = owner._route(url.path)
        if route is None:
            return self._error(404, "NotFound", f"no route {url.path}")
        if route in ("v31", "v40"):
            sent_key = self.headers.get("Ocp-Apim-Subscription-Key", "")
        else:
            sent_key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        if fault == "401" or (owner.key is not None and sent_key != owner.key):
            # echo the key like a careless server would: clients must scrub it
            return self._error(401, "401", f"Access denied due to invalid subscription key {sent_key}.")
        if fault is not None and fault.startswith("redirect"):
            status, _, location = fault.removeprefix("redirect").removeprefix(":").partition(":")
            self.send_response(int(status or 302))
            self.send_header("Location", location or self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if fault == "timeout":
            time.sleep(owner.hang)
            self.close_connection = True
            return None
        if fault is not None and fault.startswith("429"):
            retry_after = fault.partition(":")[2] or owner.retry_after
            return self._error(429, "429", "Rate limit exceeded", headers={"Retry-After": retry_after})
        if fault in ("500", "503"):
            return self._error(int(fault), "InternalServerError", "try again")
        if fault == "malformed":
            return self._send(200, b'{"description": {"captions": [{"text": "a tru')
        feature = query.get("visualFeatures") if route == "v31" else query.get("features")
        if route == "v31" and feature not in ("Description", "Tags"):
            return self._error(400, "InvalidRequest", "visualFeatures=Description or Tags required")
        if route == "v40" and (feature not in ("caption", "tags") or "api-version" not in query):
            return self._error(400, "InvalidRequest", "features=caption or tags, and api-version, required")
        try:
            data = self._image_bytes(route, body)
            with Image.open(io.BytesIO(data)) as im:
                fmt = im.format
                image = np.asarray(im.convert("RGB"))
        except Exception as exc:
            return self._error(400, "InvalidImageFormat", f"cannot read the image ({type(exc).__name__})")
        if route in ("v31", "v40"):
            h, w = image.shape[:2]
            if min(h, w) < 50 or len(data) >= 4 * 1024 * 1024 or fmt not in ("JPEG", "PNG", "GIF", "BMP"):
                return self._error(400, "InvalidImageSize", f"image {w}x{h}, {len(data)} bytes, {fmt}")
        question = self._question(body) if route == "chat" else None
        if question is not None:
            owner._asked(question)
        if feature in ("Tags", "tags"):
            tags = owner.tag_rule(image)
            owner._answered(hashlib.sha256(data).hexdigest(), json.dumps(tags))
            values = [{"name": n, "confidence": c} for n, c in sorted(tags.items(), key=lambda t: -t[1])]
            if route == "v31":
                payload: Any = {"tags": values, "requestId": "loopback", "metadata": {"height": image.shape[0]}}
            else:
                payload = {"tagsResult": {"values": values}, "modelVersion": "2023-10-01"}
            return self._send(200, json.dumps(payload).encode())
        caption: Any = owner.rule(image) if question is None else owner.answer_rule(image, question)
        if fault == "null":
            caption = None
        elif fault == "long-caption":
            caption = "a cat " * (owner.big_bytes // 6)
        else:
            owner._answered(hashlib.sha256(data).hexdigest(), caption)
        if route == "v31":
            payload = {
                "description": {"tags": str(caption).split(), "captions": [{"text": caption, "confidence": 0.9}]},
                "requestId": "loopback",
                "metadata": {"height": image.shape[0], "width": image.shape[1]},
            }
        elif route == "v40":
            payload = {"captionResult": {"text": caption, "confidence": 0.9}, "modelVersion": "2023-10-01"}
        elif route == "chat":
            payload = {
                "id": "loopback",
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": caption}, "finish_reason": "stop"}
                ],
            }
        else:
            payload = [{"generated_text": caption}]
        body = json.dumps(payload).encode()
        if fault in ("trickle", "trickle-headers", "reset", "short", "badgzip", "huge", "huge-chunked"):
            return self._deliver_badly(fault, body)
        return self._send(200, body)

    def _deliver_badly(self, fault: str, body: bytes) -> None:
        """Send a correct answer incorrectly (see the module docstring); the connection is closed after."""
        owner = self.server.owner
        self.close_connection = True
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        if fault == "badgzip":
            body = b"this is not a gzip stream" + bytes(range(64))
            headers.update({"Content-Encoding": "gzip", "Content-Length": str(len(body))})
        if fault in ("huge", "huge-chunked"):
            body = b"<html>" + b"x" * owner.big_bytes + b"</html>"
            headers = {"Content-Type": "text/html", "Content-Length": str(len(body))}
        if fault == "huge-chunked":
            headers = {"Content-Type": "text/html", "Transfer-Encoding": "chunked"}
        head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        try:
            if fault == "trickle-headers":
                for i in range(len(head)):
                    self.wfile.write(head[i].encode("latin-1"))
                    time.sleep(owner.trickle_interval)
                self.wfile.write(body)
            elif fault == "trickle":
                self.wfile.write(head.encode("latin-1"))
                for i in range(len(body)):
                    self.wfile.write(body[i : i + 1])
                    time.sleep(owner.trickle_interval)
            elif fault in ("reset", "short"):
                self.wfile.write(head.encode("latin-1") + body[: len(body) // 2])
                if fault == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
            elif fault == "huge-chunked":
                self.wfile.write(head.encode("latin-1"))
                for start in range(0, len(body), 65536):
                    piece = body[start : start + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(head.encode("latin-1"))
                for start in range(0, len(body), 65536):
                    self.wfile.write(body[start : start + 65536])
        except OSError:  # the client hung up: that is what the fault tests
            pass

    @staticmethod
    def _question(body: bytes) -> str | None:
        message = json.loads(body)["messages"][0]
        texts = [p["text"] for p in message["content"] if p.get("type") == "text"]
        return texts[0] if texts else None

    @staticmethod
    def _image_bytes(route: str, body: bytes) -> bytes:
        if route != "chat":
            return body
        message = json.loads(body)["messages"][0]
        parts = [p for p in message["content"] if p.get("type") == "image_url"]
        url = parts[0]["image_url"]["url"]
        return base64.b64decode(url.split(",", 1)[1])


class CaptionServer:
    """A threaded HTTP captioning server on ``127.0.0.1`` (a free port), for tests.

    Args:
        key: the accepted key (None accepts anything).
        latency: seconds every request takes.
        rule: ``rule(image) -> caption``.
        tag_rule: ``tag_rule(image) -> {name: confidence}`` (the tags protocols).
        answer_rule: ``answer_rule(image, prompt) -> answer`` (chat completions).
        hang: seconds a ``"timeout"`` fault sleeps before dropping the connection.
        retry_after: ``Retry-After`` of a plain ``"429"`` fault.
        trickle_interval: seconds between the bytes of a ``"trickle"`` fault.
        big_bytes: size of a ``"huge"`` body or a ``"long-caption"`` caption.

    Attributes:
        url: ``http://127.0.0.1:<port>``.
        requests: total requests received.
        faults_served: faults served, by kind.
        answered: successful answers per image SHA-256.
        paths: requests per URL path.
        questions: chat prompts received, by text.
    """

    def __init__(
        self,
        key: str | None = "loopback-secret-key-0123456789",
        latency: float = 0.0,
        rule: Callable[[np.ndarray], str] = rule_caption,
        tag_rule: Callable[[np.ndarray], dict[str, float]] = rule_tags,
        answer_rule: Callable[[np.ndarray, str], str] = rule_answer,
        hang: float = 1.0,
        retry_after: str = "0",
        trickle_interval: float = 0.1,
        big_bytes: int = 4 << 20,
    ) -> None:
        self.key = key
        self.latency = float(latency)
        self.rule = rule
        self.tag_rule = tag_rule
        self.answer_rule = answer_rule
        self.hang = float(hang)
        self.retry_after = retry_after
        self.trickle_interval = float(trickle_interval)
        self.big_bytes = int(big_bytes)
        self._lock = threading.Lock()
        self._faults: collections.deque[str] = collections.deque()
        self.requests = 0
        self.faults_served: collections.Counter[str] = collections.Counter()
        self.answered: collections.Counter[str] = collections.Counter()
        self.paths: collections.Counter[str] = collections.Counter()
        self.questions: collections.Counter[str] = collections.Counter()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- control
    def start(self) -> CaptionServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="caption-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> CaptionServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL of the server."""
        if self._httpd is None:
            raise RuntimeError("CaptionServer: not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, *faults: str) -> None:
        """Queue faults; each request takes the next one."""
        with self._lock:
            self._faults.extend(faults)

    def reset_counts(self) -> None:
        """Zero the counters (queued faults are kept)."""
        with self._lock:
            self.requests = 0
            self.faults_served.clear()
            self.answered.clear()
            self.paths.clear()
            self.questions.clear()

    # -- used by the handler
    def _begin(self, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            self.paths[path] += 1
            fault = self._faults.popleft() if self._faults else None
            if fault is not None:
                self.faults_served[fault] += 1
            return fault

    def _asked(self, question: str) -> None:
        with self._lock:
            self.questions[question] += 1

    def _answered(self, digest: str, caption: str) -> None:
        with self._lock:
            self.answered[digest] += 1

    @staticmethod
    def _route(path: str) -> str | None:
        if path == "/vision/v3.1/analyze":
            return "v31"
        if path == "/computervision/imageanalysis:analyze":
            return "v40"
        if path == "/v1/chat/completions":
            return "chat"
        if path.startswith("/models/"):
            return "hf"
        return None
