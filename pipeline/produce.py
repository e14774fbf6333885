"""`gruwatch produce`: synthetic streams with labelled anomalies, to Kafka or a JSONL file."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO

import orjson

from pipeline.errors import ConfigError
from pipeline.pacing import Pacer
from pipeline.sending import Sender
from pipeline.settings import Settings
from producers.base import StreamGenerator
from producers.financial import FinancialGenerator
from producers.generic import GenericGenerator
from producers.network import NetworkGenerator
from producers.sensor import SensorGenerator

__all__ = ["GENERATORS", "make_generator", "produce_to_file", "produce_to_kafka"]

GENERATORS: dict[str, type[StreamGenerator]] = {
    "network": NetworkGenerator,
    "financial": FinancialGenerator,
    "sensor": SensorGenerator,
    "generic": GenericGenerator,
}


def make_generator(
    kind: str, keys: int, seed: int, anomaly_rate: float, start_ms: int, first_key: int = 0
) -> StreamGenerator:
    try:
        return GENERATORS[kind](keys=keys, seed=seed, anomaly_rate=anomaly_rate, start_ms=start_ms, first_key=first_key)
    except KeyError:
        raise ConfigError(f"unknown kind {kind!r}; choose one of {', '.join(GENERATORS)}") from None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _limited(
    events: Iterator[dict[str, Any]], count: int | None, should_stop: Callable[[], bool]
) -> Iterator[dict[str, Any]]:
    for event in itertools.islice(events, count):
        if should_stop():
            return
        yield event


def produce_to_kafka(
    settings: Settings,
    generator: StreamGenerator,
    topic: str,
    count: int | None,
    rate: float | None,
    on_progress: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Send ``count`` events (None: until stopped) at ``rate`` events/s (None: as fast as possible)."""
    with Sender(settings, topic, Pacer(max_rate=rate)) as sender:
        for event in _limited(generator.events(count), count, should_stop):
            sender.send(event["key"], event["ts"], orjson.dumps(event))
            on_progress(1)
    return sender.sent


def produce_to_file(
    generator: StreamGenerator,
    out: BinaryIO,
    count: int | None,
    on_progress: Callable[[int], None] = lambda n: None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    written = 0
    for event in _limited(generator.events(count), count, should_stop):
        out.write(orjson.dumps(event) + b"\n")
        written += 1
        on_progress(1)
    return written
