"""Methods by name, imported lazily, with install hints.

Words: a *method* is a registered name (``"captum.IntegratedGradients"``), the
*library* is the package behind it (captum, shap, ...), and the *backend* is
the one call contract every method implements (:mod:`xai_bridge.contract`).

Each name maps to a :class:`MethodSpec`: an import path ``"module:attribute"``
to the backend callable, the libraries it needs, the pip extra that installs
them, and what the method is (family, signed maps, random, its budget
parameter and its own estimate of its model evaluations). The specs live
beside their code, one module per library in ``xai_bridge.adapters.methods``;
those modules import their library only when a method runs. Third-party
packages add methods through the entry-point group ``xai_bridge.methods``,
each entry pointing to a callable that returns a list of :class:`MethodSpec`.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import LibraryNotInstalledError, ParameterError, UnknownMethodError

#: A method's estimate of its model evaluations: ``(params, n_images, n_targets, (height, width)) -> int | None``.
Evaluations = Callable[[Mapping[str, Any], int, int, tuple[int, int]], int | None]

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendSpec",
    "Evaluations",
    "MethodSpec",
    "Registry",
    "available_methods",
    "default_registry",
    "install_hint",
    "passes_per_target",
]

ENTRY_POINT_GROUP = "xai_bridge.methods"
#: The group's name before "backend" left the public names; still read, for one release.
LEGACY_ENTRY_POINT_GROUP = "xai_bridge.backends"


@dataclass(frozen=True)
class MethodSpec:
    """A registered method and what it is.

    Attributes:
        name: public name, ``"library.Method"`` (e.g. ``"captum.IntegratedGradients"``).
        target: ``"module:attribute"`` of the backend callable.
        requires: import names that must be installed (e.g. ``("captum",)``).
        extra: the pip extra installing them (for the hint).
        family: ``"cam"``, ``"gradient"``, ``"perturbation"`` or ``"other"``.
        needs_gradients: whether the model must be differentiable (a torch model).
        options: fixed keyword options passed to the backend in the request.
        description: one line for ``available_methods``.
        signed: whether maps carry a sign (evidence for and against), so plots
            draw them on a diverging colour map centred at zero; unsigned maps
            are never negative.
        random: whether the result depends on the seed.
        aliases: older or alternative names that resolve to this method.
        budget: the method's own parameter that sets its model evaluations per
            image (``"max_evals"``, ``"num_samples"``, ``"n_masks"``...), or None
            where the cost is fixed by other parameters. The family's generic
            ``budget=`` maps onto it.
        budget_default: that parameter's default, read from the method's own
            defaults where it declares the spec (None without a budget).
        evaluations: the method's own estimate of the model evaluations a run
            makes, ``evaluations(params, n_images, n_targets, (height, width))``
            -> int, or None where it cannot tell (the cost depends on the
            model, e.g. one pass per feature channel). Progress bars size
            their ETA from it; read it through :meth:`expected_evals`.
        model_kind: what the method needs of the model: ``"any"`` (its
            outputs, or its gradients with ``needs_gradients``),
            ``"transformer"`` (attention modules: a vision transformer) or
            ``"detector"`` (an object detector's detections, through
            :func:`~xai_bridge.detection.explain_detections`).
        quick: parameters of the cheapest run that still exercises the method
            (e.g. a budget of a dozen evaluations), for smoke checks on a tiny
            model: the contract test and ``benchmarks/gpu_check.py --quick``.
        normalised: whether the library gives only maps built from min-max
            scaled ones (values in [0, 1]), so no raw map exists and magnitudes
            do not compare across images or methods; the library's map is kept.
        own_targets: whether the method defines its own targets (Deep Feature
            Factorization: one map per concept) instead of one map per target
            asked for; detectors and segmenters, whose targets are detections
            and regions, refuse it before running.
    """

    name: str
    target: str
    requires: tuple[str, ...] = ()
    extra: str = ""
    family: str = "other"
    needs_gradients: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    signed: bool = False
    random: bool = False
    aliases: tuple[str, ...] = ()
    budget: str | None = None
    budget_default: int | None = None
    evaluations: Evaluations | None = field(default=None, compare=False)
    quick: Mapping[str, Any] = field(default_factory=dict)
    model_kind: str = "any"
    normalised: bool = False
    own_targets: bool = False

    def expected_evals(self, params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int | None:
        """The model evaluations a run of ``n`` images and ``t`` targets at ``hw`` pixels should make.

        Asks the method's own :attr:`evaluations` hook with the caller's
        ``params`` (defaults filled in by the hook). None where the method
        gives no estimate or the params are not understood (the run itself
        reports bad params; an estimate never raises).
        """
        if self.evaluations is None:
            return None
        try:
            value = self.evaluations(params, int(n), int(t), (int(hw[0]), int(hw[1])))
        except (TypeError, ValueError, KeyError, ZeroDivisionError, ParameterError):
            return None
        return None if value is None else int(value)

    @property
    def install_hint(self) -> str:
        """The pip command that installs what this method needs: its extra, else one derived from :attr:`requires`."""
        return f"pip install 'xai-bridge[{self.extra}]'" if self.extra else install_hint(self.requires)

    def is_installed(self) -> bool:
        """Whether every required library can be imported (without importing it)."""
        return all(importlib.util.find_spec(mod) is not None for mod in self.requires)


#: The xai-bridge extra that installs each library the methods import, by import name.
EXTRA_OF: Mapping[str, str] = MappingProxyType(
    {
        "torch": "torch",
        "torchvision": "torch",
        "captum": "captum",
        "shap": "shap",
        "cv2": "shap",
        "lime": "lime",
        "skimage": "lime",
        "sklearn": "captum",
        "pytorch_grad_cam": "gradcam",
        "torchcam": "torchcam",
        "transformers": "text",
        "open_clip": "clip",
        "timm": "zoo",
        "quantus": "metrics",
        "onnxruntime": "onnx",
        "tensorflow": "keras",
        "keras": "keras",
        "ray": "ray",
        "matplotlib": "viz",
    }
)
#: PyPI names of libraries whose import name differs (for libraries no extra installs).
PIP_NAME: Mapping[str, str] = MappingProxyType(
    {"cv2": "opencv-python-headless", "skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "pillow"}
)


def install_hint(modules: Iterable[str]) -> str:
    """The pip command that installs the libraries imported as ``modules``: their extras, else their PyPI names.

    Never an empty ``pip install``: with nothing to name it says what to check.
    """
    names = [m.partition(".")[0] for m in modules if m]
    extras = sorted({EXTRA_OF[m] for m in names if m in EXTRA_OF})
    parts = [f"'xai-bridge[{','.join(extras)}]'"] if extras else []
    parts += [PIP_NAME.get(m, m) for m in dict.fromkeys(names) if m not in EXTRA_OF]
    return f"pip install {' '.join(parts)}" if parts else "check the method's package installation"


def passes_per_target(params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]) -> int:
    """:attr:`MethodSpec.evaluations` of a method making one forward pass per image and target (CAMs, gradients)."""
    return n * t


#: The name this class had before methods and backends were told apart; kept for third-party catalogs.
BackendSpec = MethodSpec


class Registry:
    """A name -> :class:`MethodSpec` table with lazy loading.

    Args:
        specs: initial specs.
        entry_points: load third-party specs from the ``xai_bridge.methods``
            entry-point group on first lookup.
    """

    def __init__(self, specs: Iterable[MethodSpec] = (), entry_points: bool = True) -> None:
        self._specs: dict[str, MethodSpec] = {}
        self._aliases: dict[str, str] = {}
        self._loaded: dict[str, Callable[..., Any]] = {}
        self._entry_points_pending = entry_points
        for spec in specs:
            self.register(spec)

    def register(self, spec: MethodSpec, clobber: bool = False) -> None:
        """Add ``spec`` (and its aliases); a taken name is refused unless ``clobber=True``."""
        if not isinstance(spec, MethodSpec):
            raise ParameterError(f"spec: expected a MethodSpec, got {type(spec).__name__}")
        if ":" not in spec.target:
            raise ParameterError(f"spec.target: expected 'module:attribute', got {spec.target!r}")
        for name in (spec.name, *spec.aliases):
            if (name in self._specs or name in self._aliases) and not clobber:
                raise ParameterError(f"name: method {name!r} is already registered; pass clobber=True to replace it")
        self._specs[spec.name] = spec
        self._aliases.pop(spec.name, None)
        self._aliases.update({alias: spec.name for alias in spec.aliases})
        self._loaded.pop(spec.name, None)

    @property
    def specs(self) -> Mapping[str, MethodSpec]:
        """Read-only view of every registered spec, by canonical name."""
        self._load_entry_points()
        return MappingProxyType(self._specs)

    def spec(self, name: str) -> MethodSpec:
        """The spec registered as ``name`` or an alias of it; unknown names raise with suggestions.

        A name that differs from a registered one only in case resolves to it
        when the match is unique, so ``"gradcam.gradcam"`` finds
        ``"gradcam.GradCAM"``; the result always carries the canonical name.
        """
        if not isinstance(name, str):
            raise UnknownMethodError(f"method: expected a method name (str), got {type(name).__name__}")
        specs = self.specs
        canonical = name if name in specs else self._aliases.get(name)
        if canonical is None:
            folded: dict[str, set[str]] = {}
            for key in (*specs, *self._aliases):
                folded.setdefault(key.lower(), set()).add(self._aliases.get(key, key))
            matches = folded.get(name.lower(), set())
            canonical = next(iter(matches)) if len(matches) == 1 else None
        if canonical is not None:
            return specs[canonical]
        names = [*specs, *self._aliases]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        close += [k for k in specs if k.lower().endswith("." + name.lower()) and k not in close]
        hint = f" Did you mean {', '.join(repr(c) for c in close[:4])}?" if close else ""
        raise UnknownMethodError(
            f"method: no method named {name!r}.{hint} See xai_bridge.available_methods() for all names."
        )

    def load(self, name: str) -> tuple[MethodSpec, Callable[..., Any]]:
        """Import and return ``(spec, backend callable)`` for ``name``.

        Raises:
            UnknownMethodError: no such name.
            LibraryNotInstalledError: a required library is missing (with hint).
        """
        spec = self.spec(name)
        if spec.name in self._loaded:
            return spec, self._loaded[spec.name]
        missing = [m for m in spec.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise LibraryNotInstalledError(
                f"method: {spec.name!r} needs {', '.join(missing)}, which is not installed; {spec.install_hint}"
            )
        module_name, _, attr = spec.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # a library its module imports: name the one that failed
            hint = install_hint([exc.name]) if exc.name and exc.name not in spec.requires else spec.install_hint
            raise LibraryNotInstalledError(f"method: {spec.name!r} could not be imported ({exc}); {hint}") from exc
        backend = getattr(module, attr)
        self._loaded[spec.name] = backend
        return spec, backend

    def available(self, installed_only: bool = False, family: str | None = None) -> list[str]:
        """Sorted method names, optionally only installed ones or one family."""
        return sorted(
            name
            for name, spec in self.specs.items()
            if (not installed_only or spec.is_installed()) and (family is None or spec.family == family)
        )

    def _load_entry_points(self) -> None:
        if not self._entry_points_pending:
            return
        self._entry_points_pending = False
        from importlib.metadata import entry_points

        for ep in (*entry_points(group=ENTRY_POINT_GROUP), *entry_points(group=LEGACY_ENTRY_POINT_GROUP)):
            provided = ep.load()
            specs = provided() if callable(provided) else provided
            for spec in specs:
                self.register(spec)


_DEFAULT: list[Registry] = []


def default_registry() -> Registry:
    """The registry holding the built-in methods (created on first use)."""
    if not _DEFAULT:
        from .adapters.methods import builtin_specs

        _DEFAULT.append(Registry(builtin_specs()))
    return _DEFAULT[0]


def available_methods(installed_only: bool = False, family: str | None = None) -> list[str]:
    """Names of the registered methods.

    Args:
        installed_only: only methods whose libraries are installed.
        family: only ``"cam"``, ``"gradient"``, ``"perturbation"`` or ``"other"``.
    """
    return default_registry().available(installed_only=installed_only, family=family)
