"""Pacing for replay and produce: recorded pace times a speed, and/or a maximum rate."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Pacer"]

# Sleeping for less than this costs more than it saves.
_MIN_SLEEP_S = 0.002


class Pacer:
    """Waits before each event so the stream keeps ``speed`` × its recorded pace and at most ``max_rate``/s.

    With neither set, it never waits (as fast as possible).
    """

    def __init__(
        self,
        speed: float | None = None,
        max_rate: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        if max_rate is not None and max_rate <= 0:
            raise ValueError("max rate must be positive")
        self.speed = speed
        self.max_rate = max_rate
        self._clock = clock
        self._sleep = sleep
        self._unpaced = speed is None and max_rate is None
        self._start = clock()
        self._first_ts: int | None = None
        self._count = 0

    def wait(self, ts_ms: int) -> None:
        if self._unpaced:
            return
        due = 0.0
        if self.speed is not None:
            if self._first_ts is None:
                self._first_ts = ts_ms
            due = max(due, (ts_ms - self._first_ts) / 1000 / self.speed)
        if self.max_rate is not None:
            due = max(due, self._count / self.max_rate)
        self._count += 1
        ahead = self._start + due - self._clock()
        if ahead > _MIN_SLEEP_S:
            self._sleep(ahead)
