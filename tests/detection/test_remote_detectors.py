"""Remote detectors (Azure Image Analysis 4.0 objects/people, v3.2 detect) against a loopback server.

The server looks at the image it is sent: a white square is a "dog", a red
one a "cat" (and, for ``features=people``, a "person"); each box is drawn
around the square's pixels still visible, its confidence the share of them
left. Masking a square therefore lowers its confidence and moves its box,
which is what D-RISE must find.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

pytest.importorskip("requests")

from PIL import Image
from xai_bridge.adapters.captioners import (
    AuthenticationError,
    AzureVision40Detector,
    AzureVisionV32Detector,
    DiskCache,
    RemoteCaptionError,
    RetryPolicy,
)

import xai_bridge as xb

pytestmark = pytest.mark.timeout(60)

KEY = "loopback-detect-key-0123456789"
FAST_RETRY = RetryPolicy(backoff=0.01, max_backoff=0.05, seed=0)
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
        sent = self.headers.get("Ocp-Apim-Subscription-Key", "")
        if sent != owner.key:
            message = f"Access denied due to invalid subscription key {sent}."  # echoed, as a careless server does
            return self._send(401, {"error": {"code": "401", "message": message}})
        if fault is not None and fault.startswith("429"):
            return self._send(429, {"error": {"code": "429", "message": "Rate limit"}}, {"Retry-After": fault[4:]})
        if fault is not None and fault.isdigit():
            return self._send(int(fault), {"error": {"code": fault, "message": f"fault {fault}"}})
        if url.path not in ("/computervision/imageanalysis:analyze", "/vision/v3.2/detect"):
            return self._send(404, {"error": {"code": "404", "message": "Resource not found"}})
        image = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
        found = find(image)
        if fault == "echo":  # a server that puts the key in its answer
            found = [(f"{name} {owner.key}", box, c) for name, box, c in found]
        owner.answered[hashlib.sha256(body).hexdigest()] += 1
        meta = {"width": image.shape[1], "height": image.shape[0]}
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


@pytest.fixture
def server() -> Iterator[AzureDetectServer]:
    with AzureDetectServer() as srv:
        yield srv


def make(kind: str, srv: AzureDetectServer, **kwargs: Any) -> Any:
    kwargs = {"key": KEY, "cache": None, "retry": FAST_RETRY, "timeout": (2.0, 5.0), "max_concurrency": 8, **kwargs}
    if kind == "v32":
        return AzureVisionV32Detector(srv.url, **kwargs)
    return AzureVision40Detector(srv.url, features=kind, **kwargs)


@pytest.mark.parametrize("kind", ["objects", "v32"])
def test_boxes_labels_and_scores_come_back_in_the_images_pixels(kind: str, server: AzureDetectServer) -> None:
    with make(kind, server) as det:
        [found] = det.detect(scene()[None])
    assert det.class_names == ["dog", "cat"]  # the highest-confidence tag of each 4.0 object; v3.2's "object"
    np.testing.assert_array_equal(found.boxes, [DOG[1], CAT[1]])  # x, y, w, h -> x0, y0, x1, y1
    np.testing.assert_array_equal(found.labels, [0, 1])
    np.testing.assert_allclose(found.scores, [1.0, 1.0])


def test_people_and_both_features(server: AzureDetectServer) -> None:
    with make("people", server) as people, make(("objects", "people"), server) as both:
        [p] = people.detect(scene()[None])
        [b] = both.detect(scene()[None])
    assert people.class_names == ["person"] and p.boxes.tolist() == [list(CAT[1])]
    assert both.class_names == ["dog", "cat", "person"] and b.labels.tolist() == [0, 1, 2]
    assert both.describe()["params"]["features"] == "objects,people"


def test_an_image_the_client_enlarged_has_its_boxes_scaled_back(server: AzureDetectServer) -> None:
    small = scene(40)  # under Azure's 50-pixel minimum: sent as 50x50, answered in those pixels
    with make("objects", server) as det:
        [found] = det.detect(small[None])
    expected = np.array(
        [[x0 * 40 / 64, y0 * 40 / 64, x1 * 40 / 64, y1 * 40 / 64] for x0, y0, x1, y1 in (DOG[1], CAT[1])]
    )
    np.testing.assert_allclose(found.boxes, expected, atol=1.0)


def test_label_indices_stay_put_as_new_names_appear(server: AzureDetectServer) -> None:
    only_cat = scene()
    only_cat[8:28, 36:56] = 110  # no dog
    with make("objects", server, class_names=["bird"]) as det:
        first = det.detect(only_cat[None])[0]
        second = det.detect(np.stack([scene(), only_cat]))
    assert first.labels.tolist() == [1]  # "bird" seeded at 0, then "cat"
    assert det.class_names == ["bird", "cat", "dog"]  # "dog", first seen later, is appended
    assert second[0].labels.tolist() == [2, 1] and second[1].labels.tolist() == [1]


def test_429_with_retry_after_and_a_500_are_retried(server: AzureDetectServer) -> None:
    server.faults.extend(["429:0.2", "500"])
    with make("objects", server) as det:
        [found] = det.detect(scene()[None])
        assert det.stats.snapshot()["retries"] == 2 and det.stats.snapshot()["requests"] == 3
    assert len(found) == 2 and server.requests == 3


def test_a_refused_key_is_one_line_without_the_key(server: AzureDetectServer) -> None:
    wrong = "wrong-detect-key-987654321"
    with make("objects", server, key=wrong) as det, pytest.raises(AuthenticationError) as info:
        det.detect(scene()[None])
    text = str(info.value)
    assert "HTTP 401" in text and "check key=" in text and "\n" not in text
    assert wrong not in text and "***" in text  # the server echoed the key; the message shows ***
    assert server.requests == 1  # never retried


def test_a_404_fails_at_once_naming_the_fix(server: AzureDetectServer) -> None:
    with AzureVisionV32Detector(server.url + "/wrong", key=KEY, cache=None, retry=FAST_RETRY) as det:
        with pytest.raises(RemoteCaptionError, match=r"HTTP 404 \('Resource not found'\); check the endpoint URL"):
            det.detect(scene()[None])
    assert server.requests == 1


def test_an_echoed_key_reaches_neither_the_labels_nor_the_cache(server: AzureDetectServer, tmp_path: Any) -> None:
    server.faults.append("echo")
    path = tmp_path / "detect.sqlite"
    with make("objects", server, cache=DiskCache(path)) as det:
        det.detect(scene()[None])
        names = det.class_names
    assert names == ["dog ***", "cat ***"]
    assert KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


def test_drise_localises_the_box_the_server_finds_and_the_estimate_is_exact(
    server: AzureDetectServer, tmp_path: Any
) -> None:
    image = scene()
    params = {"budget": 120, "grid": 8}
    with make("objects", server, cache=DiskCache(tmp_path / "c.sqlite")) as det:
        estimate = xb.estimate_calls(det, image, "builtin.DRISE", targets="dog", verbose=False, **params)
        assert server.requests == 0  # a dry run sends nothing
        [exp] = xb.explain_detections(det, image, "builtin.DRISE", targets="dog", progress=False, **params)
        paid = server.requests
        assert estimate.calls == paid == sum(server.answered.values()) == estimate.distinct_images
        again = xb.estimate_calls(det, image, "builtin.DRISE", targets="dog", verbose=False, **params)
        [exp2] = xb.explain_detections(det, image, "builtin.DRISE", targets="dog", progress=False, **params)
    assert again.calls == 0 and server.requests == paid  # a perturbed image seen twice is one request
    np.testing.assert_array_equal(exp.attributions, exp2.attributions)
    assert exp.target_names[0] == ["dog 1.00"] and exp.extras["boxes"][0].tolist() == [list(map(float, DOG[1]))]
    heat = exp.attributions[0, 0]
    x0, y0, x1, y1 = DOG[1]
    inside = np.zeros_like(heat, bool)
    inside[y0:y1, x0:x1] = True
    row, col = np.unravel_index(heat.argmax(), heat.shape)
    assert inside[row, col]  # the pointing game
    above = np.clip(heat - np.median(heat), 0, None)  # D-RISE maps sit on a positive floor
    assert above[inside].sum() / above.sum() > 0.3  # the box is 10% of the image
    assert heat[inside].mean() > 1.15 * heat[~inside].mean()
