"""Synthetic univariate series (one ``value`` per event) for the generic kind.

Each stream draws its own shape and scale: a daily cycle, a wandering level, a count process or
a noisy plateau, at a level anywhere from 0.1 to 100,000, sampled every 5 or 60 minutes (with
an occasional gap). Anomalies change normal readings in place: spikes, level shifts, a variance
burst, a flatline, a slow drift.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from producers.base import Generated, StreamGenerator, daily_phase

__all__ = ["GenericGenerator"]

_SHAPES = ("daily", "wander", "counts", "plateau")


class GenericGenerator(StreamGenerator):
    kind = "generic"
    features = ("value",)
    anomaly_types = ("spike", "level_shift", "variance", "flatline", "drift")

    def key(self, index: int) -> str:
        return f"series-{index:05d}"

    def stream(self, index: int, normal: np.random.Generator, anomalies: np.random.Generator) -> Iterator[Generated]:
        shape = _SHAPES[int(normal.integers(len(_SHAPES)))]
        level = float(10 ** normal.uniform(-1, 5))
        noise = level * float(normal.uniform(0.01, 0.15))
        # A count stream's spread is its Poisson spread (√mean, at the mean rate of its daily
        # cycle), not ``noise``: an anomaly sized against ``noise`` could sit inside it.
        count_sd = 1000 * math.sqrt(1.5 * max(0.5, level / 1000)) if level >= 1000 else math.sqrt(max(level, 0.75))
        count_unit = 1000.0 if level >= 1000 else 1.0  # a count of thousands is counted in thousands
        amplitude = level * float(normal.uniform(0.1, 0.6))
        period_ms = 300_000 if normal.random() < 0.6 else 3_600_000
        ts = self.start_ms + int(normal.uniform(0, period_ms))
        wander = 0.0
        incident = 0
        active: tuple[str, int, int, float] | None = None  # kind, left, length, magnitude
        last = level
        while True:
            wander = 0.98 * wander + float(normal.normal(0, 0.15))
            if shape == "daily":
                value = level + amplitude * math.sin(2 * math.pi * (daily_phase(ts) - 6) / 24)
                value += float(normal.normal(0, noise))
            elif shape == "wander":
                value = level + amplitude * wander + float(normal.normal(0, noise))
            elif shape == "counts":
                rate = max(0.5, level / 1000) * (1.5 + math.sin(2 * math.pi * daily_phase(ts) / 24))
                value = float(normal.poisson(rate)) * 1000 if level >= 1000 else float(normal.poisson(max(rate, level)))
            else:
                value = level + float(normal.normal(0, noise))
            anomaly = None
            if active is None and (kind := self.start_incident(anomalies)) is not None:
                incident += 1
                length = {
                    "spike": 1,
                    "level_shift": 30,
                    "variance": 20,
                    "flatline": 30,
                    "drift": 60,
                }[kind]
                if kind != "spike":
                    length = int(anomalies.integers(length // 2, length * 3 // 2 + 1))
                magnitude = float(anomalies.choice([-1.0, 1.0])) * float(anomalies.uniform(4, 10))
                if shape == "counts":
                    # Counts are whole and never negative: a flatline or a dip can equal a normal
                    # reading, so a count stream only gets upward changes.
                    kind = "level_shift" if kind == "flatline" else kind
                    magnitude = abs(magnitude)
                active = (kind, length, length, magnitude if kind != "flatline" else last)
            if active is not None:
                kind, left, length, magnitude = active
                spread = count_sd if shape == "counts" else max(noise, amplitude * 0.3, 1e-3)
                if kind == "spike":
                    value += abs(magnitude) * 1.5 * spread * (1 if magnitude > 0 else -0.6)
                elif kind == "level_shift":
                    value += magnitude * spread
                elif kind == "variance":
                    value += float(anomalies.normal(0, abs(magnitude) * spread))
                elif kind == "flatline":
                    value = magnitude
                else:  # drift
                    value += magnitude * spread * (length - left + 1) / length
                anomaly = kind
                active = None if left <= 1 else (kind, left - 1, length, magnitude)
            if shape == "counts":
                # An anomaly keeps a count a count: whole, in the stream's unit, never negative (a
                # fraction would be a tell no real count gives).
                value = max(round(value / count_unit) * count_unit, 0.0)
            last = round(value, 4)
            yield Generated(ts, {"value": last}, anomaly, incident if anomaly else 0)
            gap = period_ms * (4 if normal.random() < 0.005 else 1)
            ts += gap + int(normal.integers(-1000, 1001))
