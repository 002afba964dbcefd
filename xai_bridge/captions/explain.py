"""Explain image captions: which pixels make each word of the caption.

A captioner (a local model, a remote API or any function) plus a scorer
become an ordinary xai-bridge :class:`~xai_bridge.models.Model` --
:class:`~xai_bridge.captions.model.CaptionScoreModel` -- whose outputs are one score per token of the
image's own caption: how likely that token stays once parts of the image are
masked. Any perturbation method (``shap.Partition``, ``lime.Lime``, ``builtin.RISE``,
``builtin.Occlusion``) then explains it unchanged, with one target per token.
This is seed 000 (Azure captions, shap's Partition explainer, distilbart
teacher forcing) in one call::

    from xai_bridge.captions import explain_caption
    from xai_bridge.adapters.captioners.azure import AzureVisionV31Captioner
    from xai_bridge.adapters.captioners.scorers import TeacherForcingScorer

    captioner = AzureVisionV31Captioner(endpoint)          # key from $AZURE_VISION_KEY
    scorer = TeacherForcingScorer.from_pretrained("sshleifer/distilbart-xsum-12-6")
    [exp] = explain_caption(captioner, "cat.jpg", scorer, method="shap.Partition", max_evals=300)
    exp.target_names  # [['a', 'cat', 'sitting', ...]]

A local transformers captioner (:class:`~xai_bridge.adapters.captioners.local.TransformersCaptioner`)
needs no scorer: it scores the caption with its own language head.

Only numpy and Pillow are imported here; torch/transformers/requests load
with the adapters that need them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..explanation import Explanation
from ..images import Layout, load_images
from ..progress import ProgressArg, session, set_prefix
from .model import CaptionScoreModel, fit_max_side

if TYPE_CHECKING:  # pragma: no cover
    from ..adapters.captioners.local import Captioner
    from ..adapters.captioners.scorers import CaptionScorer
    from ..registry import Registry

__all__ = ["BUDGET_PARAMS", "explain_caption"]

#: The parameter that sets the number of model evaluations of each method.
BUDGET_PARAMS: dict[str, str] = {"shap.Partition": "max_evals", "lime.Lime": "num_samples", "builtin.RISE": "n_masks"}


def _image_rows(images: Any, layout: Layout | str | None) -> list[np.ndarray]:
    items = images if isinstance(images, (list, tuple)) else [images]
    rows: list[np.ndarray] = []
    for item in items:
        rows.extend(load_images(item, layout=layout))
    return rows


def explain_caption(
    captioner: Captioner | Callable[[np.ndarray], str],
    images: Any,
    scorer: CaptionScorer | str | None = None,
    method: str = "shap.Partition",
    max_evals: int | None = 300,
    *,
    captions: Sequence[str] | None = None,
    seed: int = 0,
    max_side: int | None = None,
    model_batch_size: int = 64,
    layout: Layout | str | None = None,
    registry: Registry | None = None,
    progress: ProgressArg = "auto",
    **params: Any,
) -> list[Explanation]:
    """Explain each image's caption, one target per caption token.

    For every image: caption it (unless ``captions`` are given), tokenise the
    caption, wrap captioner + scorer in a :class:`CaptionScoreModel` and run
    :func:`xai_bridge.explain` with ``method``. Each image has its own caption,
    so each gets its own :class:`~xai_bridge.Explanation` (``N == 1``).

    Args:
        captioner: a captioner (local, remote, function) or a function ``image -> str``.
        images: anything :func:`~xai_bridge.load_images` reads; a list may mix sizes.
        scorer: a caption scorer; a path/name for
            :meth:`~xai_bridge.adapters.captioners.scorers.TeacherForcingScorer.from_pretrained`;
            or None for a self-scoring (local transformers) captioner.
        method: a perturbation method: ``"shap.Partition"`` (seed 000), ``"lime.Lime"``,
            ``"builtin.RISE"``, ``"builtin.Occlusion"``...
        max_evals: evaluation budget, passed as the method's own budget
            parameter (see :data:`BUDGET_PARAMS`); ignored by methods whose
            cost is fixed by other parameters (occlusion: ``window``/``stride``).
        captions: the captions to explain, one per image (default: the captioner's).
        seed: random seed.
        max_side: shrink images whose longer side exceeds this first (seed 000 used 500).
        model_batch_size: largest batch of masked images the captioner gets
            at once (remote captioners send a batch concurrently); methods
            with their own ``batch_size`` parameter (shap, lime) batch first.
        layout: layout of array inputs when ambiguous.
        registry: method table (default: the built-in one).
        progress: a bar moving per batch of caption scores (True, False or
            ``"auto"``: in terminals and notebooks, once the call has run for 2 s).
        **params: the method's own parameters.

    Returns:
        One Explanation per image: ``targets`` are the token ids,
        ``target_names`` the cleaned token strings, ``scores`` the tokens'
        scores on the unmasked image, and ``params`` also records the caption,
        the captioner and the scorer (never an API key).
    """
    from ..adapters.captioners.local import as_captioner

    captioner = as_captioner(captioner)
    if isinstance(scorer, str):
        from ..adapters.captioners.scorers import TeacherForcingScorer

        scorer = TeacherForcingScorer.from_pretrained(scorer)
    rows = [fit_max_side(img, max_side) for img in _image_rows(images, layout)]
    if captions is not None:
        captions = [str(c) for c in ([captions] if isinstance(captions, str) else captions)]
        if len(captions) != len(rows):
            raise ValueError(f"captions: got {len(captions)} captions for {len(rows)} images; pass one per image")
    method_params = dict(params)
    from xai_bridge.registry import default_registry

    budget = BUDGET_PARAMS.get((registry or default_registry()).spec(method).name)
    if budget is not None and max_evals is not None:
        method_params.setdefault(budget, int(max_evals))
    with session(progress, f"caption {method}"):
        return _explain_each(captioner, scorer, rows, captions, method, method_params, seed, model_batch_size, registry)


def _explain_each(
    captioner: Any,
    scorer: Any,
    rows: list[np.ndarray],
    captions: Sequence[str] | None,
    method: str,
    method_params: dict[str, Any],
    seed: int,
    model_batch_size: int,
    registry: Registry | None,
) -> list[Explanation]:
    """Caption, tokenise and explain each image in turn (the body of :func:`explain_caption`)."""
    from ..adapters.captioners.local import describe
    from ..explain import explain

    results: list[Explanation] = []
    own_tokens = getattr(captioner, "caption_tokens", None)
    for i, image in enumerate(rows):
        set_prefix(f"image {i + 1}/{len(rows)} " if len(rows) > 1 else "")
        batch = image[None]
        if captions is not None:
            reference: Any = captions[i]
        elif scorer is None and callable(own_tokens):
            reference = own_tokens(batch)[0]  # the generated ids themselves
        else:
            from ..adapters.captioners.local import captions_of

            reference = captions_of(captioner, batch)[0]
        model = CaptionScoreModel(
            captioner,
            scorer,
            reference,
            batch_size=model_batch_size,
            reference_image=image if captions is None else None,
        )
        tokens = model.reference
        exp = explain(
            model, batch, method, targets=[list(range(len(tokens)))], seed=seed, registry=registry, **method_params
        )
        provenance = {
            **dict(exp.params),
            "caption": tokens.text,
            "caption_tokens": list(tokens.names),
            "captioner": describe(captioner),
            "scorer": describe(scorer) if scorer is not None else "captioner's own language head",
            "distinct_captions": len(model.captions),
        }
        results.append(replace(exp, targets=np.asarray([tokens.ids], np.int64), params=provenance))
    return results
