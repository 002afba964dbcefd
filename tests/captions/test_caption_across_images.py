"""explain_caption over several images with a remote captioner: the images take turns, results equal per-image runs.

Every image's explanation runs in its own thread and hands its turn over
while its captions are fetched (``xai_bridge._turns``); shap's Partition
draws tie-breaking numbers from numpy's global generator between its
batches, so equal results prove each image kept its own random stream.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("requests")

from caption_server import CaptionServer, rule_caption
from xai_bridge.adapters.captioners import AzureVisionV31Captioner, encode_image
from xai_bridge.adapters.captioners.azure import AZURE_V31_LIMITS
from xai_bridge.adapters.captioners.scorers import WordMatchScorer

import xai_bridge as xb
from xai_bridge._turns import Turns
from xai_bridge.captions import explain_caption
from xai_bridge.options import ImageMasker, MaskKind

pytestmark = pytest.mark.timeout(120)


def images(n: int = 3, size: int = 64) -> list[np.ndarray]:
    """Seeded noise images with one bright quadrant each (a different one per image)."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        img = rng.integers(0, 120, (size, size, 3), dtype=np.uint8)
        h = size // 2
        y, x = divmod(i % 4, 2)
        img[y * h : (y + 1) * h, x * h : (x + 1) * h] = 240
        out.append(img)
    return out


def _partition(cap, imgs, **kw):
    if "shap.Partition" not in xb.available_methods():
        pytest.skip("shap is not installed")
    return explain_caption(
        cap,
        imgs,
        "shap.Partition",
        scorer=WordMatchScorer(),
        budget=60,
        batch_size=10,
        masker=ImageMasker(MaskKind.CONSTANT, value=0.0),
        **kw,
    )


def test_images_together_equal_one_call_per_image_and_each_image_is_sent_once():
    imgs = images(3)
    state = np.random.get_state()
    with CaptionServer() as server:
        with AzureVisionV31Captioner(server.url, key=server.key, cache=None) as cap:
            together = _partition(cap, imgs)
        requests_together, answered = server.requests, dict(server.answered)
        server.reset_counts()
        alone = []
        for img in imgs:
            with AzureVisionV31Captioner(server.url, key=server.key, cache=None) as cap:
                alone += _partition(cap, img)
        requests_alone = server.requests
    # the caller's global generator is left as it was
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    assert len(together) == 3
    for t, a, img in zip(together, alone, imgs, strict=True):
        np.testing.assert_array_equal(t.attributions, a.attributions)
        np.testing.assert_array_equal(t.scores, a.scores)
        np.testing.assert_array_equal(t.base_scores, a.base_scores)
        assert t.params["caption"] == rule_caption(img) and t.n_model_evals == a.n_model_evals
    # every distinct image answered once: the fully masked (black) image, which each image's explanation
    # asks for, goes out once instead of three times
    assert set(answered.values()) == {1} and requests_together == len(answered) == requests_alone - 2


class GatedCaptioner:
    """A 'remote' captioner whose first call of each image waits until every image has called (a barrier).

    Explained one after another, the first image would wait alone and the
    barrier would break: passing it proves the images' requests are pending together.
    """

    max_concurrency = 8

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=30)
        self.first_calls = 0
        self.lock = threading.Lock()

    def caption(self, batch: np.ndarray) -> list[str]:
        with self.lock:
            first = self.first_calls < self.barrier.parties
            self.first_calls += first
        if first:
            self.barrier.wait()
        return [rule_caption(img) for img in batch]


def test_requests_of_all_images_are_pending_together():
    cap = GatedCaptioner(3)
    exps = _partition(cap, images(3))
    assert cap.first_calls == 3 and not cap.barrier.broken
    assert [e.params["caption"] for e in exps] == [rule_caption(img) for img in images(3)]


def test_a_failing_image_raises_after_the_others_finish():
    calls = []

    class Failing(GatedCaptioner):
        def caption(self, batch: np.ndarray) -> list[str]:
            calls.append(len(batch))
            if batch[0, 0, 0, 0] == 1:
                raise RuntimeError("image two is refused")
            return [rule_caption(img) for img in batch]

    imgs = images(3)
    imgs[1][0, 0, 0] = 1
    with pytest.raises(RuntimeError, match="image two"):
        _partition(Failing(3), imgs)


def test_turns_outside_map_call_through_and_one_item_runs_inline():
    turns = Turns(4)
    calls = []
    ask = turns.offload(lambda x: calls.append(threading.current_thread().name) or x * 2)
    assert ask(3) == 6 and calls == [threading.current_thread().name]
    assert turns.map(lambda x: ask(x) + 1, [5]) == [11]


def test_azure_sends_bmp_by_default_and_falls_back_to_lossless_png_when_too_large():
    from xai_bridge.adapters.captioners.http import DEFAULT_CONCURRENCY, ImageLimits

    with AzureVisionV31Captioner("http://127.0.0.1:9", key="k", cache=None) as cap:
        assert cap.image_format == "BMP" and cap.max_concurrency == DEFAULT_CONCURRENCY >= 50
    img = images(1, size=96)[0]
    enc = encode_image(img, AZURE_V31_LIMITS, "BMP")
    assert enc.content_type == "image/bmp" and enc.data[:2] == b"BM"
    tight = ImageLimits(max_bytes=len(enc.data) - 1, formats=("BMP", "PNG", "JPEG"))
    png = encode_image(img, tight, "BMP")
    assert png.content_type == "image/png"
    from io import BytesIO

    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(BytesIO(png.data))), img)  # still lossless
