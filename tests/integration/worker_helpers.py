"""Helpers for worker tests: run workers as processes, wait on committed offsets, read states."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
from kafka import TopicPartition

from pipeline import kafka
from pipeline.errors import KafkaUnavailable
from pipeline.settings import Settings
from pipeline.state import StateShape, StoredState, unpack_state
from tests.conftest import free_port

HIDDEN = 64


@dataclass
class WorkerEnv:
    """Everything one worker run needs to be isolated: topics, group, namespace, Redis."""

    topic: str
    kind: str = "network"
    group: str = field(default_factory=lambda: f"g-{uuid.uuid4().hex[:8]}")
    namespace: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    alerts: str = field(default_factory=lambda: f"alerts-{uuid.uuid4().hex[:8]}")
    deadletters: str = field(default_factory=lambda: f"dlq-{uuid.uuid4().hex[:8]}")
    redis_url: str = "redis://127.0.0.1:6379/0"
    http_port: int = 0

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "GRUWATCH_TOPICS": orjson.dumps({self.topic: self.kind}).decode(),
            "GRUWATCH_GROUP_ID": self.group,
            "GRUWATCH_NAMESPACE": self.namespace,
            "GRUWATCH_ALERTS_TOPIC": self.alerts,
            "GRUWATCH_DEADLETTER_TOPIC": self.deadletters,
            "GRUWATCH_REDIS_URL": self.redis_url,
            "GRUWATCH_HTTP_PORT": str(self.http_port),
            "GRUWATCH_STATE_TTL_S": "3600",
        }

    def start(self, *extra: str, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline", "worker", *extra],
            env={**self.env(), **(extra_env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def run(self, *extra: str, timeout: float = 180) -> str:
        """Run a worker until it has been idle 2 s; returns its stderr."""
        proc = self.start("--idle-exit", "2", *extra)
        _, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err[-3000:]
        return err

    def with_health_port(self) -> WorkerEnv:
        self.http_port = free_port()
        return self


def committed(settings: Settings, group: str, topic: str) -> int:
    """Sum of the group's committed offsets on the topic (0 before the first commit)."""
    try:
        with kafka.admin(settings, timeout_ms=5000) as client:
            offsets = client.list_group_offsets({group: None}).get(group, {})
    except KafkaUnavailable:
        return -1  # no coordinator yet, or it is moving: unknown for now
    return sum(o.offset for tp, o in offsets.items() if tp.topic == topic and o.offset > 0)


def group_members(settings: Settings, group: str) -> int:
    """Members of the consumer group once it is stable (-1 while it rebalances)."""
    with kafka.admin(settings) as client:
        described = client.describe_groups([group])[group]
    return len(described["members"]) if described["group_state"] == "Stable" else -1


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_states(url: str, namespace: str, cluster: bool = False) -> dict[str, StoredState]:
    """Every stream state of a namespace, by stream key (on one Redis or a Redis Cluster)."""
    client = redis.RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter(match=f"gw:{namespace}:*", count=1000):
        state = unpack_state(client.get(key), StateShape(HIDDEN))
        assert state is not None
        stream = key.decode().rsplit(":{", 1)[1][:-1]
        out[stream] = state
    client.close()
    return out


def read_topic(settings: Settings, topic: str) -> list[Any]:
    consumer = kafka.consumer(settings, consumer_timeout_ms=3000)
    parts = consumer.partitions_for_topic(topic) or set()
    tps = [TopicPartition(topic, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    end = consumer.end_offsets(tps)
    records = []
    while any(consumer.position(tp) < end[tp] for tp in tps):
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    consumer.close()
    return records


def produce_events(settings: Settings, topic: str, events: list[dict[str, Any]]) -> None:
    producer = kafka.producer(settings)
    for e in events:
        producer.send(topic, key=e["key"].encode(), value=orjson.dumps(e))
    producer.flush()
    producer.close()


def assert_same_states(got: dict[str, StoredState], want: dict[str, StoredState], atol: float = 1e-4) -> None:
    import numpy as np

    assert got.keys() == want.keys(), f"{len(got)} streams vs {len(want)}"
    for key, b in want.items():
        a = got[key]
        assert (a.partition, a.offset, a.count, a.stream.last_ts) == (
            b.partition,
            b.offset,
            b.count,
            b.stream.last_ts,
        ), key
        np.testing.assert_allclose(a.stream.h, b.stream.h, atol=atol)
