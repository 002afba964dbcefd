"""The older call shapes of ``explain_caption`` / ``explain_answer``, mapped onto the explain family's shape.

Until this release the scorer came third (``explain_caption(captioner,
images, scorer, method, max_evals)``; ``explain_answer(vlm, images,
question, scorer, method, max_evals)``), the budget was shap's word
``max_evals``, the texts were ``captions=`` / ``answers=`` and the captioner's
batch was ``model_batch_size=``. Each still works for one release with a
:class:`DeprecationWarning` naming the new form, and gives the same results.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ParameterError, UnknownMethodError

if TYPE_CHECKING:  # pragma: no cover
    from ..registry import Registry

__all__ = ["BUDGET_PARAMS", "legacy_answer_args", "legacy_caption_args", "method_keyword"]

#: ``explain_caption``'s default method, the one a ``method=`` keyword may replace
_DEFAULT_METHOD = "shap.Partition"
#: the default budget, which ``max_evals=`` may replace
_DEFAULT_BUDGET = 300


def _warn(old: str, new: str, depth: int = 0) -> None:
    """Warn at the user's call (``depth``: frames between the public function and this one's caller)."""
    message = f"{old} is deprecated; use {new} (the old form goes in the next release)"
    warnings.warn(message, DeprecationWarning, stacklevel=4 + depth)


def _registry(registry: Registry | None) -> Registry:
    from ..registry import default_registry

    return registry or default_registry()


def _is_method(value: Any, registry: Registry) -> bool:
    if not isinstance(value, str):
        return False
    try:
        registry.spec(value)
    except UnknownMethodError:
        return False
    return True


def _misspelt_method(value: Any, registry: Registry) -> bool:
    """A string that reads as a method name (a known library's prefix, or close to a name), not a scorer's path."""
    if not isinstance(value, str) or "/" in value:
        return False
    names = [*registry.specs, *registry.available()]
    libraries = {name.split(".", 1)[0].lower() for name in names if "." in name}
    close = difflib.get_close_matches(value, names, n=1, cutoff=0.8)
    return bool(close) or value.split(".", 1)[0].lower() in libraries


def method_keyword(method: str, params: dict[str, Any], registry: Registry) -> str:
    """``method="<registered name>"`` as a keyword names the method when it was not given positionally (as in ``explain``)."""
    named = params.get("method")
    if method == _DEFAULT_METHOD and _is_method(named, registry):
        del params["method"]
        return str(named)
    return method


def _renamed(params: dict[str, Any], old: str, new: str, value: Any, default: Any, where: str) -> Any:
    """The value of ``new=``, taken from the deprecated ``old=`` when that was passed."""
    if old not in params:
        return value
    if value != default:
        raise ParameterError(f"{old}: passed with {new}=; pass only {new}= (the new name)")
    _warn(f"{where}({old}=...)", f"{where}({new}=...)", depth=2)
    return params.pop(old)


def _old_keywords(
    params: dict[str, Any], texts_word: str, targets: Any, budget: int | None, where: str
) -> tuple[Any, int | None, int | None]:
    """``captions=``/``answers=``, ``max_evals=`` and ``model_batch_size=`` -> targets, budget, the model's batch."""
    targets = _renamed(params, texts_word, "targets", targets, None, where)
    budget = _renamed(params, "max_evals", "budget", budget, _DEFAULT_BUDGET, where)
    model_batch = None
    if "model_batch_size" in params:
        _warn(f"{where}(model_batch_size=...)", f"{where}(batch_size=...)", depth=1)
        model_batch = int(params.pop("model_batch_size"))
    return targets, budget, model_batch


def _take_old_order(
    slots: Sequence[Any], names: Sequence[str], params: dict[str, Any], defaults: dict[str, Any], where: str
) -> dict[str, Any]:
    """The old positional arguments after the third, by name; keywords fill what was not passed positionally."""
    slots = list(slots)
    while slots and slots[-1] is None:  # arguments left at their default
        slots.pop()
    if len(slots) > len(names):
        raise TypeError(
            f"{where}() got {len(slots) + 3} positional arguments in the old order; at most {len(names) + 3}"
        )
    values = dict(defaults)
    for name, value in zip(names, slots, strict=False):
        values[name] = value
    for name in names[len(slots) :]:
        if name in params and name != "max_evals":
            values[name] = params.pop(name)
    return values


def legacy_caption_args(
    method: Any,
    targets: Any,
    legacy: Sequence[Any],
    params: dict[str, Any],
    *,
    scorer: Any,
    budget: int | None,
    batch_size: int | None,
    registry: Registry | None,
) -> tuple[str, Any, Any, int | None, int | None, int | None]:
    """``explain_caption``'s arguments in the family's shape: method, targets, scorer, budget, batch sizes.

    Returns:
        ``(method, targets, scorer, budget, batch_size, model_batch)``: ``batch_size``
        goes to the model and the method, ``model_batch`` (the old
        ``model_batch_size=``) to the model alone.
    """
    reg = _registry(registry)
    if _misspelt_method(method, reg) and not _is_method(method, reg):
        reg.spec(method)  # raises UnknownMethodError with close matches, rather than loading a scorer of that name
    if not _is_method(method, reg):  # the old order: (captioner, images, scorer, method, max_evals)
        _warn(
            "explain_caption(captioner, images, scorer, method, max_evals)",
            "explain_caption(captioner, images, method, scorer=scorer, budget=...)",
        )
        if scorer is not None:
            raise ParameterError("scorer: passed third (the old order) and as scorer=; pass it once, as scorer=")
        old = _take_old_order(
            [targets, *legacy], ("method", "max_evals"), params, {"method": _DEFAULT_METHOD}, "explain_caption"
        )
        scorer, method, targets = method, old["method"], None
        budget = old.get("max_evals", budget)
    elif legacy:
        raise TypeError(f"explain_caption() takes at most 4 positional arguments, got {4 + len(legacy)}")
    else:
        method = method_keyword(method, params, reg)
    targets, budget, model_batch = _old_keywords(params, "captions", targets, budget, "explain_caption")
    return str(method), targets, scorer, budget, batch_size, model_batch


def legacy_answer_args(
    method: Any,
    targets: Any,
    legacy: Sequence[Any],
    params: dict[str, Any],
    *,
    question: Any,
    scorer: Any,
    budget: int | None,
    batch_size: int | None,
    registry: Registry | None,
) -> tuple[str, Any, Any, Any, int | None, int | None, int | None]:
    """``explain_answer``'s arguments in the family's shape (see :func:`legacy_caption_args`), the question added.

    Returns:
        ``(method, targets, question, scorer, budget, batch_size, model_batch)``.
    """
    reg = _registry(registry)
    asked = isinstance(method, str) or (isinstance(method, Sequence) and all(isinstance(q, str) for q in method))
    if asked and not _is_method(method, reg):  # the old order: (vlm, images, question, scorer, method, max_evals)
        _warn(
            "explain_answer(vlm, images, question, scorer, method, max_evals)",
            "explain_answer(vlm, images, method, question=question, scorer=scorer, budget=...)",
        )
        if question is not None:
            raise ParameterError("question: passed third (the old order) and as question=; pass it once, as question=")
        names = ("scorer", "method", "max_evals")
        old = _take_old_order(
            [targets, *legacy], names, params, {"scorer": scorer, "method": _DEFAULT_METHOD}, "explain_answer"
        )
        question, scorer, method, targets = method, old["scorer"], old["method"], None
        budget = old.get("max_evals", budget)
    elif legacy:
        raise TypeError(f"explain_answer() takes at most 4 positional arguments, got {4 + len(legacy)}")
    else:
        method = method_keyword(method, params, reg)
    targets, budget, model_batch = _old_keywords(params, "answers", targets, budget, "explain_answer")
    return str(method), targets, question, scorer, budget, batch_size, model_batch


class _BudgetParams(Mapping[str, str]):
    """Deprecated: ``{method: its budget parameter}``, read from the methods' own specs (``MethodSpec.budget``)."""

    def _table(self) -> dict[str, str]:
        warnings.warn(
            "BUDGET_PARAMS is deprecated; read registry.spec(method).budget (the method's own budget parameter)",
            DeprecationWarning,
            3,
        )
        return {name: spec.budget for name, spec in _registry(None).specs.items() if spec.budget is not None}

    def __getitem__(self, name: str) -> str:
        return self._table()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())

    def __repr__(self) -> str:
        return "BUDGET_PARAMS (deprecated: registry.spec(method).budget)"


#: Deprecated: the parameter that sets each method's number of model evaluations; use ``registry.spec(name).budget``.
BUDGET_PARAMS: Mapping[str, str] = _BudgetParams()
