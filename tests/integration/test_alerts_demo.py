"""`gruwatch alerts` (filters, de-duplication, malformed messages) and `gruwatch demo`."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from typing import Any

import orjson

from pipeline import kafka
from pipeline.settings import Settings
from tests.conftest import gruwatch


def alert(i: int, kind: str, key: str, severity: str, ts: int) -> dict[str, Any]:
    return {
        "alert_id": f"events.{kind}:0:{i}",
        "kind": kind,
        "key": key,
        "ts": ts,
        "score": 30.0 + i,
        "threshold": 20.0,
        "probability": 1e-6,
        "severity": severity,
        "model": f"gru-{kind}@1",
        "explanation": [{"feature": "bytes", "actual": 1e6, "expected": 1e3, "z": 6.1}],
        "source": {"topic": f"events.{kind}", "partition": 0, "offset": i},
        "detected_at": ts + 5,
        "meta": None,
    }


def test_alerts_subscriber(kafka_up: Settings, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=2)
    now = int(time.time() * 1000)
    alerts = [
        alert(1, "network", "10.0.0.1>10.1.0.1:443", "critical", now - 3_600_000 * 5),
        alert(2, "financial", "acct-000001", "low", now - 60_000),
        alert(3, "financial", "acct-000777", "high", now - 30_000),
        alert(4, "sensor", "dev-00001", "medium", now - 10_000),
    ]
    producer = kafka.producer(kafka_up)
    for a in alerts:
        producer.send(topic, key=a["key"].encode(), value=orjson.dumps(a))
    producer.send(topic, key=alerts[2]["key"].encode(), value=orjson.dumps(alerts[2]))  # a re-emission
    producer.send(topic, key=b"x", value=b"{not an alert")
    producer.send(topic, key=b"x", value=b'{"alert_id": 5}')
    producer.flush()
    env = {"GRUWATCH_ALERTS_TOPIC": topic}

    def ids(*args: str) -> list[str]:
        result = gruwatch("alerts", "--json", "--no-follow", "--from-beginning", *args, env=env)
        assert result.returncode == 0, result.stderr
        return sorted(orjson.loads(line)["alert_id"] for line in result.stdout.splitlines())

    everything = gruwatch("alerts", "--json", "--no-follow", "--from-beginning", env=env)
    assert sorted(orjson.loads(line)["alert_id"] for line in everything.stdout.splitlines()) == sorted(
        a["alert_id"] for a in alerts
    )
    assert everything.stderr.count("not an alert, skipped") == 2
    assert "4 alerts shown, 1 duplicates dropped, 0 filtered out, 2 malformed skipped" in everything.stderr
    assert ids("--kind", "financial") == ["events.financial:0:2", "events.financial:0:3"]
    assert ids("--min-severity", "high") == ["events.financial:0:3", "events.network:0:1"]
    assert ids("--key", "acct-0007*") == ["events.financial:0:3"]
    assert ids("--since", "2h") == [
        "events.financial:0:2",
        "events.financial:0:3",
        "events.sensor:0:4",
    ]
    assert ids("--kind", "sensor", "--kind", "network", "--since", "1d") == [
        "events.network:0:1",
        "events.sensor:0:4",
    ]
    # The readable form shows a row per alert.
    table = gruwatch("alerts", "--no-follow", "--from-beginning", env=env)
    assert table.returncode == 0 and table.stdout.count("acct-000777") == 1 and "critical" in table.stdout
    # Without --from-beginning, --no-follow has nothing new to show.
    only_new = gruwatch("alerts", "--json", "--no-follow", env=env)
    assert only_new.returncode == 0 and only_new.stdout == ""
    bad = gruwatch("alerts", "--since", "last tuesday", env=env)
    assert bad.returncode == 1 and bad.stderr.strip().startswith("gruwatch: --since:")


def test_demo_runs_to_its_summary_and_leaves_nothing_behind(kafka_up: Settings) -> None:
    result = gruwatch("demo", "--duration", "20", "--rate", "150", "--json", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    summary = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert all(summary["events"][k] > 500 for k in ("network", "financial", "sensor")), summary
    assert summary["alerts"] > 0 and summary["incidents_caught"] > 0
    assert summary["true_alerts"] >= 0.8 * summary["alerts"], summary
    assert sum(k["incidents"] for k in summary["by_kind"].values()) == summary["incidents"]
    assert sum(k["caught"] for k in summary["by_kind"].values()) == summary["incidents_caught"]
    pids = [int(p) for p in re.findall(r"\d+", result.stderr.split("worker pid", 1)[1].split(";", 1)[0])]
    assert len(pids) == 4
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"demo process {pid} is still running")
