"""The dry run of :func:`~xai_bridge.detection.explain_detections` on a paid detector: the requests it would send.

:func:`~xai_bridge.captions.estimate_calls` hands a detector here. The real
call is run on a stand-in detector that sends nothing and records every image
it is asked about: the unperturbed image (the call that finds the detections)
and every perturbed one. Where the client's cache holds an image's answer,
the stand-in answers with it, so the dry run follows the real run's path; an
unperturbed image not cached yet gets stand-in detections shaped by
``targets`` (one full-image box per detection asked for: ``xb.top_k(k)`` k
of them, a class name or index, or the ``xb.Box`` given). D-RISE, RISE,
occlusion and LIME draw their perturbed images without looking at the
answers, so their count is exact; shap.Partition's depends on the number of
detections explained, exact once the first answer is cached.

Only numpy is imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..detection import Detections, explain_detections
from ..images import Layout, load_images
from ..models import image_key as _digest
from ..targets import TopK

__all__ = ["detection_dry_run"]


class _DryDetector:
    """A detector recording what it is asked about; it answers from the cache, else with stand-ins."""

    def __init__(self, real: Any, seen: dict[str, np.ndarray], first: dict[str, Any]) -> None:
        self.real = real
        self.seen = seen
        self.first = first  # unperturbed image key -> its target spec
        self.names: dict[str, int] = {n: i for i, n in enumerate(getattr(real, "class_names", None) or [])}
        self.class_names: Sequence[str] | None = list(self.names)
        self.batch_size = 64
        self.evaluations = 0

    def detect(self, images: np.ndarray) -> list[Detections]:
        out = []
        for img in np.asarray(images):
            self.evaluations += 1
            key = _digest(img)
            self.seen.setdefault(key, img)
            out.append(self._answer(key, img))
        self.class_names = list(self.names)
        return out

    def _label(self, name: str) -> int:
        return self.names.setdefault(name, len(self.names))

    def _answer(self, key: str, img: np.ndarray) -> Detections:
        lookup: Callable[..., Any] | None = getattr(self.real, "cached", None)
        answer = lookup(img) if callable(lookup) else None
        convert = getattr(self.real, "detections_from", None)
        if answer is not None and callable(convert):
            found: Detections = convert(answer, img.shape[:2], vocabulary=self.names)
            return found
        if key in self.first:
            return self._stand_in(self.first[key], img.shape[:2])
        return Detections(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0))

    def _stand_in(self, spec: Any, size: tuple[int, ...]) -> Detections:
        """Detections that ``spec`` selects: k for ``top_k(k)``, else one, labelled and placed as it asks."""
        h, w = size[:2]
        count, label, box = 1, 0, [0.0, 0.0, float(w), float(h)]
        if isinstance(spec, TopK):
            count = int(spec.k)
        elif isinstance(spec, str) and spec not in ("all", "top1"):
            label = self._label(spec)
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
            label = int(spec)
        elif spec is not None and len(tuple(spec)) == 4:
            box = [float(v) for v in spec]  # an xb.Box or a 4-tuple
        return Detections(np.tile(np.array(box, np.float64), (count, 1)), np.full(count, label), np.ones(count))


def detection_dry_run(
    detector: Any,
    images: Any,
    method: str,
    targets: Any,
    *,
    seed: int,
    layout: Layout | str | None,
    registry: Any,
    params: dict[str, Any],
) -> tuple[dict[str, np.ndarray], int]:
    """Every distinct image ``explain_detections(detector, images, method, targets, ...)`` would send, and the evaluations.

    Returns:
        ``({image key: image}, evaluations)``.
    """
    from ..detection.targets import per_image

    rows = load_images(images, layout=layout)
    specs = per_image(targets, len(rows))
    first = {_digest(img): spec for img, spec in zip(rows, specs, strict=True)}
    seen: dict[str, np.ndarray] = {}
    dry = _DryDetector(detector, seen, first)
    explain_detections(dry, rows, method, targets, seed=seed, registry=registry, progress=False, **params)
    return seen, dry.evaluations
