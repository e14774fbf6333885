"""The worker on a real 3-master Redis Cluster, with a node restarted mid-stream."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pipeline.settings import Settings
from tests.cluster.redis_cluster import LocalRedisCluster
from tests.integration.test_worker import EVENTS, reference, stream_topic  # noqa: F401  (fixtures)
from tests.integration.worker_helpers import WorkerEnv, assert_same_states, committed, read_states, wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    local = LocalRedisCluster(tmp_path / "cluster")
    local.start()
    yield local
    local.stop()


def test_worker_on_a_cluster_survives_a_node_restart(
    kafka_up: Settings,
    cluster: LocalRedisCluster,
    stream_topic: tuple[str, list[dict[str, Any]]],  # noqa: F811
    reference: tuple[WorkerEnv, dict[str, Any], list[Any]],  # noqa: F811
) -> None:
    topic, _ = stream_topic
    _, ref_states, _ = reference
    env = WorkerEnv(topic, redis_url=cluster.url)
    worker_env = {"GRUWATCH_REDIS_CLUSTER": "true"}
    proc = env.start("--batch-size", "200", "--idle-exit", "8", extra_env=worker_env)
    try:
        wait_for(lambda: committed(kafka_up, env.group, topic) >= EVENTS // 4, 120, "a quarter committed")
        victim = cluster.ports[1]
        cluster.stop_node(victim)
        stalled = committed(kafka_up, env.group, topic)
        cluster.start_node(victim)
        wait_for(cluster.healthy, 60, "the cluster to be whole again")
        wait_for(lambda: committed(kafka_up, env.group, topic) == EVENTS, 180, "the lag to drain")
        assert stalled < EVENTS
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    states = read_states(cluster.url, env.namespace, cluster=True)
    # Keys spread over all three masters …
    masters = {cluster_node for cluster_node in redis.RedisCluster.from_url(cluster.url).get_primaries()}
    assert len(masters) == 3
    # … and every stream applied each event once, exactly as on one Redis.
    assert_same_states(states, ref_states)
