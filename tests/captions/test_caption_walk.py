"""The remote caption walk: how often one masked image's caption crosses between xai_bridge/ and adapters/.

Every Python call made while a caption model asks its remote captioner for
one masked image (its ``captions_of`` call, from the request to the
answer) is traced in every thread with ``sys.setprofile`` /
``threading.setprofile``. A call crosses when the callee's file is under
``xai_bridge/`` and its caller's under ``adapters/``, or the reverse; the
caller is the nearest frame up the stack in either folder (standard library
and third-party frames in between, e.g. ``requests``, are skipped), and a
thread's first frame counts as called by whoever owns the thread (the
remote client's pool and deadline watchdog: adapters/; the images' turns: xai_bridge/).
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("requests")

from caption_server import CaptionServer
from helpers import REPO
from xai_bridge.adapters.captioners import AzureVisionV31Captioner, WordMatchScorer

import xai_bridge.captions.model as model_module
from xai_bridge.captions import explain_caption

ROOT = REPO
CORE, ADAPTERS = str(ROOT / "xai_bridge") + "/", str(ROOT / "adapters") + "/"
#: who starts the threads a caption walks through
THREAD_OWNERS = {"xai-bridge-caption": "adapters", "xai-bridge-deadline": "adapters"}


def _area(filename: str) -> str | None:
    if filename.startswith(ADAPTERS) or "/xai_bridge/adapters/" in filename:  # an installed copy maps it there
        return "adapters"
    if filename.startswith(CORE):
        return "core"
    return None


class CrossingCounter:
    """Counts calls whose callee and nearest package caller sit on different sides, inside a caption's window.

    A window is open in the thread that asks for a masked image's caption;
    calls count in that thread and in the threads the remote client owns
    (which serve its requests), not in other images' threads meanwhile.
    """

    def __init__(self) -> None:
        self.windows: set[int] = set()
        self.crossings: list[str] = []
        self._lock = threading.Lock()

    def _owner(self) -> str:
        name = threading.current_thread().name
        return next((area for prefix, area in THREAD_OWNERS.items() if name.startswith(prefix)), "core")

    def profile(self, frame: Any, event: str, arg: Any) -> None:
        if event != "call" or not self.windows:
            return
        if threading.get_ident() not in self.windows and self._owner() != "adapters":
            return
        callee = _area(frame.f_code.co_filename)
        if callee is None:
            return
        up = frame.f_back
        while up is not None and _area(up.f_code.co_filename) is None:
            up = up.f_back
        caller = _area(up.f_code.co_filename) if up is not None else self._owner()
        if caller != callee:
            where = f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"
            with self._lock:
                self.crossings.append(f"{caller} -> {callee} {where}")

    def __enter__(self) -> CrossingCounter:
        sys.setprofile(self.profile)
        threading.setprofile(self.profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]


def _traced_walk(monkeypatch: pytest.MonkeyPatch, n_images: int, module: Any = model_module) -> tuple[list[str], int]:
    """Explain ``n_images`` captions with a remote captioner: the crossings while masked images are captioned.

    The window is the caption model's call for the captions of its masked
    images (``captions_of`` in ``module``), from the request to the answers.
    """
    counter = CrossingCounter()
    ask = module.captions_of
    windows: list[int] = []

    def windowed(captioner: Any, images: np.ndarray, prompt: str | None = None) -> list[str]:
        with counter._lock:
            counter.windows.add(threading.get_ident())
        windows.append(len(images))
        try:
            return ask(captioner, images, prompt)
        finally:
            with counter._lock:
                counter.windows.discard(threading.get_ident())

    monkeypatch.setattr(module, "captions_of", windowed)
    images = [np.full((64, 64, 3), 40 + 150 * (i % 2), np.uint8) for i in range(n_images)]
    with CaptionServer() as server, AzureVisionV31Captioner(server.url, key=server.key, cache=None) as cap:
        with counter:
            exps = explain_caption(
                cap, images, "builtin.Occlusion", scorer=WordMatchScorer(), window=64, stride=64, baseline=0
            )
        requests = server.requests
    assert len(exps) == n_images and windows == [1] * n_images  # each explanation asks for one masked image
    return counter.crossings, requests


def test_one_masked_image_caption_crosses_at_most_four_times(monkeypatch: pytest.MonkeyPatch) -> None:
    crossings, requests = _traced_walk(monkeypatch, 1)
    # the image's own caption, then its one masked image (the unmasked one is the reference: never sent again)
    assert requests == 2
    assert 1 <= len(crossings) <= 4, crossings


def test_images_taking_turns_cross_at_most_four_times_per_masked_caption(monkeypatch: pytest.MonkeyPatch) -> None:
    crossings, requests = _traced_walk(monkeypatch, 2)
    # two captions and one shared fully masked image: asked for by both explanations, sent once
    assert requests == 3
    assert 1 <= len(crossings) <= 4, crossings
