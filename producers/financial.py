"""Card transactions per account: amount, merchant-category novelty and distance from home.

Normal: a few transactions a day, mostly in waking hours, log-normal amounts around the
account's own median, mostly familiar merchant categories (a novelty score near 0) near home. The time since the
previous transaction is carried by ``ts`` (the model derives it). Anomalies: card-testing
bursts (tiny amounts seconds apart), unusually large amounts, and impossible travel (a
purchase thousands of km away minutes before a local one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from producers.base import Generated, StreamGenerator, burst_times, rhythm

__all__ = ["FinancialGenerator"]

_AMOUNT_SIGMA = 0.8  # spread of an account's log amounts


class FinancialGenerator(StreamGenerator):
    kind = "financial"
    features = ("amount", "merchant_novelty", "distance_km")
    anomaly_types = ("card_testing", "large_amount", "impossible_travel")

    def key(self, index: int) -> str:
        return f"acct-{index:06d}"

    def stream(self, index: int, normal: np.random.Generator, anomalies: np.random.Generator) -> Iterator[Generated]:
        per_day = float(normal.lognormal(math.log(6), 0.5))
        mean_gap_s = 86_400 / per_day
        log_median = float(normal.normal(math.log(40), 0.6))
        ts = self.start_ms + int(normal.uniform(0, mean_gap_s * 1000))
        prev_ts = ts - 1
        incident = 0
        big_left = 0
        while True:
            values = {
                "amount": round(float(normal.lognormal(log_median, _AMOUNT_SIGMA)), 2),
                # How unfamiliar the merchant category is for this account, 0..1: mostly low.
                "merchant_novelty": round(float(normal.beta(1.2, 9.0)), 4),
                "distance_km": round(
                    float(normal.uniform(50, 400)) if normal.random() < 0.03 else float(normal.exponential(4)),
                    2,
                ),
            }
            anomaly = None
            if big_left:
                big_left = 0
            elif (kind := self.start_incident(anomalies)) is not None:
                incident += 1
                if kind == "large_amount":
                    # Large for this account: 4-6 sigma over its own median (25-120x), an amount fewer
                    # than 1 in 30,000 of its normal purchases reach; not a multiple of this draw,
                    # which could land inside the account's normal range.
                    values["amount"] = round(math.exp(log_median + _AMOUNT_SIGMA * float(anomalies.uniform(4, 6))), 2)
                    if anomalies.random() < 0.5:
                        values["merchant_novelty"] = round(float(anomalies.uniform(0.85, 1.0)), 4)
                    anomaly = kind
                else:
                    yield from self._inject(kind, incident, prev_ts, ts, log_median, anomalies)
            yield Generated(ts, values, anomaly, incident if anomaly else 0)
            prev_ts = ts
            # Waking hours: activity peaks mid-afternoon and nearly stops at night.
            ts += max(1000, int(normal.exponential(mean_gap_s / max(0.15, rhythm(ts, 15, 0.85))) * 1000))

    @staticmethod
    def _inject(
        kind: str,
        incident: int,
        prev_ts: int,
        next_ts: int,
        log_median: float,
        rng: np.random.Generator,
    ) -> Iterator[Generated]:
        if kind == "card_testing":
            for t in burst_times(prev_ts, next_ts, int(rng.integers(5, 16)), 8000, rng):
                yield Generated(
                    t,
                    {
                        "amount": round(float(rng.uniform(0.5, 3.0)), 2),
                        "merchant_novelty": round(float(rng.uniform(0.85, 1.0)), 4),
                        "distance_km": round(float(rng.uniform(0, 30)), 2),
                    },
                    kind,
                    incident,
                )
        else:  # impossible travel: far away, minutes before the next (local) purchase
            for t in burst_times(prev_ts, next_ts, 1, float(rng.uniform(120_000, 1_200_000)), rng):
                yield Generated(
                    t,
                    {
                        "amount": round(float(rng.lognormal(log_median, _AMOUNT_SIGMA)), 2),
                        "merchant_novelty": round(float(rng.uniform(0.85, 1.0)), 4),
                        "distance_km": round(float(rng.uniform(2000, 9000)), 2),
                    },
                    kind,
                    incident,
                )
