"""Network flows per host pair: bytes, packets, duration and distinct destination ports.

Normal: irregular (exponential) spacing with a daily rhythm, heavy-tailed (log-normal) sizes per
host pair. Anomalies insert events between normal flows: exfiltration bursts (huge, long
transfers), port scans (tiny flows to many ports, milliseconds apart) and floods (packet storms).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from producers.base import Generated, StreamGenerator, burst_times, rhythm

__all__ = ["NetworkGenerator"]

_SERVICE_PORTS = (22, 53, 80, 443, 3306, 5432, 6379, 8080, 9092)


class NetworkGenerator(StreamGenerator):
    kind = "network"
    features = ("bytes", "packets", "duration_ms", "dst_ports")
    anomaly_types = ("exfiltration", "port_scan", "flood")

    def key(self, index: int) -> str:
        src = f"10.0.{index // 250 % 250}.{index % 250 + 1}"
        dst = f"10.1.{index * 7 // 250 % 250}.{index * 7 % 250 + 1}"
        return f"{src}>{dst}:{_SERVICE_PORTS[index % len(_SERVICE_PORTS)]}"

    def stream(self, index: int, normal: np.random.Generator, anomalies: np.random.Generator) -> Iterator[Generated]:
        mean_gap_s = float(normal.lognormal(math.log(20), 0.7))
        log_bytes = float(normal.normal(math.log(20_000), 1.0))
        packet_size = float(normal.uniform(400, 1200))
        throughput = float(normal.lognormal(math.log(1e6), 0.5))  # bytes/s
        ts = self.start_ms + int(normal.uniform(0, mean_gap_s * 1000))
        prev_ts = ts - 1
        incident = 0
        while True:
            size = float(normal.lognormal(log_bytes, 1.0))
            flow = self._flow(size, packet_size, throughput, normal)
            kind = self.start_incident(anomalies)
            if kind is not None:
                incident += 1
                yield from self._inject(kind, incident, prev_ts, ts, log_bytes, throughput, anomalies)
            yield Generated(ts, flow)
            prev_ts = ts
            gap_s = normal.exponential(mean_gap_s / rhythm(ts, peak_hour=14, depth=0.7))
            ts += max(1, int(gap_s * 1000))

    @staticmethod
    def _flow(size: float, packet_size: float, throughput: float, rng: np.random.Generator) -> dict[str, float]:
        return {
            "bytes": round(size),
            "packets": max(1, round(size / packet_size * float(rng.lognormal(0, 0.2)))),
            "duration_ms": max(1, round(size / throughput * 1000 * float(rng.lognormal(0, 0.5)))),
            "dst_ports": 1 + int(rng.poisson(0.1)),
        }

    def _inject(
        self,
        kind: str,
        incident: int,
        prev_ts: int,
        next_ts: int,
        log_bytes: float,
        throughput: float,
        rng: np.random.Generator,
    ) -> Iterator[Generated]:
        if kind == "exfiltration":
            times = burst_times(prev_ts, next_ts, int(rng.integers(3, 11)), 3000, rng)
            for t in times:
                size = float(rng.lognormal(log_bytes + math.log(400), 0.4))
                yield Generated(
                    t,
                    {
                        "bytes": round(size),
                        "packets": max(1, round(size / 1400)),
                        "duration_ms": round(size / throughput * 1000 * float(rng.uniform(1.5, 4))),
                        "dst_ports": 1,
                    },
                    kind,
                    incident,
                )
        elif kind == "port_scan":
            for t in burst_times(prev_ts, next_ts, int(rng.integers(15, 51)), 80, rng):
                yield Generated(
                    t,
                    {
                        "bytes": int(rng.integers(40, 121)),
                        "packets": int(rng.integers(1, 3)),
                        "duration_ms": int(rng.integers(1, 6)),
                        "dst_ports": int(rng.integers(20, 501)),
                    },
                    kind,
                    incident,
                )
        else:  # flood
            for t in burst_times(prev_ts, next_ts, int(rng.integers(20, 81)), 20, rng):
                packets = int(rng.integers(500, 5001))
                yield Generated(
                    t,
                    {
                        "bytes": packets * int(rng.integers(60, 101)),
                        "packets": packets,
                        "duration_ms": int(rng.integers(100, 1001)),
                        "dst_ports": 1,
                    },
                    kind,
                    incident,
                )
