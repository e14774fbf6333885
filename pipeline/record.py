"""`gruwatch record`: capture a topic to JSONL, so it can be replayed or trained on.

It reads without a consumer group (it never takes partitions from a worker) and stops after
``max_events``, after ``idle_timeout`` seconds without a record, or at the end offsets the topic
had when recording started (``to_end``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import orjson

from pipeline.reading import read_topic
from pipeline.settings import Settings

__all__ = ["RecordStats", "jsonl_line", "record"]

logger = logging.getLogger(__name__)


@dataclass
class RecordStats:
    written: int = 0
    skipped: int = 0  # values that were not JSON objects
    elapsed_s: float = 0.0


def jsonl_line(value: bytes) -> bytes:
    """A Kafka value as one compact JSONL line; raises ValueError if it is not a JSON object."""
    obj = orjson.loads(value)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return orjson.dumps(obj) + b"\n"


def record(
    settings: Settings,
    topic: str,
    out: BinaryIO,
    *,
    from_beginning: bool = False,
    max_events: int | None = None,
    idle_timeout: float | None = None,
    to_end: bool = False,
    on_progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RecordStats:
    stats = RecordStats()
    started = time.monotonic()
    try:
        for message in read_topic(
            settings,
            topic,
            from_beginning=from_beginning,
            to_end=to_end,
            idle_timeout=idle_timeout,
            should_stop=should_stop,
            client_id="gruwatch-record",
        ):
            try:
                out.write(jsonl_line(message.value))
            except ValueError as exc:
                stats.skipped += 1
                logger.warning("%s[%d] offset %d: skipped, %s", topic, message.partition, message.offset, exc)
                continue
            stats.written += 1
            if on_progress is not None:
                on_progress(1)
            if max_events is not None and stats.written >= max_events:
                break
    finally:
        out.flush()
        stats.elapsed_s = time.monotonic() - started
    return stats
