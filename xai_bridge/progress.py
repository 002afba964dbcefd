"""Progress of long work, moving per batch of model evaluations.

A user call (``explain``, ``explain_many``, ``explain_caption``,
``evaluate``, ``explain_dataset``) opens one :func:`session`; the places that
already count model evaluations (:class:`~xai_bridge.models.CountingModel`
for predict calls, the torch adapters' ``ForwardCounter`` for forward passes
of gradient and CAM methods) call :func:`tick`. The session lives in a
context variable, so nested calls (``explain_caption`` runs ``explain``)
move the outer bar instead of opening their own, concurrent calls in other
threads never share a bar, and nothing is global.

``progress=`` takes ``True`` (always show), ``False`` (never) or ``"auto"``
(the default). Where it shows:

- in a terminal, a text bar on stderr (``"auto"``: once a call has run for
  :data:`AUTO_DELAY` seconds, so quick calls print nothing);
- in a Jupyter notebook, an ipywidgets bar (plain text without ipywidgets),
  emptied when the call ends;
- outside a terminal (scripts, CI logs, services: stderr is not a tty), with
  ``"auto"``, one line on the ``xai_bridge.progress`` logger at INFO every
  :data:`LOG_INTERVAL` seconds (done/total, rate and ETA), so a run longer
  than that is never silent. While logging is not configured the lines go to
  stderr; ``logging.getLogger("xai_bridge.progress").setLevel(logging.WARNING)``
  silences them.

The ETA is measured over the recent batches (:class:`~xai_bridge._progress_rate.Throughput`),
never from the first one alone. With ``sys.stderr`` None or file descriptor
2 closed, ``progress=True`` runs silently.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from ._progress_bars import in_notebook, make_bar, stderr_usable
from ._progress_rate import Throughput, format_seconds
from .errors import LibraryNotInstalledError, ParameterError, UnknownMethodError
from .registry import MethodSpec, default_registry

__all__ = [
    "AUTO_DELAY",
    "LOG_INTERVAL",
    "Progress",
    "ProgressArg",
    "Stage",
    "add_to_total",
    "expected_evals",
    "holding",
    "note",
    "revise_total",
    "session",
    "set_prefix",
    "stage",
    "tick",
    "write",
]

#: ``progress=`` values: True, False, or "auto".
ProgressArg = bool | str | None
#: Seconds an "auto" bar waits before it appears.
AUTO_DELAY = 2.0
#: Seconds between redraws of a bar (tests set 0 to see every tick).
MIN_INTERVAL = 0.25
#: Seconds between two log lines outside a terminal.
LOG_INTERVAL = 10.0

#: The clock of every measurement here (tests replace it; never ``time.time``, which jumps).
clock: Callable[[], float] = time.monotonic

logger = logging.getLogger("xai_bridge.progress")


@dataclass
class Stage:
    """One piece of work of a call (e.g. one method): its label, expected total and the units done."""

    label: str
    total: int | None
    done: int = 0


class Progress:
    """The progress of one user call: a bar, log lines, or silence, and what was counted.

    ``stages`` records every stage with its expected total and the units
    actually done, so a caller (and the tests) can compare the two.
    """

    def __init__(self, bar: Any = None, unit: str = "eval", log: bool = False, desc: str = "") -> None:
        self.bar = bar
        self.unit = unit
        self.log = log
        self.desc = desc
        self.evals = 0
        self.prefix = ""
        self.stages: list[Stage] = []
        self.rate = Throughput()
        self._label = ""
        self._shown_at = 0.0
        self._started = clock()
        self._logged_at = self._started
        self._lines = 0
        self._total: int | None = None
        self._done = 0
        self.held = 0

    @property
    def active(self) -> bool:
        """Whether anything is shown (a bar or log lines)."""
        return self.bar is not None or self.log

    def tick(self, n: int) -> None:
        """``n`` model evaluations are done."""
        if not self.active or n <= 0:
            return
        self.evals += int(n)
        if self.stages:
            self.stages[-1].done += int(n)
        if self.unit == "eval":
            self._count(int(n))
            if self.bar is not None:
                if self.bar.total is not None and self.bar.n + n > self.bar.total:
                    self.bar.total = self.bar.n + n  # the guess was low: keep the bar's format, finish at 100%
                self.bar.update(int(n))
        elif self.bar is not None and clock() - self._shown_at > 0.5:  # a bar counting images shows evals beside it
            self._shown_at = clock()
            self.bar.set_postfix_str(f"{self._label} {self.evals} evals".strip())
        self._maybe_log()

    def _count(self, n: int) -> None:
        self._done += n
        if self._total is not None and self._done > self._total:
            self._total = self._done
        self.rate.add(self._done, clock())

    def stage(self, label: str, total: int | None) -> None:
        """A new piece of work starts (e.g. the next method): its name and expected evaluations."""
        if not self.active or self.held:
            return
        label = f"{self.prefix}{label}"
        self._label = label
        self._finish_stage()
        self.stages.append(Stage(label, total))
        if self.unit != "eval":
            if self.bar is not None:
                self.bar.set_postfix_str(label)
            return
        self._total, self._done = total, 0
        self.rate.reset()
        if self.bar is not None:
            self.bar.set_description(label, refresh=False)
            self.bar.bar_format = _UNKNOWN_TOTAL if total is None else None
            self.bar.reset(total=total)  # redraws, with the new label

    def revise(self, total: int | None) -> None:
        """The current stage's expected total, known better now (e.g. once the superpixels are counted)."""
        if not self.active or not self.stages or self.held:
            return
        self.stages[-1].total = total
        if self.unit == "eval":
            self._total = total
            if self.bar is not None:
                self.bar.total = total if total is None else max(total, self.bar.n)
                self.bar.bar_format = _UNKNOWN_TOTAL if total is None else None

    def _finish_stage(self) -> None:
        """A stage ended as planned: the bar shows what was done as its total (a high guess never ends at 89%)."""
        if self.bar is not None and self.unit == "eval" and self.bar.total is not None and self.bar.n:
            self.bar.total = self.bar.n
            self.bar.refresh()

    def advance(self, n: int = 1) -> None:
        """Count ``n`` units of a bar that counts something other than evaluations (e.g. images)."""
        if self.unit == "eval" or not self.active:
            return
        self._count(n)
        if self.bar is not None:
            self.bar.update(n)
        self._maybe_log()

    def _maybe_log(self) -> None:
        """Log one line when :data:`LOG_INTERVAL` seconds passed since the last (or since the start)."""
        now = clock()
        if self.log and now - self._logged_at >= LOG_INTERVAL:
            self._logged_at = now
            self._lines += 1
            _emit(self.line(now))

    def line(self, now: float | None = None) -> str:
        """The log line of the current state: done/total, rate and ETA, e.g. ``explain RISE: 40/400 evals (10%)``."""
        now = clock() if now is None else now
        stage = "" if self.desc.endswith(self._label) else self._label  # "detections RISE", not "... RISE RISE"
        label = " ".join(part for part in (self.desc, stage) if part)
        if self._total is None:
            text = f"{label}: {self._done} {self.unit}s"
        else:
            text = f"{label}: {self._done}/{self._total} {self.unit}s ({100 * self._done / max(self._total, 1):.0f}%)"
        rate = self.rate.per_second()
        if rate is not None:
            text += f", {rate:.3g} {self.unit}s/s"
        eta = self.rate.eta(self._done, self._total)
        if eta is not None:
            text += f", ETA {format_seconds(eta)}"
        if self.unit != "eval":
            text += f", {self.evals} evals"
        return f"{text}, {format_seconds(now - self._started)} elapsed"

    def close(self, failed: bool = False) -> None:
        """End the call: close the bar, and end its log lines with the totals when any was written."""
        if not failed:
            self._finish_stage()
        if self.bar is not None:
            self.bar.close()
        if self.log and self._lines:
            elapsed = format_seconds(clock() - self._started)
            _emit(f"{self.desc or 'progress'}: {'failed' if failed else 'done'}, {self.evals} evals in {elapsed}")


#: The bar's format when the total is unknown: a count and a rate (tqdm's own shows "label: : 9eval").
_UNKNOWN_TOTAL = "{desc}{n_fmt} evals [{elapsed}, {rate_fmt}{postfix}]"
_SILENT = Progress()
_ACTIVE: ContextVar[Progress | None] = ContextVar("xai_bridge_progress", default=None)


def _emit(message: str) -> None:
    """One progress line: to the logger's handlers, or to stderr while logging is not configured."""
    if logger.hasHandlers():
        logger.info(message)
    elif logger.level in (logging.NOTSET, logging.DEBUG, logging.INFO) and not logger.disabled and stderr_usable():
        print(f"{logger.name}: {message}", file=sys.stderr, flush=True)


def _interactive() -> bool:
    """Whether a person is probably watching: a terminal on stderr, or a Jupyter kernel."""
    if in_notebook():
        return True
    stream = sys.stderr
    return bool(stderr_usable() and hasattr(stream, "isatty") and stream.isatty())


def _check(progress: ProgressArg) -> bool | str:
    if progress is None or isinstance(progress, bool):
        return bool(progress)
    if progress == "auto":
        return "auto"
    raise ParameterError(f"progress: expected True, False or 'auto', got {progress!r}")


def _open(mode: bool | str, desc: str, total: int | None, unit: str) -> Progress:
    """The Progress of a new call: a bar where someone watches, log lines where nobody does, or silence."""
    if not mode:
        return _SILENT
    notebook = in_notebook()
    if not notebook and not stderr_usable():
        return Progress(unit=unit, log=logger.hasHandlers(), desc=desc)  # nowhere to draw: configured logs only
    if mode == "auto" and not _interactive():
        return Progress(unit=unit, log=True, desc=desc)
    try:
        import tqdm  # noqa: F401
    except ImportError:
        if mode is True:
            raise LibraryNotInstalledError("progress: needs tqdm: pip install tqdm (or progress=False)") from None
        return Progress(unit=unit, log=True, desc=desc)
    state = Progress(unit=unit, desc=desc)
    unknown = total is None and unit == "eval"
    state.bar = make_bar(
        "notebook" if notebook else "terminal",
        state.rate.per_second,
        total=total,
        desc=f"{desc}: " if unknown else desc,  # the custom format has no ": " of its own
        bar_format=_UNKNOWN_TOTAL if unknown else None,
        unit=unit,
        delay=AUTO_DELAY if mode == "auto" else 0.0,
        mininterval=MIN_INTERVAL,
        miniters=1 if MIN_INTERVAL == 0 else None,
        leave=not notebook,  # a notebook's bar is emptied when the call ends
    )
    state._total = total
    return state


@contextmanager
def session(progress: ProgressArg, desc: str, total: int | None = None, unit: str = "eval") -> Iterator[Progress]:
    """Open the progress of one user call, or join the progress of the call this one runs inside.

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
    state = _open(mode, desc, total, unit)
    token = _ACTIVE.set(state)
    failed = True
    try:
        yield state
        failed = False
    finally:
        _ACTIVE.reset(token)
        if state is not _SILENT:
            state.close(failed)


def tick(n: int) -> None:
    """``n`` model evaluations are done (called where evaluations are counted; free without a bar)."""
    state = _ACTIVE.get()
    if state is not None and state.active:
        state.tick(n)


def stage(label: str, total: int | None = None) -> None:
    """The current call starts a new piece of work (shown as the bar's label, with its expected total)."""
    state = _ACTIVE.get()
    if state is not None:
        state.stage(label, total)


@contextmanager
def holding() -> Iterator[None]:
    """Inside the block, nested calls count into the current stage instead of starting their own.

    ``evaluate``'s random-logit test re-runs ``explain``: its evaluations belong
    to the metric's stage and total, not to a new bar per re-run.
    """
    state = _ACTIVE.get()
    if state is None or state is _SILENT:
        yield
        return
    state.held += 1
    try:
        yield
    finally:
        state.held -= 1


def note(message: str) -> None:
    """A line for whoever watches: above the bar, or a log line; nothing when the call is silent."""
    state = _ACTIVE.get()
    if state is None or not state.active:
        return
    if state.bar is not None:  # a notebook's stderr is a red cell: there the line goes to stdout
        state.bar.write(message, file=None if in_notebook() else sys.stderr)
    else:
        _emit(message)


def revise_total(total: int | None) -> None:
    """The running stage's evaluations are now known exactly (a method calls it once it has counted them)."""
    state = _ACTIVE.get()
    if state is not None:
        state.revise(total)


def add_to_total(n: int) -> None:
    """The running stage makes ``n`` evaluations its estimate did not count (e.g. a one-off tracing pass)."""
    state = _ACTIVE.get()
    if state is not None and state.active and state.stages and state.stages[-1].total is not None:
        state.revise(state.stages[-1].total + int(n))  # type: ignore[operator]


def set_prefix(text: str) -> None:
    """Put ``text`` before every label of the current bar (e.g. ``"image 2/5 "`` while an outer call loops)."""
    state = _ACTIVE.get()
    if state is not None and state is not _SILENT:
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
