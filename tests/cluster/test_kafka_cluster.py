"""The worker on a local 3-broker KRaft cluster (RF 3, min.insync.replicas 2), one broker stopped mid-stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import kafka
from pipeline.settings import Settings
from pipeline.stack import LocalKafka
from tests.conftest import free_port
from tests.integration.test_worker import EVENTS, reference, stream_topic  # noqa: F401  (fixtures)
from tests.integration.worker_helpers import (
    WorkerEnv,
    assert_same_states,
    committed,
    produce_events,
    read_states,
    wait_for,
)


@pytest.fixture
def cluster_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    ports: list[int] = []
    while len(ports) < 3:
        port = free_port(pair=True)
        if all(abs(port - p) > 1 for p in ports):
            ports.append(port)
    env = {
        "GRUWATCH_DATA_DIR": str(tmp_path / "stack"),
        "GRUWATCH_KAFKA_BOOTSTRAP": ",".join(f"127.0.0.1:{p}" for p in ports),
        "GRUWATCH_KAFKA_HEAP": "384m",
    }
    up = subprocess.run(
        [sys.executable, "-m", "pipeline", "up", "--no-redis"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, **env},
    )
    assert up.returncode == 0, up.stderr
    assert "kafka  started" in up.stderr
    yield env
    subprocess.run(
        [sys.executable, "-m", "pipeline", "down", "--no-redis"],
        capture_output=True,
        timeout=180,
        env={**os.environ, **env},
    )


def test_worker_on_three_brokers_survives_one_stopping(
    cluster_env: dict[str, str],
    stream_topic: tuple[str, list[dict[str, Any]]],  # noqa: F811
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],  # noqa: F811
) -> None:
    _, events = stream_topic
    _, ref_states, _ = reference
    settings = Settings(
        kafka_bootstrap=cluster_env["GRUWATCH_KAFKA_BOOTSTRAP"], data_dir=Path(cluster_env["GRUWATCH_DATA_DIR"])
    )
    assert kafka.broker_info(settings)["brokers"] == 3
    topic = "cluster-events"
    kafka.ensure_topics(settings, [topic], partitions=4)
    with kafka.admin(settings) as client:
        (described,) = client.describe_topics([topic])
        assert all(len(p["replica_nodes"]) == 3 for p in described["partitions"])
    for node in LocalKafka(settings).nodes:
        rendered = node.config_file.read_text().splitlines()
        assert "min.insync.replicas=2" in rendered and "default.replication.factor=3" in rendered
    half = EVENTS // 2
    produce_events(settings, topic, events[:half])

    env = WorkerEnv(topic)
    worker = env.start(
        "--batch-size", "200", extra_env={"GRUWATCH_KAFKA_BOOTSTRAP": cluster_env["GRUWATCH_KAFKA_BOOTSTRAP"]}
    )
    try:
        wait_for(lambda: committed(settings, env.group, topic) == half, 180, "the first half committed")
        nodes = LocalKafka(settings).nodes
        assert nodes[1].stop()  # a controlled shutdown: its partitions' leadership moves
        survivors = settings.model_copy(update={"kafka_bootstrap": f"{nodes[0].address},{nodes[2].address}"})
        # The stream goes on with one broker down: acks=all still succeeds with 2 in sync.
        produce_events(survivors, topic, events[half:])
        wait_for(lambda: committed(survivors, env.group, topic) == EVENTS, 240, "the lag to drain on two brokers")
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err[-2000:]
    assert_same_states(read_states(env.redis_url, env.namespace), ref_states)
