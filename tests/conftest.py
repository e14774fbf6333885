"""Shared fixtures. Integration tests (tests/integration) need the real Kafka and Redis that
`make up` starts; they skip when those are missing, and fail instead under
GRUWATCH_REQUIRE_SERVICES=1 (what `make test` and CI set)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from pipeline import kafka
from pipeline.errors import KafkaUnavailable
from pipeline.settings import Settings

REQUIRE_SERVICES = os.environ.get("GRUWATCH_REQUIRE_SERVICES") == "1"
INTEGRATION_DIR = Path(__file__).parent / "integration"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


def _missing(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (GRUWATCH_REQUIRE_SERVICES=1: a missing service is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings()


@pytest.fixture(scope="session")
def kafka_up(settings: Settings) -> Settings:
    try:
        kafka.broker_info(settings)
    except KafkaUnavailable as exc:
        _missing(f"Kafka is not reachable: {exc}")
    return settings


@pytest.fixture(scope="session")
def redis_client(settings: Settings) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _missing(f"Redis is not reachable: {exc}")
    yield client
    client.close()


@pytest.fixture
def new_topic(kafka_up: Settings) -> Iterator[Callable[..., str]]:
    """Factory: a fresh uuid-named topic; all are deleted after the test."""
    created: list[str] = []

    def make(partitions: int = 1, prefix: str = "test") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        kafka.ensure_topics(kafka_up, [name], partitions=partitions)
        created.append(name)
        return name

    yield make
    if created:
        with kafka.admin(kafka_up, timeout_ms=15000) as client:
            client.delete_topics(created)


def find_nab() -> Path | None:
    """The Numenta Anomaly Benchmark: GRUWATCH_NAB_DIR, or the project's shared folder."""
    candidates = [
        os.environ.get("GRUWATCH_NAB_DIR", ""),
        Path(__file__).resolve().parents[2] / "shared/datasets/nab",
        "/work/shared/datasets/nab",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "labels" / "combined_windows.json").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def nab_dir() -> Path:
    found = find_nab()
    if found is None:
        _missing("the NAB data set is not found (set GRUWATCH_NAB_DIR)")
    assert found is not None
    return found


def gruwatch(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the `gruwatch` command as a user would (a separate process), with extra environment."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


# Below Linux's ephemeral range (32768+): a port the OS hands out for port 0 can be taken by any
# outgoing connection before the server we start binds it.
_PORT_RANGE = (20000, 32000)


def free_port(pair: bool = False) -> int:
    """A port on 127.0.0.1 nobody listens on (with ``pair``, the next one is free too)."""
    for _ in range(500):
        port = random.randrange(*_PORT_RANGE)
        try:
            with socket.socket() as first, socket.socket() as second:
                first.bind(("127.0.0.1", port))
                if pair:
                    second.bind(("127.0.0.1", port + 1))
            return port
        except OSError:
            continue
    raise RuntimeError("no free port found")
