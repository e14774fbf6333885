from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipeline.settings import Settings


def test_defaults_are_the_local_stack() -> None:
    s = Settings()
    assert s.kafka_servers == ["127.0.0.1:9092"]
    assert s.redis_host_port == ("127.0.0.1", 6379)
    assert s.topic_for("network") == "events.network"
    assert s.alerts_topic == "anomaly-alerts" and s.deadletter_topic == "events.deadletter"


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRUWATCH_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    monkeypatch.setenv("GRUWATCH_TOPICS", '{"flows": "network"}')
    monkeypatch.setenv("GRUWATCH_REDIS_URL", "redis://:s3cret@cache:6380/2")
    s = Settings()
    assert s.kafka_servers == ["kafka-1:9092", "kafka-2:9092"]
    assert s.topics == {"flows": "network"}
    assert s.redis_host_port == ("cache", 6380)
    assert "s3cret" not in str(s.masked())


def test_rejects_bootstrap_without_port() -> None:
    with pytest.raises(ValidationError):
        Settings(kafka_bootstrap="localhost")


def test_rejects_unknown_kind() -> None:
    with pytest.raises(ValidationError):
        Settings(topics={"x": "weather"})  # type: ignore[dict-item]
