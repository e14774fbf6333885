"""The worker on the real broker and Redis: alerts, dead letters, crashes, Redis restarts, scale-out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from models.artifacts import load_detector, shipped_model_dir
from pipeline.settings import Settings
from pipeline.stack import LocalRedis
from producers.network import NetworkGenerator
from tests.conftest import free_port
from tests.integration.worker_helpers import (
    WorkerEnv,
    assert_same_states,
    committed,
    group_members,
    produce_events,
    read_states,
    read_topic,
    wait_for,
)

EVENTS = 12_000
KEYS = 300


@pytest.fixture(scope="module")
def stream_topic(kafka_up: Settings) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """One labelled topic (4 partitions) shared by the worker tests, produced once."""
    import uuid

    from pipeline import kafka

    topic = f"worker-{uuid.uuid4().hex[:10]}"
    kafka.ensure_topics(kafka_up, [topic], partitions=4)
    events = list(NetworkGenerator(keys=KEYS, seed=31, anomaly_rate=0.004).events(EVENTS))
    produce_events(kafka_up, topic, events)
    yield topic, events
    with kafka.admin(kafka_up, timeout_ms=15000) as client:
        client.delete_topics([topic])


@pytest.fixture(scope="module")
def reference(
    stream_topic: tuple[str, list[dict[str, Any]]], redis_client: Any
) -> tuple[WorkerEnv, dict[str, Any], list[Any]]:
    """An uninterrupted run: its states and alerts are what every other run must reproduce."""
    topic, _ = stream_topic
    env = WorkerEnv(topic)
    env.run()
    states = read_states(env.redis_url, env.namespace)
    return env, states, read_topic(Settings(), env.alerts)


def test_alerts_for_injected_incidents(
    stream_topic: tuple[str, list[dict[str, Any]]],
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],
) -> None:
    topic, events = stream_topic
    _env, states, alert_records = reference
    assert sum(s.count for s in states.values()) == EVENTS and len(states) == KEYS
    alerts = [orjson.loads(r.value) for r in alert_records]
    assert alerts, "no alerts at all"
    detector = load_detector(shipped_model_dir("network"), kind="network")
    for record, alert in zip(alert_records, alerts, strict=True):
        assert record.key == alert["key"].encode()
        src = alert["source"]
        assert alert["alert_id"] == f"{src['topic']}:{src['partition']}:{src['offset']}" and src["topic"] == topic
        assert alert["kind"] == "network" and alert["model"] == "gru-network@2"
        assert alert["severity"] in {"low", "medium", "high", "critical"}
        assert alert["rule"] in {"score", "sustained"} and 0 <= alert["probability"] < 1e-4
        if alert["rule"] == "score" and alert["score"] <= alert["threshold"]:
            # One feature's term passed that feature's own threshold (not diluted by the others).
            assert detector.calibration.terms, alert
        assert {"feature", "actual", "expected", "z"} <= set(alert["explanation"][0])
        assert alert["detected_at"] >= alert["ts"] - 10**12  # epoch ms
    # Streaming alerts are exactly the offline model's (streaming and offline scoring agree).
    expected = set()
    for key in {e["key"] for e in events}:
        stream = [e for e in events if e["key"] == key]
        results, _ = detector.score_sequence([(e["ts"], e["values"]) for e in stream])
        expected |= {(key, e["ts"]) for e, r in zip(stream, results, strict=True) if r.alert}
    assert {(a["key"], a["ts"]) for a in alerts} == expected
    # And they find the injected incidents (these streams are short: 40 events, 10 of them warm-up).
    incidents = {e["meta"]["incident"] for e in events if e["label"]}
    caught = {a["meta"]["incident"] for a in alerts if a["meta"]}
    true_alerts = sum(1 for a in alerts if a["meta"])
    assert len(caught) / len(incidents) >= 0.6, (len(caught), len(incidents))
    assert true_alerts / len(alerts) >= 0.7, (true_alerts, len(alerts))
    # One incident, one alert: never a flood.
    assert max(Counter(a["meta"]["incident"] for a in alerts if a["meta"]).values()) <= 2


def test_bad_input_goes_to_the_dead_letter_topic(kafka_up: Settings, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=1)
    good = list(NetworkGenerator(keys=3, seed=2).events(30))
    bad = [
        (b"k", b"not json"),
        (b"k", b"[1]"),
        (b"k", b'{"ts":1,"values":{}}'),
        (
            b"k",
            b'{"key":"k","ts":"soon","values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1}}',
        ),
        (
            b"k",
            b'{"key":"k","ts":1,"values":{"bytes":NaN,"packets":1,"duration_ms":1,"dst_ports":1}}',
        ),
        (b"k", b'{"key":"k","ts":1,"values":{"amount":5,"merchant_novelty":0,"distance_km":1}}'),
        (
            b"k",
            b'{"key":"k","ts":1,"values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1,"x":1}}',
        ),
    ]
    from pipeline import kafka

    producer = kafka.producer(kafka_up)
    for i, e in enumerate(good):
        producer.send(topic, key=e["key"].encode(), value=orjson.dumps(e))
        if i < len(bad):
            producer.send(topic, key=bad[i][0], value=bad[i][1])
    producer.flush()
    env = WorkerEnv(topic)
    env.run()
    dead = read_topic(kafka_up, env.deadletters)
    assert [r.value for r in dead] == [v for _, v in bad]
    reasons = [dict(r.headers)["reason"].decode() for r in dead]
    for reason, expected in zip(
        reasons,
        [
            "not valid JSON",
            "JSON object",
            "missing field 'key'",
            "ISO-8601",
            "NaN",
            "lacks feature",
            "unknown feature",
        ],
        strict=True,
    ):
        assert expected in reason
    for r in dead:
        headers = dict(r.headers)
        assert headers["source.topic"] == topic.encode() and int(headers["source.offset"]) >= 0
    states = read_states(env.redis_url, env.namespace)
    # Events in = events scored + events dead-lettered.
    assert sum(s.count for s in states.values()) + len(dead) == len(good) + len(bad)


def test_kill_9_mid_stream_then_restart(
    kafka_up: Settings,
    stream_topic: tuple[str, list[dict[str, Any]]],
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],
) -> None:
    topic, _ = stream_topic
    _ref_env, ref_states, ref_alerts = reference
    env = WorkerEnv(topic)
    proc = env.start("--batch-size", "100")
    wait_for(lambda: committed(kafka_up, env.group, topic) >= EVENTS // 4, 120, "a quarter committed")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    at_kill = committed(kafka_up, env.group, topic)
    assert at_kill < EVENTS, "the worker finished before the kill; nothing was tested"
    env.run()
    assert_same_states(read_states(env.redis_url, env.namespace), ref_states)
    alerts = read_topic(kafka_up, env.alerts)
    ids = [orjson.loads(r.value)["alert_id"] for r in alerts]
    assert set(ids) == {orjson.loads(r.value)["alert_id"] for r in ref_alerts}  # none missing, none new
    for alert_id, count in Counter(ids).items():
        assert count <= 2, alert_id  # a duplicate is a re-emission with the same id
    # The subscriber shows each alert exactly once.
    shown = subprocess.run(
        [sys.executable, "-m", "pipeline", "alerts", "--json", "--no-follow", "--from-beginning"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "GRUWATCH_ALERTS_TOPIC": env.alerts},
    )
    shown_ids = [orjson.loads(line)["alert_id"] for line in shown.stdout.splitlines()]
    assert sorted(shown_ids) == sorted(set(ids))


def test_redis_restart_mid_stream_loses_nothing(
    kafka_up: Settings,
    stream_topic: tuple[str, list[dict[str, Any]]],
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],
    tmp_path: Path,
) -> None:
    topic, _ = stream_topic
    _, ref_states, _ = reference
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    own = LocalRedis(Settings(redis_url=url, data_dir=tmp_path))  # type: ignore[arg-type]
    assert own.start() == "started"
    env = WorkerEnv(topic, redis_url=url).with_health_port()
    health = f"http://127.0.0.1:{env.http_port}/health"

    def status() -> int:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return 0

    proc = env.start("--batch-size", "100")
    try:
        wait_for(lambda: committed(kafka_up, env.group, topic) >= EVENTS // 5, 120, "a fifth committed")
        assert own.stop()
        wait_for(lambda: status() == 503, 60, "the worker to report itself unhealthy")
        stalled = committed(kafka_up, env.group, topic)
        assert stalled < EVENTS
        assert own.start() == "started"
        wait_for(lambda: status() == 200, 60, "the worker to recover")
        wait_for(lambda: committed(kafka_up, env.group, topic) == EVENTS, 120, "the lag to drain")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        states = read_states(url, env.namespace)
        own.stop()
    assert proc.returncode == 0, err[-2000:]
    assert "retries" in err
    assert_same_states(states, ref_states)


def test_second_worker_joins_mid_stream(
    kafka_up: Settings,
    new_topic: Callable[..., str],
    stream_topic: tuple[str, list[dict[str, Any]]],
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],
) -> None:
    """Half the stream with one worker; a second joins the group; the rest is shared between them."""
    _, events = stream_topic
    _, ref_states, _ = reference
    topic = new_topic(partitions=4)
    env = WorkerEnv(topic)
    half = EVENTS // 2
    produce_events(kafka_up, topic, events[:half])
    first = env.start("--batch-size", "200", "--idle-exit", "6")
    wait_for(lambda: committed(kafka_up, env.group, topic) == half, 120, "the first half committed")
    second = env.start("--batch-size", "200", "--idle-exit", "6")
    wait_for(lambda: group_members(kafka_up, env.group) == 2, 60, "both workers in the group")
    produce_events(kafka_up, topic, events[half:])
    outputs = [p.communicate(timeout=180) for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, [o[1][-1500:] for o in outputs]
    per_worker = [int(o[1].split("worker stopped: ")[1].split(" events")[0]) for o in outputs]
    assert per_worker[0] > half and per_worker[1] > 0, per_worker  # both did part of the work
    assert sum(per_worker) == EVENTS
    assert_same_states(read_states(env.redis_url, env.namespace), ref_states)


def test_processes_share_the_partitions_and_the_work(
    kafka_up: Settings,
    new_topic: Callable[..., str],
    stream_topic: tuple[str, list[dict[str, Any]]],
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],
) -> None:
    """`--processes 2`: two workers in one group; together they equal one uninterrupted worker.

    The events are waiting before the processes start: neither may score alone and then hand
    partitions over (this broker rebalances a new group at once), so both share the work and no
    partition moves once records flow."""
    _, events = stream_topic
    _, ref_states, ref_alerts = reference
    topic = new_topic(partitions=4)
    env = WorkerEnv(topic)
    produce_events(kafka_up, topic, events)
    proc = env.start("--processes", "2", "--idle-exit", "5")
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    per_process = [int(n.replace(",", "")) for n in err.split("per process: ")[1].split(" events")[0].split(" + ")]
    assert len(per_process) == 2 and min(per_process) > 0 and sum(per_process) == EVENTS, err
    assert "partitions moved 0 times while scoring" in err, err
    assert_same_states(read_states(env.redis_url, env.namespace), ref_states)

    def where(records: list[Any]) -> set[tuple[str, str]]:  # alert ids name the topic: compare the rest
        return {tuple(orjson.loads(r.value)["alert_id"].rsplit(":", 2)[1:]) for r in records}

    assert where(read_topic(kafka_up, env.alerts)) == where(ref_alerts)
