"""produce → record → replay → record on the real broker, bad lines, NAB replay."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from pipeline.settings import Settings
from producers.network import NetworkGenerator
from tests.conftest import gruwatch


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def per_key(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        streams[event["key"]].append(event)
    return dict(streams)


def test_produce_record_replay_record_keeps_every_stream(
    kafka_up: Settings, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    first, second = new_topic(partitions=3), new_topic(partitions=2)
    args = ("--count", "3000", "--keys", "40", "--seed", "9", "--anomaly-rate", "0.01")
    produced = gruwatch("produce", "network", *args, "--topic", first, "--no-progress")
    assert produced.returncode == 0, produced.stderr
    expected = list(NetworkGenerator(keys=40, seed=9, anomaly_rate=0.01).events(3000))

    recorded = tmp_path / "first.jsonl"
    result = gruwatch("record", first, "-o", str(recorded), "--from-beginning", "--to-end", "--json")
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stderr.strip().splitlines()[-1])["written"] == 3000

    replayed = gruwatch("replay", str(recorded), "--topic", second, "--no-progress", "--json")
    assert replayed.returncode == 0, replayed.stderr
    summary = orjson.loads(replayed.stdout)
    assert summary["sent"] == 3000 and summary["bad_lines"] == 0 and summary["streams"] == 40

    again = tmp_path / "second.jsonl"
    assert gruwatch("record", second, "-o", str(again), "--from-beginning", "--to-end").returncode == 0

    assert per_key(read_jsonl(recorded)) == per_key(expected)
    assert per_key(read_jsonl(again)) == per_key(expected)


def test_replay_reports_bad_lines_and_sends_the_good_ones(
    kafka_up: Settings, new_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = new_topic()
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"key":"a","ts":1764075600000,"values":{"x":1}}\n'
        '{"key":"a","ts":1764075601000,"values":{"x":NaN}}\n'
        "{broken\n"
        '{"key":"b","ts":"2025-11-25T13:00:02Z","values":{"x":2}}\n'
        '{"key":"b","ts":1764075603000}\n'
    )
    result = gruwatch("replay", str(path), "--topic", topic, "--no-progress", "--json")
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout) | {"elapsed_s": 0, "events_per_s": 0} == {
        "files": 1,
        "sent": 2,
        "bad_lines": 3,
        "streams": 2,
        "elapsed_s": 0,
        "events_per_s": 0,
    }
    for line, reason in ((2, "NaN"), (3, "not valid JSON"), (5, "missing field 'values'")):
        assert any(f"{path}:{line}:" in row and reason in row for row in result.stderr.splitlines()), result.stderr
    out = tmp_path / "out.jsonl"
    assert gruwatch("record", topic, "-o", str(out), "--from-beginning", "--to-end").returncode == 0
    assert [(e["key"], e["ts"], e["values"]) for e in read_jsonl(out)] == [
        ("a", 1764075600000, {"x": 1.0}),
        ("b", 1764075602000, {"x": 2.0}),
    ]

    strict = gruwatch("replay", str(path), "--topic", topic, "--strict", "--no-progress")
    assert strict.returncode == 1
    assert f"{path}:2:" in strict.stderr.strip().splitlines()[-1]


def test_replay_nab_folder_sends_all_seven_files(
    kafka_up: Settings, new_topic: Callable[..., str], tmp_path: Path, nab_dir: Path
) -> None:
    topic = new_topic(partitions=4)
    folder = nab_dir / "data" / "realKnownCause"
    rows = sum(len(f.read_text().splitlines()) - 1 for f in folder.glob("*.csv"))
    result = gruwatch("replay", str(folder), "--format", "nab", "--topic", topic, "--no-progress", "--json")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    assert summary["files"] == 7 and summary["streams"] == 7 and summary["sent"] == rows
    out = tmp_path / "nab.jsonl"
    assert gruwatch("record", topic, "-o", str(out), "--from-beginning", "--to-end").returncode == 0
    streams = per_key(read_jsonl(out))
    assert sorted(streams) == sorted(f.stem for f in folder.glob("*.csv"))
    assert sum(len(s) for s in streams.values()) == rows


def test_record_stops_at_max_and_when_idle(kafka_up: Settings, new_topic: Callable[..., str], tmp_path: Path) -> None:
    topic = new_topic()
    assert (
        gruwatch("produce", "sensor", "--count", "500", "--keys", "5", "--topic", topic, "--no-progress").returncode
        == 0
    )
    out = tmp_path / "max.jsonl"
    assert gruwatch("record", topic, "-o", str(out), "--from-beginning", "--max", "123").returncode == 0
    assert len(read_jsonl(out)) == 123
    idle = tmp_path / "idle.jsonl"
    result = gruwatch("record", topic, "-o", str(idle), "--from-beginning", "--idle-timeout", "2")
    assert result.returncode == 0
    assert len(read_jsonl(idle)) == 500


def test_record_of_a_missing_topic_is_one_line(kafka_up: Settings) -> None:
    result = gruwatch("record", "no-such-topic-here", "--to-end", "-o", os.devnull)
    assert result.returncode == 1
    assert result.stderr.strip() == "gruwatch: topic 'no-such-topic-here' does not exist"
