"""Process-wide concerns of long runs: a graceful stop (SIGINT/SIGTERM set a flag that long loops
check, so they finish cleanly), a garbage collector tuned for batch work and one math thread."""

from __future__ import annotations

import gc
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType, TracebackType

__all__ = ["StopFlag", "batch_gc", "single_math_thread"]

# Young collections every this many allocations (CPython's default is 700).
_BATCH_GC_THRESHOLD = 50_000


@contextmanager
def batch_gc() -> Iterator[None]:
    """While entered, what is alive now (models, libraries) is frozen out of the collector and young
    collections run every 50,000 allocations instead of 700. A 5,000-event batch allocates tens of
    thousands of short-lived objects that reference counting frees; the collector scanning them
    over and over was ~30 % of the worker's hot path (py-spy)."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(_BATCH_GC_THRESHOLD, previous[1], previous[2])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@contextmanager
def single_math_thread() -> Iterator[None]:
    """While entered, one thread for numpy's BLAS and for torch.

    A worker's matrices have hundreds of rows: a second BLAS thread costs more in hand-offs than it
    gains (the GRU's recurrence took 3.1 µs per event with two OpenBLAS threads, 1.8 µs with one),
    and the machine's other cores serve the broker, Redis or another worker process."""
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")  # loaded only where a process trains or saves models
    torch_threads = torch.get_num_threads() if torch is not None else 0
    if torch is not None:
        torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)


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
