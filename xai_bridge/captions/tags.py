"""The cost of explaining a paid model, found by a dry run; taggers as classifiers.

:class:`TagModel` (a model adapter, in :mod:`xai_bridge.adapters.models.tags`;
re-exported here) turns a tagger -- ``tag(images) -> [{name: confidence}]``,
e.g. :class:`~xai_bridge.adapters.captioners.azure.AzureVision40Tagger`, or a
function ``image -> {name: confidence}`` -- into an ordinary
:class:`~xai_bridge.models.Model`: its outputs are the confidences of the tags
found on the unmasked image (a tag missing from a masked image's answer scores
0), its class names the tag names. ``xb.explain`` wraps a tagger in one, so
"why does the API say *dog*?" is::

    tagger = AzureVision40Tagger(endpoint)                      # key from $AZURE_VISION_KEY
    print(xb.estimate_calls(tagger, "dog.jpg", "shap.Partition", targets="dog", max_evals=200))
    exp = xb.explain(tagger, "dog.jpg", "shap.Partition", targets="dog", max_evals=200)

:func:`estimate_calls` is the dry run: it runs the method on a stand-in that
answers nothing and counts the distinct images the real run would send and
that the client's cache does not hold yet -- the paid calls.

Only numpy is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..images import Layout, load_images
from ..models import OutputKind, as_model
from ..models import image_key as _digest
from ..targets import TargetSpec, TopK

__all__ = ["CallEstimate", "estimate_calls"]


# ------------------------------------------------------------------ cost
@dataclass(frozen=True)
class CallEstimate:
    """What a run would pay, found by a dry run.

    Attributes:
        calls: paid requests: distinct images the run sends that the cache does not hold.
        distinct_images: distinct images the run evaluates (the unmasked one included).
        cached: of those, already answered in the client's cache (free).
        evaluations: model evaluations the method makes (repeats included).
        method: the method's registered name.
    """

    calls: int
    distinct_images: int
    cached: int
    evaluations: int
    method: str

    def __int__(self) -> int:
        return self.calls

    def __str__(self) -> str:
        return (
            f"{self.method}: {self.evaluations} evaluations of {self.distinct_images} distinct images, "
            f"{self.cached} cached -> {self.calls} paid calls"
        )


class _DryRun:
    """A stand-in model recording every image a method evaluates; it answers what is known, else zeros.

    Known answers (the client's cache, the model's memo) make the dry run
    take the path the real run takes where the path depends on the answers
    (shap.Partition), so a cached re-run is estimated free, as it is.
    """

    output_kind = OutputKind.SCORES

    def __init__(
        self, class_names: list[str], seen: dict[str, np.ndarray], known: Callable[[str, np.ndarray], Any]
    ) -> None:
        self.class_names = class_names
        self.output_count = len(class_names)
        self.batch_size = 64
        self.seen = seen
        self.known = known
        self.evaluations = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        self.evaluations += len(images)
        out = np.zeros((len(images), len(self.class_names)), np.float32)
        for i, img in enumerate(images):
            key = _digest(img)
            self.seen.setdefault(key, img)
            answer = self.known(key, img)
            if isinstance(answer, Mapping):
                out[i] = [float(answer.get(n, 0.0)) for n in self.class_names]
        return out


def _stand_in_names(targets: TargetSpec, fixed: Sequence[str] | None) -> list[str]:
    """Class names for the stand-in: the model's own when known, else enough for ``targets``."""
    if fixed is not None:
        return list(fixed)
    names: list[str] = []
    count = 1
    stack: list[Any] = [targets]
    while stack:
        item = stack.pop()
        if isinstance(item, TopK):
            count = max(count, int(item.k))
        elif isinstance(item, str) and item != "top1":
            names.append(item)
        elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            count = max(count, int(item) + 1)
        elif isinstance(item, (list, tuple, np.ndarray)):
            stack.extend(list(item))
    names = list(dict.fromkeys(names))
    return names + [f"output {i}" for i in range(len(names), max(count, len(names)))]


def estimate_calls(
    model: Any,
    images: Any,
    method: str,
    /,
    targets: TargetSpec = "top1",
    *,
    seed: int = 0,
    layout: Layout | str | None = None,
    registry: Any = None,
    verbose: bool = True,
    **params: Any,
) -> CallEstimate:
    """Dry run: how many paid calls ``xb.explain(model, images, method, targets, seed=seed, **params)`` makes.

    The method runs on a stand-in that sends nothing and answers zeros; every
    image it evaluates is recorded. The paid calls are the distinct images --
    the unmasked image first (the call that finds the tags) and every masked
    image, each sent once however often it is evaluated -- that the client's
    cache does not hold. For occlusion, RISE and LIME the images do not depend
    on the answers, so the estimate is exact; for shap.Partition which
    images are evaluated depends on the answers but their number does not,
    so it is exact whenever no two of them are identical (masking an area
    that already has the mask value makes a repeat, which the real run pays
    once).

    A detector (anything with ``detect(images)``, e.g.
    :class:`~xai_bridge.adapters.captioners.detect.AzureVision40Detector`) is
    estimated for :func:`xai_bridge.explain_detections` with the same
    arguments (``targets`` as it reads them, default: every detection above
    ``score_threshold``); see :mod:`xai_bridge.captions._detection_cost`.

    Args:
        model: a tagger, a :class:`TagModel`, a detector, or any model with a
            remote client (``cached(image)``; anything else counts every distinct image).
        images: as in :func:`xai_bridge.explain`.
        method: the method.
        targets: as in :func:`xai_bridge.explain`.
        seed: as in :func:`xai_bridge.explain` (the images depend on it).
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        verbose: print the estimate.
        **params: the method's parameters (the budget among them).

    Returns:
        The :class:`CallEstimate` (``int(estimate)`` is the number of paid calls).
    """
    from ..routing import explain

    if callable(getattr(model, "detect", None)):
        return _estimate_detections(model, images, method, targets, seed, layout, registry, verbose, params)
    client, known, fixed = _known_answers(model)
    batch = load_images(images, layout=layout)
    first = [known(_digest(img), img) for img in batch]
    if fixed is None and first and all(isinstance(a, Mapping) for a in first):
        tag_view: Any = as_model(client)  # a TagModel: as_model's table wraps a tagger in one
        fixed = tag_view.vocabulary(first)  # the real run's tags
    seen: dict[str, np.ndarray] = {}
    for img in batch:  # the first, unmasked call
        seen.setdefault(_digest(img), img)
    stand_in = _DryRun(_stand_in_names(targets, fixed), seen, known)
    explain(stand_in, batch, method, targets, seed=seed, registry=registry, **params)
    paid = sum(1 for key, img in seen.items() if known(key, img) is None)
    cached = len(seen) - paid
    estimate = CallEstimate(
        calls=paid,
        distinct_images=len(seen),
        cached=cached,
        evaluations=stand_in.evaluations,
        method=_canonical(method, registry),
    )
    return _shown(estimate, verbose)


def _known_answers(model: Any) -> tuple[Any, Callable[[str, np.ndarray], Any], list[str] | None]:
    """The client a run would ask, what it answers free, and the class names when they are fixed already.

    Free answers are a :class:`TagModel`'s memo and the client's cache
    (``cached(image)``); ``known(key, image)`` returns one, or None.
    """
    tag_model = model if hasattr(model, "tagger") and hasattr(model, "answers") else None  # a TagModel
    client = tag_model.tagger if tag_model is not None else model
    memo = tag_model.answers if tag_model is not None else {}
    lookup = getattr(client, "cached", None)

    def known(key: str, image: np.ndarray) -> Any:
        if key in memo:
            return memo[key]
        return lookup(image) if callable(lookup) else None

    fixed = tag_model.class_names if tag_model is not None else getattr(model, "class_names", None)
    return client, known, fixed


def _shown(estimate: CallEstimate, verbose: bool) -> CallEstimate:
    """The estimate, printed first when ``verbose``."""
    if verbose:
        print(f"estimate_calls: {estimate}")
    return estimate


def _estimate_detections(
    detector: Any,
    images: Any,
    method: str,
    targets: Any,
    seed: int,
    layout: Layout | str | None,
    registry: Any,
    verbose: bool,
    params: dict[str, Any],
) -> CallEstimate:
    """:func:`estimate_calls` for a detector: the dry run of ``explain_detections``."""
    from ._detection_cost import detection_dry_run

    targets = None if isinstance(targets, str) and targets == "top1" else targets  # explain_detections' default
    seen, evaluations = detection_dry_run(
        detector, images, method, targets, seed=seed, layout=layout, registry=registry, params=params
    )
    lookup = getattr(detector, "cached", None)
    paid = sum(1 for img in seen.values() if not callable(lookup) or lookup(img) is None)
    return _shown(CallEstimate(paid, len(seen), len(seen) - paid, evaluations, _canonical(method, registry)), verbose)


def _canonical(method: str, registry: Any) -> str:
    from ..registry import default_registry

    return str((registry or default_registry()).spec(method).name)
