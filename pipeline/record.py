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
from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline import kafka
from pipeline.errors import ConfigError, KafkaUnavailable
from pipeline.settings import Settings

__all__ = ["RecordStats", "record"]

logger = logging.getLogger(__name__)

_POLL_MS = 200


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
    consumer = kafka.consumer(settings, client_id="gruwatch-record")
    started = time.monotonic()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        if from_beginning:
            consumer.seek_to_beginning(*assigned)
        else:
            consumer.seek_to_end(*assigned)
        end = consumer.end_offsets(assigned) if to_end else {}
        last_record = time.monotonic()
        while not should_stop():
            if to_end and all(consumer.position(tp) >= end[tp] for tp in assigned):
                break
            if idle_timeout is not None and time.monotonic() - last_record >= idle_timeout:
                break
            batch = consumer.poll(timeout_ms=_POLL_MS)
            if batch:
                last_record = time.monotonic()
            for tp, messages in batch.items():
                for message in messages:
                    if to_end and message.offset >= end[tp]:
                        continue
                    try:
                        out.write(jsonl_line(message.value))
                    except ValueError as exc:
                        stats.skipped += 1
                        logger.warning("%s[%d] offset %d: skipped, %s", topic, tp.partition, message.offset, exc)
                        continue
                    stats.written += 1
                    if on_progress is not None:
                        on_progress(1)
                    if max_events is not None and stats.written >= max_events:
                        return stats
    except KafkaError as exc:
        raise KafkaUnavailable(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()
        out.flush()
        stats.elapsed_s = time.monotonic() - started
    return stats
