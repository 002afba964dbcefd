"""Remote detectors (Azure Image Analysis 4.0 objects/people, v3.2 detect) against a loopback server.

The server (``tests/detection_server.py``) looks at the image it is sent: a
white square is a "dog", a red one a "cat" (and, for ``features=people``, a
"person"); each box is drawn around the square's pixels still visible, its
confidence the share of them left. Masking a square therefore lowers its
confidence and moves its box, which is what D-RISE must find.
"""

from __future__ import annotations

import time
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("requests")

from detection_server import CAT, DOG, KEY, AzureDetectServer, scene
from xai_bridge.adapters.captioners import (
    AuthenticationError,
    AzureVision40Detector,
    AzureVisionV32Detector,
    DiskCache,
    OpenAIDetector,
    RemoteCaptionError,
    RetryPolicy,
)

import xai_bridge as xb

pytestmark = pytest.mark.timeout(60)

FAST_RETRY = RetryPolicy(backoff=0.01, max_backoff=0.05, seed=0)


@pytest.fixture
def server() -> Iterator[AzureDetectServer]:
    with AzureDetectServer() as srv:
        yield srv


def make(kind: str, srv: AzureDetectServer, **kwargs: Any) -> Any:
    kwargs = {"key": KEY, "cache": None, "retry": FAST_RETRY, "timeout": (2.0, 5.0), "max_concurrency": 8, **kwargs}
    if kind == "v32":
        return AzureVisionV32Detector(srv.url, **kwargs)
    if kind == "vlm":
        return OpenAIDetector(srv.url + "/v1", "loopback-vlm", **kwargs)
    return AzureVision40Detector(srv.url, features=kind, **kwargs)


@pytest.mark.parametrize("kind", ["objects", "v32", "vlm"])
def test_boxes_labels_and_scores_come_back_in_the_images_pixels(kind: str, server: AzureDetectServer) -> None:
    with make(kind, server) as det:
        [found] = det.detect(scene()[None])
    assert det.class_names == ["dog", "cat"]  # 4.0: each object's highest-confidence tag; v3.2: "object"; VLM: "label"
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


def test_an_echoed_key_reaches_neither_the_labels_nor_the_cache_nor_a_saved_explanation(
    server: AzureDetectServer, tmp_path: Any
) -> None:
    server.faults.extend(["echo"] * 20)  # the first image and every occluded one
    with make("objects", server, cache=DiskCache(tmp_path / "detect.sqlite")) as det:
        [exp] = xb.explain_detections(det, scene(), "builtin.Occlusion", targets=xb.top_k(1), window=32, stride=32)
        names = det.class_names
    assert names == ["dog ***", "cat ***"] and exp.target_names[0].tolist() == ["dog *** 1.00"]
    exp.save(tmp_path / "exp.npz")
    with zipfile.ZipFile(tmp_path / "exp.npz") as npz:
        stored = b"".join(npz.read(name) for name in npz.namelist())
    assert b"dog ***" in stored or "dog ***".encode("utf-32-le") in stored  # the label is stored, scrubbed
    assert KEY.encode() not in stored and KEY.encode("utf-32-le") not in stored
    assert KEY.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.suffix != ".npz")


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("builtin.Occlusion", {"window": 16, "stride": 16}),
        ("builtin.RISE", {"budget": 40, "grid": 4}),
        pytest.param("shap.Partition", {"budget": 40}, marks=pytest.mark.slow),  # importing shap: ~30 s here
        ("lime.Lime", {"budget": 30}),
    ],
)
def test_the_estimate_is_the_request_count_for_other_methods(
    server: AzureDetectServer, tmp_path: Any, method: str, params: dict[str, Any]
) -> None:
    pytest.importorskip(method.split(".")[0] if method.split(".")[0] in ("shap", "lime") else "numpy")
    with make("objects", server, cache=DiskCache(tmp_path / "c.sqlite")) as det:
        estimate = xb.estimate_calls(det, scene(), method, targets=xb.top_k(2), verbose=False, **params)
        xb.explain_detections(det, scene(), method, targets=xb.top_k(2), progress=False, **params)
    assert estimate.calls == server.requests == sum(server.answered.values()) > 1


def test_the_rate_limit_spaces_the_requests(server: AzureDetectServer) -> None:
    images = np.stack([scene(seed=s) for s in range(6)])
    with make("objects", server, rate_limit=40.0) as det:
        start = time.monotonic()
        det.detect(images)
        took = time.monotonic() - start
    assert server.requests == 6 and took >= 5 / 40 * 0.9  # a burst of 1, then 40 requests a second


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


def test_a_vlm_reply_without_the_json_asked_for_is_retried_then_an_error(server: AzureDetectServer) -> None:
    server.faults.append("prose")
    with make("vlm", server) as det:
        [found] = det.detect(scene()[None])  # one prose reply: asked again
        assert len(found) == 2 and server.requests == 2
        server.faults.extend(["prose"] * 3)
        with pytest.raises(RemoteCaptionError, match=r"sent 3 malformed answers \(the answer is not JSON"):
            det.detect(scene(seed=1)[None])


def test_a_vlm_giving_per_mille_boxes_is_read_in_pixels(server: AzureDetectServer) -> None:
    with make("vlm", server, coordinates="per_mille") as det:
        [found] = det.detect(scene()[None])  # the loopback model answers pixels: read as per mille of 64
    np.testing.assert_allclose(found.boxes[0], np.array(DOG[1]) * 64 / 1000)
