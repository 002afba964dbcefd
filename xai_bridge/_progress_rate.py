"""Throughput and ETA of a progress bar, measured over its recent batches.

The first batch of a run is often its slowest (a library's import, a graph
compilation, a model's first call), so a rate counted from the start of a
stage predicts hours for a run of minutes (shap's first ETA read 1:16:57).
:class:`Throughput` starts counting at the end of the first batch and keeps
only the batches of the last :data:`WINDOW` seconds, so the ETA follows
what the machine does now.
"""

from __future__ import annotations

from collections import deque

__all__ = ["WINDOW", "Throughput", "format_seconds"]

#: Seconds of recent batches the rate is measured over.
WINDOW = 20.0


class Throughput:
    """Units per second over the batches of the last :data:`WINDOW` seconds of one stage.

    Example:
        >>> rate = Throughput()
        >>> rate.add(8, now=5.0)  # the first batch (with its warm-up) ends: no rate yet
        >>> rate.per_second() is None
        True
        >>> rate.add(16, now=6.0)
        >>> rate.per_second(), rate.eta(16, 40)
        (8.0, 3.0)
    """

    def __init__(self, window: float = WINDOW) -> None:
        self.window = float(window)
        self._samples: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """Forget every batch (a new stage starts)."""
        self._samples.clear()

    def add(self, done: int, now: float) -> None:
        """A batch ended at ``now`` with ``done`` units done in the stage so far."""
        self._samples.append((float(now), int(done)))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def per_second(self) -> float | None:
        """Units per second between the oldest and newest batch kept; None before two batches."""
        if len(self._samples) < 2:
            return None
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or d1 <= d0:
            return None
        return (d1 - d0) / (t1 - t0)

    def eta(self, done: int, total: int | None) -> float | None:
        """Seconds left to reach ``total`` at the current rate; None when unknown."""
        rate = self.per_second()
        if rate is None or total is None:
            return None
        return max(0.0, (total - done) / rate)


def format_seconds(seconds: float) -> str:
    """``H:MM:SS`` (or ``M:SS`` under an hour), as progress lines print durations."""
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
