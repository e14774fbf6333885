"""`gruwatch up` / `status` / `down` on the real stack."""

from __future__ import annotations

from pathlib import Path

import orjson

from pipeline.settings import Settings
from tests.conftest import free_port, gruwatch


def test_up_twice_on_the_running_stack_is_harmless(kafka_up: Settings, redis_client: object) -> None:
    before = orjson.loads(gruwatch("status", "--json").stdout)
    result = gruwatch("up")
    assert result.returncode == 0, result.stderr
    assert "kafka  running" in result.stderr and "redis  running" in result.stderr
    after = orjson.loads(gruwatch("status", "--json").stdout)
    assert after["kafka"]["up"] and after["redis"]["up"]
    assert after["kafka"]["pid"] == before["kafka"]["pid"]
    assert after["redis"]["pid"] == before["redis"]["pid"]
    assert all(t["exists"] for t in after["kafka"]["details"]["topics"].values())


def test_up_without_services_creates_missing_topics(kafka_up: Settings, tmp_path: Path) -> None:
    """Against an existing Kafka: `up --no-kafka --no-redis` only creates gruwatch's topics."""
    import uuid

    from pipeline import kafka

    prefix = f"t{uuid.uuid4().hex[:8]}"
    env = {
        "GRUWATCH_TOPICS": orjson.dumps({f"{prefix}.flows": "network"}).decode(),
        "GRUWATCH_ALERTS_TOPIC": f"{prefix}.alerts",
        "GRUWATCH_DEADLETTER_TOPIC": f"{prefix}.dlq",
        "GRUWATCH_TOPIC_PARTITIONS": "3",
    }
    result = gruwatch("up", "--no-kafka", "--no-redis", env=env)
    assert result.returncode == 0, result.stderr
    names = [f"{prefix}.flows", f"{prefix}.alerts", f"{prefix}.dlq"]
    assert kafka.topic_partitions(kafka_up, names) == dict.fromkeys(names, 3)
    assert "topics present" in gruwatch("up", "--no-kafka", "--no-redis", env=env).stderr
    with kafka.admin(kafka_up, timeout_ms=15000) as client:
        client.delete_topics(names)


def test_fresh_stack_lifecycle_on_other_ports(tmp_path: Path) -> None:
    """A second, throw-away stack: formatted fresh, started, found running, stopped, reported down."""
    env = {
        "GRUWATCH_DATA_DIR": str(tmp_path / "stack"),
        "GRUWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "GRUWATCH_KAFKA_CONTROLLER_PORT": str(free_port()),
        "GRUWATCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "GRUWATCH_KAFKA_HEAP": "384m",
    }
    try:
        first = gruwatch("up", env=env)
        assert first.returncode == 0, first.stderr
        assert "kafka  started" in first.stderr and "redis  started" in first.stderr
        assert (tmp_path / "stack" / "kafka" / "data" / "meta.properties").exists()

        status = gruwatch("status", "--json", env=env)
        assert status.returncode == 0, status.stderr
        report = orjson.loads(status.stdout)
        assert report["kafka"]["up"] and report["kafka"]["managed"]
        assert report["kafka"]["version"].startswith("4.")
        assert report["redis"]["up"] and report["redis"]["version"]
        assert report["kafka"]["details"]["topics"]["anomaly-alerts"]["exists"]

        second = gruwatch("up", env=env)
        assert second.returncode == 0
        assert "kafka  running" in second.stderr and "redis  running" in second.stderr
        assert orjson.loads(gruwatch("status", "--json", env=env).stdout)["kafka"]["pid"] == report["kafka"]["pid"]
    finally:
        down = gruwatch("down", env=env)
    assert down.returncode == 0, down.stderr
    assert "kafka  stopped" in down.stderr and "redis  stopped" in down.stderr
    stopped = gruwatch("status", "--json", env=env)
    assert stopped.returncode == 1
    report = orjson.loads(stopped.stdout)
    assert report["kafka"]["up"] is False and report["redis"]["up"] is False
