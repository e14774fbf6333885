"""Machinery shared by the synthetic generators: per-stream simulators merged in time order.

Each stream owns two random generators seeded from (seed, stream index): one drives normal
behaviour, the other decides anomalies. So the normal events of a stream are the same whatever
the anomaly rate, and a label marks exactly the events an injected anomaly created or changed.
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

__all__ = ["DEFAULT_START_MS", "Generated", "StreamGenerator", "daily_phase"]

DEFAULT_START_MS = int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * 1000)
DAY_MS = 86_400_000


@dataclass(slots=True)
class Generated:
    """One event of one stream, before it is given its key."""

    ts: int
    values: dict[str, float]
    anomaly: str | None = None  # the injected anomaly type; None for normal behaviour
    incident: int = 0  # incident number within the stream


def daily_phase(ts_ms: int) -> float:
    """Hour of the day in [0, 24)."""
    return (ts_ms % DAY_MS) / 3_600_000


def rhythm(ts_ms: int, peak_hour: float, depth: float) -> float:
    """A daily activity multiplier in [1 - depth, 1 + depth], highest at ``peak_hour``."""
    return 1.0 + depth * math.cos(2 * math.pi * (daily_phase(ts_ms) - peak_hour) / 24)


class StreamGenerator(ABC):
    """A generator of many keyed streams with labelled anomalies.

    Parameters: ``keys`` streams, ``seed`` for determinism, ``anomaly_rate`` = chance that an
    incident starts at any normal event, ``start_ms`` = the first timestamp (epoch ms),
    ``first_key`` = the index of the first stream. A stream's events depend only on (seed, its
    index), so stream 300 is the same stream in a run of 400 keys and in one that starts at 300:
    runs over disjoint index ranges give disjoint keys and can be combined (streams of two
    lengths in one training set).
    """

    kind: str = ""
    features: tuple[str, ...] = ()
    anomaly_types: tuple[str, ...] = ()

    def __init__(
        self,
        keys: int = 100,
        seed: int = 0,
        anomaly_rate: float = 0.002,
        start_ms: int = DEFAULT_START_MS,
        first_key: int = 0,
    ) -> None:
        if keys < 1:
            raise ValueError("keys must be at least 1")
        if first_key < 0:
            raise ValueError("first_key must not be negative")
        if not 0.0 <= anomaly_rate < 1.0:
            raise ValueError("anomaly_rate must be in [0, 1)")
        self.keys = keys
        self.seed = seed
        self.anomaly_rate = anomaly_rate
        self.start_ms = start_ms
        self.first_key = first_key

    @abstractmethod
    def key(self, index: int) -> str:
        """The stream key of stream ``index``."""

    @abstractmethod
    def stream(self, index: int, normal: np.random.Generator, anomalies: np.random.Generator) -> Iterator[Generated]:
        """The events of one stream in time order, forever."""

    def rngs(self, index: int) -> tuple[np.random.Generator, np.random.Generator]:
        return np.random.default_rng([self.seed, index, 0]), np.random.default_rng([self.seed, index, 1])

    def events(self, count: int | None = None) -> Iterator[dict[str, Any]]:
        """Events of all streams merged in time order (ties by stream index), as contract dicts."""
        heap: list[tuple[int, int, Generated, Iterator[Generated]]] = []
        indices = range(self.first_key, self.first_key + self.keys)
        for index in indices:
            it = self.stream(index, *self.rngs(index))
            first = next(it)
            heap.append((first.ts, index, first, it))
        heapq.heapify(heap)
        keys = {i: self.key(i) for i in indices}
        emitted = 0
        while heap and (count is None or emitted < count):
            _, index, item, it = heap[0]
            nxt = next(it)
            heapq.heapreplace(heap, (nxt.ts, index, nxt, it))
            event: dict[str, Any] = {
                "key": keys[index],
                "ts": item.ts,
                "values": item.values,
                "label": 0 if item.anomaly is None else 1,
            }
            if item.anomaly is not None:
                event["meta"] = {
                    "anomaly": item.anomaly,
                    "incident": f"{keys[index]}#{item.incident}",
                }
            yield event
            emitted += 1

    def start_incident(self, anomalies: np.random.Generator) -> str | None:
        """Whether an incident starts at this normal event, and of which type."""
        if self.anomaly_rate <= 0 or anomalies.random() >= self.anomaly_rate:
            return None
        return str(self.anomaly_types[int(anomalies.integers(len(self.anomaly_types)))])


def burst_times(prev_ts: int, next_ts: int, n: int, spacing_ms: float, rng: np.random.Generator) -> list[int]:
    """Up to ``n`` strictly increasing timestamps in (prev_ts, next_ts), ending shortly before next_ts.

    Used for anomalies that insert events between two normal ones without moving them.
    """
    room = next_ts - prev_ts - 2
    if room < 1:
        return []
    n = max(1, min(n, room))
    gaps = rng.exponential(spacing_ms, size=n) + 1
    span = float(gaps.sum())
    if span > room * 0.9:
        gaps *= room * 0.9 / span
        span = float(gaps.sum())
    times = []
    t = float(next_ts - 1 - span)
    last = prev_ts
    for gap in gaps:
        t += float(gap)
        ts = max(int(t), last + 1)
        if ts >= next_ts:
            break
        times.append(ts)
        last = ts
    return times
