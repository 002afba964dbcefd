"""Remote object detectors: Azure AI Vision Image Analysis 4.0 ``objects``/``people`` and v3.2 ``detect``.

A remote detector is a :class:`~xai_bridge.detection.Detector` behind the
same HTTP client as the captioners (:class:`~.client.RemoteClient`: retries
on 429/5xx honouring ``Retry-After``, rate limit, concurrency, the answer
cache, no redirects, the key never shown), so ``xb.explain_detections`` runs
D-RISE, RISE, occlusion, shap or LIME on a cloud API, and
``xb.estimate_calls`` counts the paid requests first.

Labels. An API answers names (``"dog"``), a :class:`Detections` holds
indices; each detector keeps a vocabulary that grows as names are seen: a
name gets the next index the first time any answer holds it and keeps it
for the detector's lifetime. ``explain_detections`` detects on the
unperturbed image first, so the targets' names are indexed before any
perturbed image is seen, and a name first met on a perturbed image is
appended, never moving an earlier one. Answers are indexed in image order on
the calling thread, so the indices do not depend on which request came back
first; ``class_names=`` seeds the vocabulary to fix the indices across runs.

Boxes. The API answers ``{x, y, w, h}`` in the pixels of the image it was
sent, which the client may have resized to the API's limits; the cache keeps
that size with the boxes, and they come back as ``(x0, y0, x1, y1)`` in the
pixels of the caller's image.

Example::

    detector = AzureVision40Detector("https://<name>.cognitiveservices.azure.com")  # key: $AZURE_VISION_KEY
    print(xb.estimate_calls(detector, "street.jpg", "builtin.DRISE", budget=500))
    [exp] = xb.explain_detections(detector, "street.jpg", "builtin.DRISE", budget=500)
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from xai_bridge.detection import Detections
from xai_bridge.errors import ParameterError

from .azure import AZURE_V40_LIMITS
from .client import RemoteClient, _Call
from .encoding import EncodedImage, ImageLimits
from .keys import MalformedAnswer
from .remote import _join

__all__ = ["AZURE_V32_LIMITS", "AzureVision40Detector", "AzureVisionV32Detector", "RemoteDetector"]

#: Azure Computer Vision v3.2 detect: < 4 MB, at least 50x50, JPEG/PNG/GIF/BMP.
AZURE_V32_LIMITS = ImageLimits(max_bytes=4 * 1024 * 1024 - 1, min_side=50, formats=("JPEG", "PNG", "GIF", "BMP"))
_V40_FEATURES = ("objects", "people")


class RemoteDetector(RemoteClient):
    """Base class of the HTTP detectors: an answer is one image's boxes, names and confidences.

    Args:
        url: the endpoint URL.
        class_names: names indexed first, in this order (the rest are appended as answers hold them).
        **kwargs: see :class:`~xai_bridge.adapters.captioners.client.RemoteClient`.

    Attributes:
        batch_size: images one ``detect`` call is given at once (``max_concurrency``:
            a batch of perturbed images goes out in one round trip).

    A subclass's ``_parse`` returns ``[{"box": [x, y, w, h], "name": str, "score": float}, ...]``
    in the pixels of the image sent.
    """

    _cache_namespace = "xai-bridge.detections/1"
    _answer_field = "detections"
    default_key_env = "AZURE_VISION_KEY"
    key_required = True

    def __init__(self, url: str, *, class_names: Sequence[str] | None = None, **kwargs: Any) -> None:
        super().__init__(url, **kwargs)
        self.batch_size = self.max_concurrency
        #: the vocabulary so far: ``class_names[label]`` names a label index (a new list each time it grows)
        self.class_names: Sequence[str] | None = []
        self._index: dict[str, int] = {}
        self._names_lock = threading.Lock()
        for name in class_names or ():
            self._label(str(name))

    def detect(self, images: np.ndarray) -> list[Detections]:
        """One :class:`Detections` per uint8 ``(N, H, W, 3)`` image; boxes in its pixels, labels in :attr:`class_names`.

        Cached answers are reused and identical images sent once (see
        :meth:`~xai_bridge.adapters.captioners.client.RemoteClient._answers`).
        """
        arr = np.asarray(images)
        answers = self._answers(arr)
        return [self.detections_from(a, img.shape[:2]) for a, img in zip(answers, arr, strict=True)]

    def _label(self, name: str) -> int:
        with self._names_lock:
            if name not in self._index:
                names = list(self.class_names or ())
                self._index[name] = len(names)
                self.class_names = [*names, name]
            return self._index[name]

    def detections_from(
        self, answer: dict[str, Any], shape: tuple[int, ...], vocabulary: dict[str, int] | None = None
    ) -> Detections:
        """One answer (as cached) as :class:`Detections` in the pixels of an image of ``shape``.

        Labels index :attr:`class_names` (grown by new names), or ``vocabulary``
        where given (grown instead: a dry run leaves the detector's own untouched).
        """
        objects = answer["objects"]
        sent_h, sent_w = answer["size"]
        sx, sy = shape[1] / sent_w, shape[0] / sent_h
        boxes = np.array([o["box"] for o in objects], np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x0, y0, x1, y1
        boxes *= [sx, sy, sx, sy]
        if vocabulary is None:
            labels = np.array([self._label(o["name"]) for o in objects], np.int64)
        else:
            labels = np.array([vocabulary.setdefault(o["name"], len(vocabulary)) for o in objects], np.int64)
        scores = np.array([o["score"] for o in objects], np.float64)
        return Detections(boxes, labels, scores)

    # -- the client's hooks
    def _received(self, answer: Any, image: EncodedImage) -> Any:
        return {"size": list(image.size), "objects": answer}

    def _validate(self, answer: Any) -> None:
        if not isinstance(answer, dict) or not isinstance(answer.get("objects"), list):
            raise MalformedAnswer(f"the detections are {type(answer).__name__}, not a size and a list of objects")
        size = answer.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
            raise MalformedAnswer(f"the size of the image sent is {size!r:.40}, not [height, width]")
        for obj in answer["objects"]:
            if not isinstance(obj, dict):
                raise MalformedAnswer(f"an object is {type(obj).__name__}, not a box, a name and a confidence")
            box: Any = obj.get("box")
            score: Any = obj.get("score")
            if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
                raise MalformedAnswer(f"an object's box is {box!r:.60}, not [x, y, w, h]")
            if not isinstance(obj.get("name"), str) or not _number(score) or not 0.0 <= float(score) <= 1.0:
                raise MalformedAnswer(f"an object's name and confidence are {obj!r:.80}")

    def _refuse(self, answer: Any) -> str | None:
        long = [o["name"] for o in answer["objects"] if len(o["name"]) > self.max_caption_chars]
        return f"a label of {len(long[0])} characters, over max_caption_chars" if long else None

    def _auth_headers(self, key: str) -> dict[str, str]:
        return {"Ocp-Apim-Subscription-Key": key}

    def _prepare(self, image: EncodedImage, prompt: str | None = None) -> _Call:
        return _Call(self.url, self._request_params(), {"Content-Type": "application/octet-stream"}, data=image.data)


class AzureVision40Detector(RemoteDetector):
    """Azure AI Vision 4.0 Image Analysis ``features=objects`` and/or ``people`` as a detector.

    Each object's label is its highest-confidence tag and its score that
    confidence; a person is labelled ``"person"``.

    Args:
        endpoint: the resource endpoint, e.g. ``https://<name>.cognitiveservices.azure.com``.
        features: ``"objects"``, ``"people"``, or both (``("objects", "people")``).
        key: the subscription key (sent as ``Ocp-Apim-Subscription-Key``; default ``$AZURE_VISION_KEY``).
        api_version: the ``api-version`` query parameter.
        **kwargs: see :class:`RemoteDetector`.

    Example::

        people = AzureVision40Detector(endpoint, features="people")
        [exp] = xb.explain_detections(people, "crowd.jpg", "builtin.DRISE", budget=300)
    """

    limits = AZURE_V40_LIMITS
    default_image_format = "BMP"

    def __init__(
        self,
        endpoint: str,
        *,
        features: str | Sequence[str] = "objects",
        api_version: str = "2024-02-01",
        **kwargs: Any,
    ) -> None:
        wanted = [features] if isinstance(features, str) else list(features)
        wanted = [f.strip().lower() for part in wanted for f in str(part).split(",")]
        if not wanted or any(f not in _V40_FEATURES for f in wanted):
            raise ParameterError(f"features: expected 'objects', 'people' or both, got {features!r}")
        self.features = tuple(f for f in _V40_FEATURES if f in wanted)
        self.api_version = api_version
        super().__init__(_join(endpoint, "computervision/imageanalysis:analyze"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {"api-version": self.api_version, "features": ",".join(self.features)}

    def _parse(self, payload: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if "objects" in self.features:
            for obj in payload["objectsResult"]["values"]:
                tags = sorted(obj["tags"], key=lambda t: -float(t["confidence"]))
                if tags:  # an object without a tag names nothing to explain
                    found.append(_object(obj["boundingBox"], tags[0]["name"], tags[0]["confidence"]))
        if "people" in self.features:
            for person in payload["peopleResult"]["values"]:
                found.append(_object(person["boundingBox"], "person", person["confidence"]))
        return found


class AzureVisionV32Detector(RemoteDetector):
    """Azure Computer Vision v3.2 ``detect`` as a detector: ``objects[].rectangle``, ``object``, ``confidence``.

    The label is ``object`` (its ``parent`` hierarchy, e.g. dog -> mammal ->
    animal, is not used).

    Args:
        endpoint: the resource endpoint.
        key: the subscription key (default ``$AZURE_VISION_KEY``).
        model_version: the ``model-version`` query parameter.
        **kwargs: see :class:`RemoteDetector`.
    """

    limits = AZURE_V32_LIMITS
    default_image_format = "BMP"

    def __init__(self, endpoint: str, *, model_version: str = "latest", **kwargs: Any) -> None:
        self.model_version = model_version
        super().__init__(_join(endpoint, "vision/v3.2/detect"), **kwargs)

    def _request_params(self) -> dict[str, Any]:
        return {"model-version": self.model_version}

    def _parse(self, payload: Any) -> list[dict[str, Any]]:
        return [_object(o["rectangle"], o["object"], o["confidence"]) for o in payload["objects"]]


def _object(box: Any, name: Any, score: Any) -> dict[str, Any]:
    """One object in the cached form; a box that is not four numbers is a malformed answer."""
    values = [box["x"], box["y"], box["w"], box["h"]]
    if not all(_number(v) for v in values) or not isinstance(name, str) or not _number(score):
        raise MalformedAnswer(f"an object {box!r:.60} {name!r:.40} {score!r:.20} is not a box, a name and a number")
    return {"box": [float(v) for v in values], "name": name.strip(), "score": float(score)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
