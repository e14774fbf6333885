"""`gruwatch demo`: the whole pipeline live for about a minute, then a summary.

It starts a worker (a fresh consumer group reading only new events, its own state namespace)
and the three producers at a modest rate with labelled anomalies, shows alerts as they come,
and after ``duration`` seconds (or Ctrl-C) stops every process it started and reports events
per kind, alerts, and incidents caught and missed against the injected labels.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from pipeline import kafka
from pipeline.lifecycle import StopFlag
from pipeline.reading import read_topic
from pipeline.settings import Settings
from pipeline.subscribe import AlertFilter, SubscribeStats, subscribe

__all__ = ["DemoResult", "run_demo"]

KINDS = ("network", "financial", "sensor")
_STOP_TIMEOUT_S = 20.0


@dataclass
class DemoResult:
    duration_s: float = 0.0
    events: dict[str, int] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    incidents: int = 0
    caught: int = 0
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        total = sum(self.events.values())
        return {
            "duration_s": round(self.duration_s, 1),
            "events": self.events,
            "events_per_s": round(total / self.duration_s, 1) if self.duration_s else 0.0,
            "alerts": len(self.alerts),
            "alerts_by_severity": dict(Counter(a["severity"] for a in self.alerts)),
            "incidents": self.incidents,
            "incidents_caught": self.caught,
            "incidents_missed": self.incidents - self.caught,
            "true_alerts": sum(1 for a in self.alerts if a.get("meta")),
            "by_kind": self.by_kind,
        }


def _end_offsets(settings: Settings, topics: list[str]) -> dict[TopicPartition, int]:
    consumer = kafka.consumer(settings)
    try:
        tps = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or [])]
        return dict(consumer.end_offsets(tps))
    finally:
        consumer.close()


def _events_since(settings: Settings, topic: str, start: dict[TopicPartition, int]) -> list[dict[str, Any]]:
    """The events produced to ``topic`` after the offsets in ``start`` (up to its end now)."""
    records = read_topic(
        settings, topic, from_beginning=True, to_end=True, start_offsets=start, client_id="gruwatch-demo"
    )
    return [orjson.loads(record.value) for record in records]


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_demo(
    settings: Settings,
    duration_s: float,
    rate: float,
    keys: int,
    anomaly_rate: float,
    on_alert: Callable[[dict[str, Any]], None],
    log: Callable[[str], None],
) -> DemoResult:
    run = uuid.uuid4().hex[:8]
    topics = {kind: settings.topic_for(kind) for kind in KINDS}  # type: ignore[arg-type]
    start_offsets = _end_offsets(settings, [*topics.values(), settings.alerts_topic])
    env = {**os.environ, "GRUWATCH_HTTP_PORT": "0", "GRUWATCH_STATE_TTL_S": "3600"}
    result = DemoResult()
    procs: list[subprocess.Popen[bytes]] = []
    started = time.monotonic()
    try:
        group = f"gruwatch-demo-{run}"
        # The demo's group starts exactly where the topics end now: it scores every event the demo
        # sends and nothing older, with no race against the producers.
        with kafka.admin(settings) as client:
            client.alter_group_offsets(
                group,
                {
                    tp: OffsetAndMetadata(offset, "", -1)
                    for tp, offset in start_offsets.items()
                    if tp.topic != settings.alerts_topic
                },
            )
        procs.append(
            _spawn(
                [
                    "worker",
                    "--topics",
                    ",".join(topics.values()),
                    "--group",
                    group,
                    "--namespace",
                    f"demo-{run}",
                    "--max-wait-ms",
                    "100",
                ],
                env,
            )
        )
        for i, kind in enumerate(KINDS):
            procs.append(
                _spawn(
                    [
                        "produce",
                        kind,
                        "--count",
                        "0",
                        "--rate",
                        str(rate),
                        "--keys",
                        str(keys),
                        "--seed",
                        str(i + 1),
                        "--anomaly-rate",
                        str(anomaly_rate),
                        "--start",
                        "now",
                        "--no-progress",
                    ],
                    env,
                )
            )
        result.pids = [p.pid for p in procs]
        log(
            f"demo {run}: worker pid {procs[0].pid}, producers pids {', '.join(str(p.pid) for p in procs[1:])}; "
            f"{rate:g} events/s per kind for {duration_s:g} s (Ctrl-C stops early)"
        )
        deadline = time.monotonic() + duration_s
        with StopFlag() as stop:

            def should_stop() -> bool:
                return stop() or time.monotonic() >= deadline or any(p.poll() is not None for p in procs)

            for alert in subscribe(
                settings,
                AlertFilter(),
                SubscribeStats(),
                from_beginning=True,
                follow=True,
                idle_timeout=None,
                should_stop=should_stop,
                start_offsets=start_offsets,
            ):
                result.alerts.append(alert)
                on_alert(alert)
        dead = [p for p in procs if p.poll() not in (None, 0)]
        if dead:
            log(f"a demo process exited early: {dead[0].stderr.read().decode()[-600:] if dead[0].stderr else ''}")
    finally:
        _stop_all(procs)
        result.duration_s = time.monotonic() - started
    # Ground truth: the labelled events the producers sent during the run.
    for kind, topic in topics.items():
        events = _events_since(settings, topic, start_offsets)
        result.events[kind] = len(events)
        incidents = {e["meta"]["incident"] for e in events if e.get("label")}
        caught = {a["meta"]["incident"] for a in result.alerts if a.get("kind") == kind and a.get("meta")}
        result.incidents += len(incidents)
        result.caught += len(incidents & caught)
        result.by_kind[kind] = {"incidents": len(incidents), "caught": len(incidents & caught)}
    return result
