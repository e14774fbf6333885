"""Machine sensors per device: temperature, pressure, vibration and current, all driven by one load.

Normal: a reading about every minute (with jitter); the channels follow a shared load process
(daily cycle plus an AR(1) wander) with their own gains and noise, so they are correlated.
Anomalies change normal readings in place: a spike on one channel, a slow drift, a channel stuck
at one value, or one channel breaking its correlation with the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from producers.base import Generated, StreamGenerator, daily_phase

__all__ = ["SensorGenerator"]

# channel: (base, gain on load, noise sd)
_CHANNELS = {
    "temperature": (40.0, 8.0, 0.3),
    "pressure": (100.0, 5.0, 0.4),
    "vibration": (2.0, 0.8, 0.08),
    "current": (10.0, 3.0, 0.2),
}


class SensorGenerator(StreamGenerator):
    kind = "sensor"
    features = tuple(_CHANNELS)
    anomaly_types = ("spike", "drift", "stuck", "decorrelation")

    def key(self, index: int) -> str:
        return f"dev-{index:05d}"

    def stream(self, index: int, normal: np.random.Generator, anomalies: np.random.Generator) -> Iterator[Generated]:
        params = {
            name: (
                base * float(normal.uniform(0.9, 1.1)),
                gain * float(normal.uniform(0.8, 1.2)),
                sd,
            )
            for name, (base, gain, sd) in _CHANNELS.items()
        }
        period_ms = 60_000
        ts = self.start_ms + int(normal.uniform(0, period_ms))
        wander = 0.0
        incident = 0
        # The active incident: (type, channel, events left, length, stuck value / sign)
        active: tuple[str, str, int, int, float] | None = None
        previous: dict[str, float] = {}
        while True:
            wander = 0.95 * wander + float(normal.normal(0, 0.1))
            load = math.sin(2 * math.pi * (daily_phase(ts) - 8) / 24) + wander
            values = {
                name: base + gain * load + float(normal.normal(0, sd)) for name, (base, gain, sd) in params.items()
            }
            if active is None and (kind := self.start_incident(anomalies)) is not None:
                incident += 1
                channel = str(anomalies.choice(list(_CHANNELS)))
                length = {"spike": 1, "drift": 60, "stuck": 40, "decorrelation": 40}[kind]
                if kind != "spike":
                    length = int(anomalies.integers(length // 2, length * 3 // 2 + 1))
                # A stuck channel repeats the last value it reported.
                stuck_at = previous.get(channel, values[channel] + params[channel][2])
                extra = stuck_at if kind == "stuck" else float(anomalies.choice([-1.0, 1.0]))
                active = (kind, channel, length, length, extra)
            anomaly = None
            if active is not None:
                kind, channel, left, length, extra = active
                base, gain, sd = params[channel]
                step = length - left + 1
                if kind == "spike":
                    values[channel] += extra * (4 * gain + float(anomalies.uniform(10, 20)) * sd)
                elif kind == "drift":
                    values[channel] += extra * 3 * gain * step / length
                elif kind == "stuck":
                    values[channel] = extra
                else:  # decorrelation: the channel follows the load inverted
                    values[channel] = base - gain * load + float(anomalies.normal(0, sd))
                anomaly = kind
                active = None if left <= 1 else (kind, channel, left - 1, length, extra)
            previous = {k: round(v, 4) for k, v in values.items()}
            yield Generated(ts, previous, anomaly, incident if anomaly else 0)
            ts += period_ms + int(normal.integers(-2000, 2001))
