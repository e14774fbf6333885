"""The real services answer: Kafka produce/consume, a Faust agent round trip, Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import redis
from kafka import TopicPartition

from pipeline import kafka
from pipeline.settings import Settings


def consume_all(settings: Settings, topic: str, expected: int, timeout_s: float = 30) -> list[tuple[bytes, bytes]]:
    """Read a topic from the start until ``expected`` records arrived (or the timeout)."""
    consumer = kafka.consumer(settings, consumer_timeout_ms=int(timeout_s * 1000))
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or []]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    records = []
    for message in consumer:
        records.append((message.key, message.value))
        if len(records) >= expected:
            break
    consumer.close()
    return records


def test_topic_produce_consume(kafka_up: Settings, new_topic: Callable[..., str]) -> None:
    topic = new_topic(partitions=3)
    assert kafka.topic_partitions(kafka_up, [topic]) == {topic: 3}
    producer = kafka.producer(kafka_up)
    sent = [(f"key-{i % 7}".encode(), f"value-{i}".encode()) for i in range(300)]
    for key, value in sent:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()
    received = consume_all(kafka_up, topic, len(sent))
    assert sorted(received) == sorted(sent)
    # Per-key order holds: a key maps to one partition.
    for key in {k for k, _ in sent}:
        assert [v for k, v in received if k == key] == [v for k, v in sent if k == key]


def test_faust_agent_round_trip(kafka_up: Settings, new_topic: Callable[..., str], tmp_path: Path) -> None:
    source, sink = new_topic(), new_topic()
    env = {
        **os.environ,
        "RELAY_APP_ID": f"relay-{uuid.uuid4().hex[:8]}",
        "RELAY_IN": source,
        "RELAY_OUT": sink,
        "PYTHONPATH": str(Path(__file__).parent),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "faust",
            "-A",
            "faust_relay",
            "--datadir",
            str(tmp_path),
            "worker",
            "-l",
            "warn",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = kafka.producer(kafka_up)
        for i in range(20):
            producer.send(source, key=b"k", value=f"hello-{i}".encode())
        producer.flush()
        received = consume_all(kafka_up, sink, 20, timeout_s=90)
    finally:
        worker.terminate()
        output = worker.communicate(timeout=60)[0].decode(errors="replace")
    assert [v for _, v in received] == [f"HELLO-{i}".encode() for i in range(20)], output[-2000:]


def test_redis_round_trip(redis_client: redis.Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    keys = [f"{prefix}:{i}" for i in range(100)]
    values = [os.urandom(64) for _ in keys]
    with redis_client.pipeline(transaction=True) as pipe:
        for key, value in zip(keys, values, strict=True):
            pipe.set(key, value, ex=60)
        pipe.execute()
    assert redis_client.mget(keys) == values
    assert 0 < redis_client.ttl(keys[0]) <= 60
    redis_client.delete(*keys)
    assert redis_client.mget(keys) == [None] * len(keys)
