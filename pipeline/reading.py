"""Reading a topic without a consumer group (so no partitions are taken from anyone), or with one.

Shared by `record` and `alerts`: start at the beginning or the end, stop at the end offsets seen
at the start (``to_end``), after ``idle_timeout`` seconds without a record, or when told to.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline import kafka
from pipeline.errors import ConfigError, KafkaUnavailable
from pipeline.settings import Settings

__all__ = ["read_topic"]

_POLL_MS = 200


def read_topic(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    to_end: bool = False,
    idle_timeout: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    group_id: str | None = None,
    client_id: str = "gruwatch-reader",
    start_offsets: dict[TopicPartition, int] | None = None,
) -> Iterator[Any]:
    """Yield the topic's records (kafka-python ConsumerRecords) until a stop condition."""
    consumer = kafka.consumer(
        settings,
        client_id=client_id,
        group_id=group_id,
        enable_auto_commit=group_id is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ConfigError(f"topic {topic!r} does not exist")
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if group_id is None:
            consumer.assign(assigned)
            if start_offsets is not None:
                for tp in assigned:
                    consumer.seek(tp, start_offsets.get(tp, 0))
            elif from_beginning:
                consumer.seek_to_beginning(*assigned)
            else:
                consumer.seek_to_end(*assigned)
        else:
            consumer.subscribe([topic])
        end = consumer.end_offsets(assigned) if to_end else {}
        last_record = time.monotonic()
        while not should_stop():
            if to_end and group_id is None and all(consumer.position(tp) >= end[tp] for tp in assigned):
                return
            if idle_timeout is not None and time.monotonic() - last_record >= idle_timeout:
                return
            batch = consumer.poll(timeout_ms=_POLL_MS)
            if batch:
                last_record = time.monotonic()
            for tp, messages in batch.items():
                for message in messages:
                    if to_end and message.offset >= end[tp]:
                        continue
                    yield message
    except KafkaError as exc:
        raise KafkaUnavailable(f"reading {topic} failed: {exc}") from exc
    finally:
        consumer.close()
