"""lime's run split in two passes, so that several images' perturbed images are labelled together.

lime has no batch API: ``explain_instance`` draws one image's samples, labels
them through ``classifier_fn`` and fits the surrogates. Here the first pass
stops each image's run once its samples are drawn (:class:`_Sampling`), the
perturbed images of every image are labelled in calls that span images
(:func:`label_samples`), and the second pass finishes each run on its labelled
samples, so lime fits the same surrogates as in one pass.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from xai_bridge._validate import to_uint8
from xai_bridge.contract import ExplainRequest

__all__ = ["first_pass", "label_samples", "second_pass"]


def first_pass(
    request: ExplainRequest,
    segments: np.ndarray,
    classifier_fn: Callable[[np.ndarray], np.ndarray],
    ctor: dict[str, Any],
    call: dict[str, Any],
) -> tuple[list[Callable[[], Any]], list[_Sampling], list[dict[int, tuple[Any, ...]]]]:
    """Each image's lime run (a fresh seeded explainer), started until its samples are drawn.

    Returns the runs (call one again for the second pass), their samplings
    (to label together) and the surrogate fits each run will capture.
    """
    from lime import lime_image

    runs: list[Callable[[], Any]] = []
    samplings, fitted = [], []
    for i, image in enumerate(request.images):
        explainer = lime_image.LimeImageExplainer(**ctor, random_state=request.seed % 2**32)
        fitted.append(_capture_fits(explainer))
        samplings.append(_Sampling(explainer))
        runs.append(
            functools.partial(
                explainer.explain_instance,
                image.astype(np.float64),
                classifier_fn,
                labels=tuple(int(k) for k in request.targets[i]),
                segmentation_fn=lambda _image, seg=segments[i]: seg,
                random_seed=request.seed % 2**32,
                **call,
            )
        )
        with contextlib.suppress(_Drawn):
            runs[i]()
    return runs, samplings, fitted


def second_pass(
    runs: list[Callable[[], Any]],
    fitted: list[dict[int, tuple[Any, ...]]],
    targets: np.ndarray,
    segments: np.ndarray,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Finish every run on its labelled samples: the maps, and extras (superpixels, weights, order, fits)."""
    n, t = targets.shape
    s_max = int(segments.max()) + 1
    weights = np.full((n, t, s_max), np.nan, np.float32)
    order = np.full((n, t, s_max), -1, np.int32)
    fits = np.zeros((3, n, t), np.float32)  # intercept, local_score, local_pred
    attributions = np.zeros((n, t, *segments.shape[1:]), np.float32)
    for i in range(n):
        exp = runs[i]()
        for j, label in enumerate(targets[i]):
            ranked = exp.local_exp[int(label)]
            ids = np.array([f for f, _ in ranked], np.int64)
            vals = np.array([v for _, v in ranked], np.float64)
            order[i, j, : len(ids)] = ids
            weights[i, j, ids] = vals
            per_superpixel = np.zeros(s_max, np.float64)
            per_superpixel[ids] = vals
            attributions[i, j] = per_superpixel[segments[i]]
            intercept, _, score, local_pred = fitted[i][int(label)]
            fits[:, i, j] = (intercept, score, np.ravel(local_pred)[0])
    extras = {"segments": np.repeat(segments[:, None], t, axis=1), "superpixel_weights": weights}
    extras.update(superpixel_order=order, intercept=fits[0], local_score=fits[1], local_pred=fits[2])
    return attributions, extras


class _Drawn(Exception):
    """Stops lime's first pass once the samples are drawn (see :class:`_Sampling`)."""


class _Sampling:
    """lime's ``data_labels`` on one explainer, split so that several images' samples are labelled together.

    The first call draws the samples exactly as lime does (one ``randint`` of
    ``num_samples * n_features`` from the explainer's generator, first row all
    ones), keeps them and stops lime with :class:`_Drawn`; :func:`label_samples`
    then builds the perturbed images with array operations (lime's per-sample
    loop deep-copies the image: ~1 ms a sample at 224x224) and labels them;
    the second call returns the same samples and their labels, so lime fits
    the same surrogates as in one pass. Images are mixed in uint8: the
    backend's ``classifier_fn`` rounds to uint8 anyway, so the perturbed
    images are the same, with 8x less memory.
    """

    def __init__(self, explainer: Any) -> None:
        self.data: np.ndarray | None = None
        self.labels: np.ndarray | None = None
        self.image = self.fudged = np.zeros(0, np.uint32)  # packed pixels, see _packed
        self.segments = np.zeros(0, np.int32)
        self.n_features = 0
        self.explainer = explainer
        explainer.data_labels = self.data_labels  # this explainer instance only

    def data_labels(
        self,
        image: np.ndarray,
        fudged_image: np.ndarray,
        segments: np.ndarray,
        classifier_fn: Any,
        num_samples: int,
        batch_size: int = 10,
        **_: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Same signature as lime's; the first call raises :class:`_Drawn`, the second returns the labelled samples."""
        if self.data is not None and self.labels is not None:
            return self.data, self.labels
        n_features = np.unique(segments).shape[0]
        data = self.explainer.random_state.randint(0, 2, num_samples * n_features).reshape((num_samples, n_features))
        data[0, :] = 1
        self.data, self.n_features, self.segments = data, n_features, segments
        self.image, self.fudged = (_packed(to_uint8(a)) for a in (image, fudged_image))
        raise _Drawn

    def perturbed(self, start: int, stop: int) -> np.ndarray:
        """uint8 images of samples ``start:stop``: lime hides the pixels of segment ``z`` where ``row[z] == 0``."""
        assert self.data is not None
        rows = self.data[start:stop]
        hide = np.zeros((len(rows), max(int(self.segments.max()) + 1, self.n_features)), bool)
        hide[:, : self.n_features] = rows == 0
        hidden = np.take(hide, self.segments, axis=1)  # (b, H, W), C order
        mixed = np.where(hidden, self.fudged, self.image)  # (b, H, W) packed pixels
        return mixed[..., None].view(np.uint8)[..., :3]


def _packed(image: np.ndarray) -> np.ndarray:
    """uint8 ``(H, W, 3)`` -> uint32 ``(H, W)``, one pixel a word (its bytes in memory order, the 4th zero).

    Selecting whole pixels as words is 8x faster than broadcasting a pixel mask
    over the colour axis (2 ms instead of 15 ms for 16 images at 224x224).
    """
    h, w = image.shape[:2]
    words = np.zeros((h, w, 4), np.uint8)
    words[..., :3] = image
    return words.view(np.uint32).reshape(h, w)


def label_samples(samplings: list[_Sampling], classifier_fn: Callable[[np.ndarray], np.ndarray], batch: int) -> None:
    """Label every image's samples, in calls of ``batch`` perturbed images that span images (in order)."""
    spans = [(k, 0, len(s.data)) for k, s in enumerate(samplings) if s.data is not None]
    outs: list[list[np.ndarray]] = [[] for _ in samplings]
    queue: list[tuple[int, int, int]] = []  # (image, start, stop) parts of the next call
    size = 0
    for k, start, stop in spans:
        while start < stop:
            take = min(batch - size, stop - start)
            queue.append((k, start, start + take))
            size, start = size + take, start + take
            if size == batch:
                _label_call(samplings, queue, classifier_fn, outs)
                queue, size = [], 0
    if queue:
        _label_call(samplings, queue, classifier_fn, outs)
    for s, parts in zip(samplings, outs, strict=True):
        s.labels = np.concatenate(parts, axis=0)


def _label_call(
    samplings: list[_Sampling],
    parts: list[tuple[int, int, int]],
    classifier_fn: Callable[[np.ndarray], np.ndarray],
    outs: list[list[np.ndarray]],
) -> None:
    batch = np.concatenate([samplings[k].perturbed(a, b) for k, a, b in parts], axis=0)
    labels = np.asarray(classifier_fn(batch))
    offset = 0
    for k, a, b in parts:
        outs[k].append(labels[offset : offset + b - a])
        offset += b - a


def _capture_fits(explainer: Any) -> dict[int, tuple[Any, ...]]:
    """Record each label's surrogate fit: lime's ImageExplanation keeps only the last one's score."""
    fitted: dict[int, tuple[Any, ...]] = {}
    fit = explainer.base.explain_instance_with_data

    def capture(data: Any, labels: Any, distances: Any, label: int, *args: Any, **kwargs: Any) -> Any:
        out = fit(data, labels, distances, label, *args, **kwargs)
        fitted[int(label)] = out
        return out

    explainer.base.explain_instance_with_data = capture  # this explainer instance only
    return fitted
