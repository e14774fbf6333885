"""`gruwatch bench`: figures as JSON, each beside a baseline measured in the same run.

This machine is shared and noisy, so absolute numbers drift; the ratios are what to compare.
Parts so far: ``replay`` (gruwatch replay against kafka-python's raw send loop).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from pipeline import kafka
from pipeline.produce import GENERATORS
from pipeline.replay import replay
from pipeline.settings import Settings

__all__ = ["PARTS", "bench_replay", "run_bench"]


@contextmanager
def _scratch_topics(settings: Settings, count: int, partitions: int) -> Iterator[list[str]]:
    names = [f"bench-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    kafka.ensure_topics(settings, names, partitions=partitions)
    try:
        yield names
    finally:
        with kafka.admin(settings, timeout_ms=15000) as client:
            client.delete_topics(names)


def _mixed_events(total: int, keys: int, seed: int) -> list[dict[str, Any]]:
    """Events of all three kinds, in equal parts."""
    per_kind = total // len(GENERATORS)
    events: list[dict[str, Any]] = []
    for kind, cls in GENERATORS.items():
        events.extend(cls(keys=max(1, keys // len(GENERATORS)), seed=seed).events(per_kind))
    return events


def _raw_send_loop(settings: Settings, topic: str, records: list[tuple[bytes, bytes]], **config: Any) -> float:
    """kafka-python at its simplest: pre-encoded records, one send each, one flush. Returns events/s."""
    producer = kafka.producer(settings, **config)
    producer.send(topic, b"warm-up").get(timeout=30)  # metadata and connection outside the timing
    started = time.perf_counter()
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(records) / elapsed


def bench_replay(settings: Settings, events: int, log: Callable[[str], None]) -> dict[str, Any]:
    data = _mixed_events(events, keys=3000, seed=7)
    records = [(e["key"].encode(), orjson.dumps(e)) for e in data]
    with tempfile.TemporaryDirectory() as tmp, _scratch_topics(settings, 3, settings.topic_partitions) as topics:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"".join(value + b"\n" for _, value in records))
        log(f"replay: raw kafka-python send loop, {len(records)} events (gruwatch's producer settings)")
        floor = _raw_send_loop(settings, topics[0], records)
        log("replay: raw kafka-python send loop with kafka-python's default producer settings")
        default = _raw_send_loop(
            settings, topics[1], records, linger_ms=0, batch_size=16384, compression_type=None
        )
        log("replay: gruwatch replay (read, validate, encode, send)")
        stats = replay(settings, [path], topics[2], fmt="jsonl")
    return {
        "replay_events": stats.sent,
        "replay_eps": round(stats.events_per_s, 1),
        "replay_floor_eps": round(floor, 1),
        "replay_raw_default_eps": round(default, 1),
        "ratio_replay_floor": round(stats.events_per_s / floor, 3),
        "producer": {
            "linger_ms": settings.producer_linger_ms,
            "batch_bytes": settings.producer_batch_bytes,
            "compression": settings.producer_compression,
            "acks": settings.producer_acks,
        },
    }


PARTS: dict[str, Callable[[Settings, int, Callable[[str], None]], dict[str, Any]]] = {
    "replay": bench_replay,
}


def run_bench(settings: Settings, parts: list[str], events: int, log: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {"events": events, "parts": parts}
    for part in parts:
        results.update(PARTS[part](settings, events, log))
    return results
