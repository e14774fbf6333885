"""Prometheus metrics of the worker (one registry per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.events = Counter("gruwatch_events_total", "Events consumed", ["kind"], registry=r)
        self.scored = Counter("gruwatch_events_scored_total", "Events scored by the model", registry=r)
        self.dead = Counter("gruwatch_dead_letters_total", "Events sent to the dead-letter topic", registry=r)
        self.fenced = Counter("gruwatch_events_fenced_total", "Redelivered events already applied", registry=r)
        self.alerts = Counter("gruwatch_alerts_total", "Alerts published", ["kind", "severity"], registry=r)
        self.batch_size = Histogram(
            "gruwatch_batch_size",
            "Records per batch",
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.step_seconds = Histogram(
            "gruwatch_step_seconds", "Scoring time per batch (decode, read, step)", registry=r
        )
        self.redis_seconds = Histogram("gruwatch_redis_write_seconds", "State write time per batch", registry=r)
        self.batch_seconds = Histogram(
            "gruwatch_batch_seconds", "Whole batch: score, produce, write, commit", registry=r
        )
        self.lag = Gauge(
            "gruwatch_consumer_lag",
            "Records behind the log end",
            ["topic", "partition"],
            registry=r,
        )
        self.healthy = Gauge("gruwatch_healthy", "1 when the last batch completed without a fault", registry=r)
        self.retries = Counter("gruwatch_retries_total", "Batches retried after a fault", ["cause"], registry=r)
