"""The metrics :func:`~xai_bridge.evaluation.metrics.evaluate` knows: one frozen dataclass of settings each."""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from xai_bridge.errors import ParameterError

from ._curves import Baseline

if TYPE_CHECKING:  # pragma: no cover
    from xai_bridge.explanation import Explanation


def _enum(kind: type[enum.Enum], value: Any, name: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        valid = [m.value for m in kind]  # type: ignore[attr-defined]
        raise ParameterError(f"{name}: expected one of {valid}, got {value!r}") from None


def _method_evals(exp: Explanation, runs: int, n_targets: int = 1) -> int | None:
    """Evaluations of ``runs`` re-runs of ``exp``'s method on one image and ``n_targets`` targets (None: unknown)."""
    from xai_bridge.progress import expected_evals

    per_run = expected_evals(exp.method, exp.params, 1, n_targets, exp.images.shape[1:3])
    return None if per_run is None else runs * per_run


@dataclass(frozen=True)
class Deletion:
    """Deletion AUC (lower is better): remove the most relevant pixels first.

    Petsiuk et al., RISE (2018), https://arxiv.org/abs/1806.07421. At each
    fraction ``f`` of ``linspace(0, 1, steps + 1)`` the ``round(f * H * W)``
    most relevant pixels are replaced by the baseline; the AUC of the target's
    score over the fraction axis is taken by the trapezoid rule.

    Own implementation: Quantus' ``RegionPerturbation`` perturbs patches and
    reports the AOPC of score drops (not the RISE curve), and its
    ``PixelFlipping`` flips ``features_in_step`` features per step with a
    per-image constant baseline (``"black"`` is the image minimum, not 0),
    has no insertion counterpart and no blurred baseline, and makes one model
    call per step; here a map's whole curve (``steps + 1`` images) goes
    through ``model.predict`` in one batched call, with any model.

    Attributes:
        steps: number of fractions after 0 (``steps + 1`` evaluations per map).
        baseline: black pixels or a blurred copy of the image.
        blur_radius: Gaussian blur radius in pixels (``Baseline.BLUR``); None
            means ``max(H, W) / 20``.
        softmax: apply a softmax to the outputs first (for logits models).
    """

    steps: int = 20
    baseline: Baseline = Baseline.BLACK
    blur_radius: float | None = None
    softmax: bool = False
    name = "deletion"
    insertion = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "baseline", _enum(Baseline, self.baseline, "baseline"))
        if isinstance(self.steps, bool) or int(self.steps) < 1:
            raise ParameterError(f"steps: expected an integer >= 1, got {self.steps!r}")
        object.__setattr__(self, "steps", int(self.steps))

    def evaluations(self, exp: Explanation) -> int | None:
        """Model evaluations on ``exp``: one curve of ``steps + 1`` images per image and target."""
        return exp.n_images * exp.n_targets * (self.steps + 1)


@dataclass(frozen=True)
class Insertion(Deletion):
    """Insertion AUC (higher is better): start from the baseline, insert the most relevant pixels first.

    Petsiuk et al., RISE (2018), https://arxiv.org/abs/1806.07421. Same
    settings and implementation as :class:`Deletion`.
    """

    name = "insertion"
    insertion = True


@dataclass(frozen=True)
class ROAD:
    """ROAD: remove and debias with noisy linear imputation (Rong et al. 2022, https://arxiv.org/abs/2202.00449).

    Routed to pytorch-grad-cam's ``ROADMostRelevantFirstAverage`` /
    ``ROADLeastRelevantFirstAverage``; the value is the change of the target's
    score (after - before) averaged over ``percentiles``. MoRF: lower (more
    negative) is better; LeRF: higher (closer to 0) is better. Maps are
    min-max scaled to [0, 1] first (grad-cam's contract for CAMs). The
    imputation noise uses torch's generator seeded with ``evaluate``'s seed
    (in a forked RNG state, so global state is untouched).

    Attributes:
        order: ``"morf"`` (most relevant first) or ``"lerf"``.
        percentiles: percent of pixels kept at each step (grad-cam's
            convention: MoRF at 80 keeps the 80% least relevant pixels and
            imputes the top 20%; LeRF at 20 keeps the 20% most relevant).
            Each percentile costs two model evaluations (original and imputed)
            and one sparse solve (about 3 s at 224x224).
        softmax: score softmax probabilities (for logits models).
    """

    order: str = "morf"
    percentiles: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
    softmax: bool = False

    def __post_init__(self) -> None:
        if self.order not in ("morf", "lerf"):
            raise ParameterError(f"order: expected 'morf' or 'lerf', got {self.order!r}")
        object.__setattr__(self, "percentiles", tuple(int(p) for p in self.percentiles))

    def evaluations(self, exp: Explanation) -> int | None:
        """Model evaluations on ``exp``: the original and the imputed image per percentile, image and target."""
        return exp.n_images * exp.n_targets * 2 * len(self.percentiles)

    @property
    def name(self) -> str:
        """``road_morf`` or ``road_lerf``."""
        return f"road_{self.order}"


@dataclass(frozen=True)
class PointingGame:
    """Pointing game (Zhang et al. 2018, https://arxiv.org/abs/1608.00507): is the map's maximum inside the object?

    Routed to Quantus ``PointingGame``; needs ``boxes`` or ``masks`` in
    :func:`evaluate`. Value 1.0 for a hit, 0.0 for a miss.
    """

    name = "pointing_game"

    def evaluations(self, exp: Explanation) -> int | None:
        """None of the model: the metric reads the map alone."""
        return 0


@dataclass(frozen=True)
class Sparseness:
    """Gini index of the absolute map (Chalasani et al. 2020, https://arxiv.org/abs/1810.06583); higher is sparser.

    Routed to Quantus ``Sparseness`` (its defaults: absolute, max-normalised).
    """

    name = "sparseness"

    def evaluations(self, exp: Explanation) -> int | None:
        """None of the model: the metric reads the map alone."""
        return 0


@dataclass(frozen=True)
class Complexity:
    """Entropy of the absolute map's fractional contributions (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631).

    Routed to Quantus ``Complexity`` (its defaults); lower is simpler.
    """

    name = "complexity"

    def evaluations(self, exp: Explanation) -> int | None:
        """None of the model: the metric reads the map alone."""
        return 0


@dataclass(frozen=True)
class FaithfulnessCorrelation:
    """Faithfulness correlation (Bhatt et al. 2020, https://arxiv.org/abs/2005.00631); higher is better.

    Routed to Quantus ``FaithfulnessCorrelation``: Pearson correlation between
    the sum of attributions of random pixel subsets and the score drop when
    they are set to the baseline. Quantus draws subsets from numpy's global
    generator; it is seeded with ``evaluate``'s seed and its state restored after.

    Attributes:
        nr_runs: number of random subsets.
        subset_size: pixels per subset.
        baseline: Quantus ``perturb_baseline`` (``"black"`` is the image minimum).
        softmax: score softmax probabilities (for logits models).
    """

    nr_runs: int = 100
    subset_size: int = 224
    baseline: str = "black"
    softmax: bool = False
    name = "faithfulness_corr"

    def evaluations(self, exp: Explanation) -> int | None:
        """Model evaluations on ``exp``: the image and ``nr_runs`` perturbed copies per image and target."""
        return exp.n_images * exp.n_targets * (self.nr_runs + 1)


@dataclass(frozen=True)
class RandomLogit:
    """Random logit test (Sixt et al. 2020, https://arxiv.org/abs/1912.09818); lower similarity is better.

    Routed to Quantus ``RandomLogit`` (SSIM between the map of the target and
    the map of a random other class, drawn with ``evaluate``'s seed). The
    other-class map is computed by :func:`xai_bridge.explain` with the
    explanation's method and params on the same model.

    Attributes:
        num_classes: classes to draw from; None means the model's output count.
    """

    num_classes: int | None = None
    name = "random_logit"

    def evaluations(self, exp: Explanation) -> int | None:
        """Model evaluations on ``exp``: the image's prediction, and the method on one other class per target."""
        per_target = _method_evals(exp, exp.n_images * exp.n_targets)
        return None if per_target is None else per_target + exp.n_images


@dataclass(frozen=True)
class Randomisation:
    """Model-parameter randomisation sanity check (Adebayo et al. 2018, https://arxiv.org/abs/1810.03292).

    A deep copy of the user's torch module (never the module itself) gets the
    named layers re-initialised by their own ``reset_parameters`` under a
    torch generator seeded with ``evaluate``'s seed (forked RNG state, as
    Quantus' MPRT does); the copy is wrapped in a ``TorchModel`` with the same
    preprocessing, and the explanation is re-run with
    ``xai_bridge.explain(copy, exp.images, exp.method, targets=exp.targets,
    seed=exp.seed or 0, **params)``. The value is the Spearman rank
    correlation of the original and the new map: a method that passes the
    sanity check decorrelates (low value).

    Own implementation: Quantus' ``MPRT`` randomises every layer cascading
    from the top in its own order and calls an ``explain_func`` on raw
    tensors; here the layers are the user's choice and the maps are made by
    the very backend (and preprocessing) that made the explanation.

    ``exp.params`` may hold entries a backend added (effective defaults, a
    CAM's resolved layer name); they are passed back as they are, and if the
    backend refuses unknown names they are retried with only the names the
    backend lists as valid. Pass ``params`` to set them yourself.

    Attributes:
        layers: dotted names of submodules to re-initialise (with all their
            children); None means the last submodule that has parameters.
            An empty tuple randomises nothing (the value is then ~1).
        absolute: correlate absolute maps (Adebayo et al. report both): the
            sum of absolute colour-channel values where the method gives
            them, as :func:`cascading_randomisation` compares.
        params: method parameters to use instead of ``exp.params``.
    """

    layers: tuple[str, ...] | None = None
    absolute: bool = False
    params: Mapping[str, Any] | None = None
    name = "randomisation"

    def evaluations(self, exp: Explanation) -> int | None:
        """Model evaluations on ``exp``: the method's own, re-run on every image against the randomised copy."""
        return _method_evals(exp, exp.n_images, exp.n_targets)

    def __post_init__(self) -> None:
        if self.layers is not None:
            layers = (self.layers,) if isinstance(self.layers, str) else tuple(str(x) for x in self.layers)
            object.__setattr__(self, "layers", layers)


Metric = (
    Deletion
    | Insertion
    | ROAD
    | PointingGame
    | Sparseness
    | Complexity
    | FaithfulnessCorrelation
    | RandomLogit
    | Randomisation
)

#: The metric dataclasses (Insertion is a Deletion).
_METRIC_TYPES = (
    Deletion,
    ROAD,
    PointingGame,
    Sparseness,
    Complexity,
    FaithfulnessCorrelation,
    RandomLogit,
    Randomisation,
)

#: Metric names accepted by :func:`evaluate` and the dataclass each builds.
METRICS: dict[str, Callable[[], Any]] = {
    "deletion": Deletion,
    "insertion": Insertion,
    "road_morf": lambda: ROAD("morf"),
    "road_lerf": lambda: ROAD("lerf"),
    "pointing_game": PointingGame,
    "sparseness": Sparseness,
    "complexity": Complexity,
    "faithfulness_corr": FaithfulnessCorrelation,
    "random_logit": RandomLogit,
    "randomisation": Randomisation,
}
