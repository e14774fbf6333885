"""One typed, frozen settings object, read from ``GRUWATCH_*`` environment variables."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KINDS", "Kind", "Settings", "get_settings", "project_home"]

logger = logging.getLogger(__name__)

Kind = Literal["network", "financial", "sensor", "generic"]
KINDS: tuple[Kind, ...] = ("network", "financial", "sensor", "generic")


def project_home() -> Path:
    """The checkout gruwatch runs from: the folder holding ``deploy/`` next to the packages."""
    return Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Everything a gruwatch command reads from its environment.

    Every field can be set as ``GRUWATCH_<FIELD>``; mappings take JSON, e.g.
    ``GRUWATCH_TOPICS='{"flows": "network"}'``.
    """

    model_config = SettingsConfigDict(env_prefix="GRUWATCH_", frozen=True, extra="ignore")

    kafka_bootstrap: str = "127.0.0.1:9092"
    # Kafka security (passed to every Kafka client gruwatch makes).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None

    # redis://user:password@host:port/db for ACLs; rediss:// for TLS (with redis_ssl_ca_certs).
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    redis_ssl_ca_certs: Path | None = None
    # A Redis Cluster: GRUWATCH_REDIS_URL names any one node (database 0).
    redis_cluster: bool = False

    topics: dict[str, Kind] = Field(
        default_factory=lambda: {  # type: ignore[arg-type]
            "events.network": "network",
            "events.financial": "financial",
            "events.sensor": "sensor",
            "events.generic": "generic",
        }
    )
    alerts_topic: str = "anomaly-alerts"
    deadletter_topic: str = "events.deadletter"
    topic_partitions: int = Field(default=4, ge=1)

    home: Path = Field(default_factory=project_home)
    data_dir: Path | None = None
    kafka_heap: str = "512m"
    kafka_controller_port: int | None = None
    kafka_start_timeout_s: float = 60.0

    # Producer tuning (measured with `gruwatch bench --only replay`).
    producer_linger_ms: int = 20
    producer_batch_bytes: int = 512 * 1024
    # gzip: ~20% more events/s than none here (less to write), and every client decodes it.
    producer_compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = "gzip"
    producer_acks: Literal["0", "1", "all"] = "all"

    # The worker.
    group_id: str = "gruwatch-worker"
    # Where a new consumer group starts: the oldest record, or only new ones.
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    namespace: str = "live"
    model_dirs: dict[Kind, Path] = Field(default_factory=dict)  # default: the shipped models
    batch_size: int = Field(default=10_000, ge=1)
    # Worker processes in one consumer group (the hot path holds the GIL: one per core to use them all).
    worker_processes: int = Field(default=1, ge=1, le=64)
    batch_max_wait_ms: int = Field(default=50, ge=1)
    state_ttl_s: int | None = Field(default=7 * 86400, ge=1)
    http_host: str = "127.0.0.1"
    http_port: int = 8099  # /health and /metrics; 0 = off
    retry_backoff_max_s: float = 10.0

    max_event_bytes: int = Field(default=64 * 1024, ge=256)
    max_event_values: int = Field(default=256, ge=1)

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_port(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port…], got {value!r}")
        return value

    @property
    def state_dir(self) -> Path:
        """Where the local stack keeps its data (git-ignored)."""
        return self.data_dir if self.data_dir is not None else self.home / ".gruwatch"

    @property
    def kafka_servers(self) -> list[str]:
        return [s.strip() for s in self.kafka_bootstrap.split(",")]

    @property
    def redis_host_port(self) -> tuple[str, int]:
        parts = urlsplit(self.redis_url.get_secret_value())
        return parts.hostname or "127.0.0.1", parts.port or 6379

    def topics_for(self, kind: Kind) -> list[str]:
        return [topic for topic, k in self.topics.items() if k == kind]

    def topic_for(self, kind: Kind) -> str:
        topics = self.topics_for(kind)
        if not topics:
            from pipeline.errors import ConfigError

            raise ConfigError(f"no topic is mapped to kind {kind!r} (GRUWATCH_TOPICS)")
        return topics[0]

    def masked(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for logs."""
        return self.model_dump(mode="json")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
