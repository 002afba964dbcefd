"""Progress bars for long work, moving per batch of model evaluations.

A user call (``explain``, ``explain_many``, ``explain_caption``,
``evaluate``, ``explain_dataset``) opens one :func:`session`; the places that
already count model evaluations (:class:`~xai_bridge.models.CountingModel`
for predict calls, the torch adapters' ``ForwardCounter`` for forward passes
of gradient and CAM methods) call :func:`tick`. The session lives in a
context variable, so nested calls (``explain_caption`` runs ``explain``)
move the outer bar instead of opening their own, concurrent calls in other
threads never share a bar, and nothing is global.

``progress=`` takes ``True`` (always show), ``False`` (never) or ``"auto"``
(the default: show in terminals and notebooks, and only once a call has run
for :data:`AUTO_DELAY` seconds, so quick calls print nothing). Bars are
``tqdm.auto``: a widget in Jupyter, a text bar on stderr elsewhere.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from .errors import LibraryNotInstalledError, ParameterError, UnknownMethodError
from .registry import MethodSpec, default_registry

__all__ = ["AUTO_DELAY", "Progress", "ProgressArg", "expected_evals", "session", "set_prefix", "stage", "tick", "write"]

#: ``progress=`` values: True, False, or "auto".
ProgressArg = bool | str | None
#: Seconds an "auto" bar waits before it appears.
AUTO_DELAY = 2.0

#: Seconds between redraws of a bar (tests set 0 to see every tick).
MIN_INTERVAL = 0.25


class Progress:
    """One bar for one user call (a thin layer over a ``tqdm`` bar, or silent)."""

    def __init__(self, bar: Any = None, unit: str = "eval") -> None:
        self.bar = bar
        self.unit = unit
        self.evals = 0
        self._label = ""
        self._shown_at = 0.0
        self.prefix = ""

    def tick(self, n: int) -> None:
        """``n`` model evaluations are done."""
        if self.bar is None or n <= 0:
            return
        self.evals += int(n)
        if self.unit == "eval":
            if self.bar.total is not None and self.bar.n + n > self.bar.total:
                self.bar.total = self.bar.n + n  # the guess was low: keep the bar's format, finish at 100%
            self.bar.update(int(n))
        elif time.monotonic() - self._shown_at > 0.5:  # a bar counting images shows evaluations beside it
            self._shown_at = time.monotonic()
            self.bar.set_postfix_str(f"{self._label} {self.evals} evals".strip())

    def stage(self, label: str, total: int | None) -> None:
        """A new piece of work starts (e.g. the next method): its name and expected evaluations."""
        if self.bar is None:
            return
        label = f"{self.prefix}{label}"
        self._label = label
        if self.unit == "eval":
            if self.bar.n:
                self.bar.refresh()  # draw the last stage's final count before the bar starts again
            self.bar.set_description(label, refresh=False)
            self.bar.bar_format = _UNKNOWN_TOTAL if total is None else None
            self.bar.reset(total=total)  # redraws, with the new label
        else:
            self.bar.set_postfix_str(label)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` units of a bar that counts something other than evaluations (e.g. images)."""
        if self.bar is not None and self.unit != "eval":
            self.bar.update(n)


#: The bar's format when the total is unknown: a count and a rate (tqdm's own shows "label: : 9eval").
_UNKNOWN_TOTAL = "{desc}{n_fmt} evals [{elapsed}, {rate_fmt}{postfix}]"
_SILENT = Progress()
_ACTIVE: ContextVar[Progress | None] = ContextVar("xai_bridge_progress", default=None)


def _interactive() -> bool:
    """Whether a person is probably watching: a terminal on stderr, or a Jupyter kernel."""
    if "ipykernel" in sys.modules:
        return True
    stream = sys.stderr
    return bool(stream is not None and hasattr(stream, "isatty") and stream.isatty())


def _check(progress: ProgressArg) -> bool | str:
    if progress is None or isinstance(progress, bool):
        return bool(progress)
    if progress == "auto":
        return "auto"
    raise ParameterError(f"progress: expected True, False or 'auto', got {progress!r}")


@contextmanager
def session(progress: ProgressArg, desc: str, total: int | None = None, unit: str = "eval") -> Iterator[Progress]:
    """Open the bar of one user call, or join the bar of the call this one runs inside.

    Args:
        progress: True, False or ``"auto"`` (see the module docstring).
        desc: the bar's first label.
        total: expected units (None: unknown; the bar then shows count and rate).
        unit: ``"eval"`` (model evaluations) or another unit the caller
            advances itself (e.g. ``"img"``); ticks then show as a count beside it.
    """
    mode = _check(progress)
    outer = _ACTIVE.get()
    if outer is not None:  # a nested call: the outer call's bar (or its silence) holds
        yield outer
        return
    if not mode or (mode == "auto" and not _interactive()):
        token = _ACTIVE.set(_SILENT)
        try:
            yield _SILENT
        finally:
            _ACTIVE.reset(token)
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if mode is True:
            raise LibraryNotInstalledError("progress: needs tqdm: pip install tqdm (or progress=False)") from None
        token = _ACTIVE.set(_SILENT)
        try:
            yield _SILENT
        finally:
            _ACTIVE.reset(token)
        return
    bar = tqdm(
        total=total,
        desc=f"{desc}: " if total is None and unit == "eval" else desc,  # the custom format has no ": " of its own
        bar_format=_UNKNOWN_TOTAL if total is None and unit == "eval" else None,
        unit=unit,
        delay=AUTO_DELAY if mode == "auto" else 0.0,
        mininterval=MIN_INTERVAL,
        miniters=1 if MIN_INTERVAL == 0 else None,
        smoothing=0.1,
        dynamic_ncols=True,
        leave=True,
    )
    state = Progress(bar, unit)
    token = _ACTIVE.set(state)
    try:
        yield state
    finally:
        _ACTIVE.reset(token)
        bar.close()


def tick(n: int) -> None:
    """``n`` model evaluations are done (called where evaluations are counted; free without a bar)."""
    state = _ACTIVE.get()
    if state is not None and state.bar is not None:
        state.tick(n)


def stage(label: str, total: int | None = None) -> None:
    """The current call starts a new piece of work (shown as the bar's label, with its expected total)."""
    state = _ACTIVE.get()
    if state is not None:
        state.stage(label, total)


def set_prefix(text: str) -> None:
    """Put ``text`` before every label of the current bar (e.g. ``"image 2/5 "`` while an outer call loops)."""
    state = _ACTIVE.get()
    if state is not None:
        state.prefix = text


def write(message: str) -> None:
    """Print a line above the bar (``tqdm.write``), or plainly when there is no bar."""
    state = _ACTIVE.get()
    if state is not None and state.bar is not None:
        state.bar.write(message)
    else:
        print(message)


def expected_evals(
    method: str | MethodSpec, params: Mapping[str, Any], n: int, t: int, hw: tuple[int, int]
) -> int | None:
    """A best guess of the model evaluations ``method`` will spend, for the bar's ETA (None: no guess).

    The method answers for itself (:meth:`MethodSpec.expected_evals`); a name
    is looked up in the default registry. Only a guess: the bar still moves by
    the evaluations actually made, and a wrong guess only makes the ETA wrong.
    """
    if isinstance(method, str):
        try:
            method = default_registry().spec(method)
        except UnknownMethodError:
            return None
    return method.expected_evals(params, n, t, hw)
