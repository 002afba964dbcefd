"""Where a progress bar is drawn: a terminal, a notebook widget, notebook text, or nowhere.

tqdm draws every bar; this module picks the class and the place. In a
Jupyter kernel the bar lives in one display output that is emptied when the
call ends, so a finished cell shows its result and no stale ``0% 0/6`` bar:
an ipywidgets widget when ipywidgets is installed, else the same line as
plain text (never tqdm's ``IProgress not found`` warning). Elsewhere it is a
text bar on stderr, or nothing when stderr is gone (``sys.stderr`` None, or
file descriptor 2 closed, as under some services and ``pythonw``).

The ETA and rate come from the caller's :class:`~xai_bridge._progress_rate.Throughput`
(``rate_of``), not from tqdm's average since the first batch.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["in_notebook", "make_bar", "stderr_usable"]

#: Width of a text bar drawn into a notebook output (no terminal to measure).
NOTEBOOK_COLUMNS = 100

#: Size of a terminal bar's screen where the terminal reports 0 columns or rows.
FALLBACK_COLUMNS, FALLBACK_ROWS = 80, 24


def stderr_usable() -> bool:
    """Whether writing to ``sys.stderr`` can work: it exists and, where it has one, its file descriptor is open."""
    stream = sys.stderr
    if stream is None or getattr(stream, "closed", False):
        return False
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError: a pure-Python stream
        return True
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def in_notebook() -> bool:
    """Whether this is a Jupyter kernel (a display frontend, not a terminal)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True


def make_bar(kind: str, rate_of: Callable[[], float | None], **kwargs: Any) -> Any:
    """A tqdm bar of ``kind`` (``"notebook"`` or ``"terminal"``) whose rate and ETA come from ``rate_of``."""
    if kind == "notebook":
        if _has_widgets():
            return _widget_class()(rate_of, display=False, **kwargs)
        return _notebook_text_class()(rate_of, file=io.StringIO(), ncols=NOTEBOOK_COLUMNS, **kwargs)
    from tqdm.std import tqdm

    if 0 in _reported_size(sys.stderr):  # tqdm would follow it: no room, so no bar at all
        return _with_rate(tqdm)(rate_of, file=sys.stderr, ncols=FALLBACK_COLUMNS, nrows=FALLBACK_ROWS, **kwargs)
    return _with_rate(tqdm)(rate_of, file=sys.stderr, dynamic_ncols=True, **kwargs)


def _reported_size(stream: Any) -> tuple[int, ...]:
    """``(columns, rows)`` that the terminal behind ``stream`` reports, or ``()`` where it is no terminal.

    A pseudo-terminal nobody sized (``docker exec -t``, ``script``, some CI
    runners) reports 0 x 0.
    """
    try:
        return tuple(os.get_terminal_size(stream.fileno()))
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return ()


def _with_rate(base: type) -> type:
    """``base`` (a tqdm class) drawing its rate and ETA from the caller's measurement."""

    class Bar(base):  # type: ignore[misc, valid-type]
        def __init__(self, rate_of: Callable[[], float | None], **kwargs: Any) -> None:
            self._rate_of = rate_of
            super().__init__(**kwargs)

        @property
        def format_dict(self) -> dict[str, Any]:
            values = dict(super().format_dict)
            rate = self._rate_of() if hasattr(self, "_rate_of") else None
            values["rate"] = rate if rate is not None else 0  # 0: tqdm prints "?" for the rate and the ETA
            return values

    return Bar


class _Shown:
    """One notebook display output, updated in place and emptied at the end."""

    def __init__(self) -> None:
        self.handle: Any = None

    def show(self, obj: Any = None, text: str | None = None) -> None:
        from IPython.display import display

        data = {"text/plain": text} if text is not None else None
        if self.handle is None:
            self.handle = display(data, raw=True, display_id=True) if data else display(obj, display_id=True)
        elif data:
            self.handle.update(data, raw=True)

    def clear(self) -> None:
        if self.handle is not None:
            self.handle.update({"text/plain": ""}, raw=True)


def _widget_class() -> type:
    """Tqdm's ipywidgets bar, shown in a display output of its own that is emptied on close."""
    from tqdm.notebook import tqdm as notebook_tqdm

    class WidgetBar(_with_rate(notebook_tqdm)):  # type: ignore[misc]
        def display(self, *args: Any, **kwargs: Any) -> None:
            kwargs["check_delay"] = False
            super().display(*args, **kwargs)
            if not hasattr(self, "_shown"):
                self._shown = _Shown()
            if self._shown.handle is None and not kwargs.get("close") and self._due():
                self._shown.show(self.container)

        def _due(self) -> bool:
            return bool(self.delay <= 0 or self._time() >= self.start_t + self.delay)

        def close(self) -> None:
            super().close()
            if hasattr(self, "_shown"):
                self._shown.clear()

    return WidgetBar


def _notebook_text_class() -> type:
    """Tqdm's text bar, drawn into a notebook display output (no stderr, no widget) and emptied on close."""
    from tqdm.std import tqdm

    class NotebookTextBar(_with_rate(tqdm)):  # type: ignore[misc]
        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            if not hasattr(self, "_shown"):
                self._shown = _Shown()
            if msg is None:
                self._shown.show(text=self.__str__())
            return True

        def close(self) -> None:
            super().close()
            if hasattr(self, "_shown"):
                self._shown.clear()

    return NotebookTextBar
