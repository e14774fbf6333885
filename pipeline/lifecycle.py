"""Graceful stop: SIGINT/SIGTERM set a flag that long loops check, so they finish cleanly."""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import FrameType, TracebackType

__all__ = ["StopFlag"]


class StopFlag:
    """While entered, the first SIGINT/SIGTERM sets ``stopped`` (and calls ``on_stop``, for work
    that runs elsewhere, such as child processes); a second SIGINT interrupts at once."""

    def __init__(self, on_stop: Callable[[], None] | None = None) -> None:
        self.stopped = False
        self._on_stop = on_stop
        self._previous: dict[int, object] = {}

    def __call__(self) -> bool:
        return self.stopped

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.stopped and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stopped = True
        if self._on_stop is not None:
            self._on_stop()

    def __enter__(self) -> StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
