"""The kafka-python boundary: admin, producer and consumer factories with errors translated."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.errors import KafkaUnavailable
from pipeline.settings import Settings

__all__ = [
    "BATCH_FETCH",
    "admin",
    "aiokafka_security",
    "broker_info",
    "consumer",
    "ensure_topics",
    "producer",
    "security_config",
    "topic_partitions",
]

logger = logging.getLogger(__name__)

# An aiokafka consumer's fetch sizes for batch reading: the worker's, and the bench's transport
# floor reads with the same, so the two compare like for like.
BATCH_FETCH: dict[str, int] = {"fetch_max_bytes": 32 * 1024 * 1024, "max_partition_fetch_bytes": 8 * 1024 * 1024}

# A down broker must be reported in seconds, not after kafka-python's 60 s defaults.
_PROBE_TIMEOUT_MS = 3000


def security_config(settings: Settings) -> dict[str, Any]:
    """kafka-python's security options from the settings (empty for PLAINTEXT)."""
    config: dict[str, Any] = {}
    if settings.kafka_security_protocol != "PLAINTEXT":
        config["security_protocol"] = settings.kafka_security_protocol
    if settings.kafka_sasl_mechanism is not None:
        config["sasl_mechanism"] = settings.kafka_sasl_mechanism
        config["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            config["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    for option, value in (
        ("ssl_cafile", settings.kafka_ssl_cafile),
        ("ssl_certfile", settings.kafka_ssl_certfile),
        ("ssl_keyfile", settings.kafka_ssl_keyfile),
    ):
        if value is not None:
            config[option] = str(value)
    return config


def aiokafka_security(settings: Settings) -> dict[str, Any]:
    """aiokafka's security options: the same settings, with TLS files turned into an SSL context."""
    config = {k: v for k, v in security_config(settings).items() if not k.startswith("ssl_")}
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        config["ssl_context"] = create_ssl_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None,
            certfile=str(settings.kafka_ssl_certfile) if settings.kafka_ssl_certfile else None,
            keyfile=str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
        )
    return config


@contextmanager
def admin(settings: Settings, timeout_ms: int = _PROBE_TIMEOUT_MS) -> Iterator[KafkaAdminClient]:
    """An admin client; raises KafkaUnavailable when no broker answers."""
    try:
        client = KafkaAdminClient(
            bootstrap_servers=settings.kafka_servers,
            client_id="gruwatch-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
            reconnect_backoff_max_ms=500,
            **security_config(settings),
        )
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}") from exc
    try:
        yield client
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap} failed: {exc}") from exc
    finally:
        client.close()


def broker_info(settings: Settings) -> dict[str, Any]:
    """Protocol version, brokers and topics of the cluster, as the status command shows them."""
    with admin(settings) as client:
        cluster = client.describe_cluster()
        broker_ids = [b["broker_id"] for b in cluster["brokers"]]
        version = client.get_broker_version_data(broker_ids[0]) if broker_ids else None
        topics = set(client.list_topics())
    version_text = version.broker_version_str if version is not None else None
    return {
        "cluster_id": cluster["cluster_id"],
        "brokers": len(broker_ids),
        "protocol_version": version_text,
        "topics": sorted(topics),
    }


def topic_partitions(settings: Settings, topics: Iterable[str]) -> dict[str, int]:
    """Partition counts of the topics that exist, by name."""
    wanted = list(topics)
    with admin(settings) as client:
        described = client.describe_topics(wanted)
    return {t["name"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0 and t["partitions"]}


def ensure_topics(settings: Settings, names: Iterable[str], partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the ones created."""
    count = partitions or settings.topic_partitions
    with admin(settings, timeout_ms=15000) as client:
        existing = set(client.list_topics())
        missing = [n for n in dict.fromkeys(names) if n not in existing]
        if not missing:
            return []
        with suppress(TopicAlreadyExistsError):  # another process created it between list and create
            client.create_topics(
                [NewTopic(name=n, num_partitions=count, replication_factor=-1) for n in missing],
                wait_for_metadata=True,
            )
        client.wait_for_topics(missing, timeout_ms=15000)
    logger.info("created topics %s with %d partitions", missing, count)
    return missing


def producer(settings: Settings, **overrides: Any) -> KafkaProducer:
    """A producer tuned for throughput without giving up acknowledged delivery."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_servers,
        "client_id": "gruwatch-producer",
        "linger_ms": settings.producer_linger_ms,
        "batch_size": settings.producer_batch_bytes,
        "acks": settings.producer_acks if settings.producer_acks == "all" else int(settings.producer_acks),
        "compression_type": None if settings.producer_compression == "none" else settings.producer_compression,
        "max_request_size": 4 * 1024 * 1024,
        "bootstrap_timeout_ms": 10000,
        **security_config(settings),
    }
    config.update(overrides)
    try:
        return KafkaProducer(**config)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}") from exc


def consumer(settings: Settings, **overrides: Any) -> KafkaConsumer:
    """A consumer with no group unless one is given: it never steals partitions from anyone."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_servers,
        "client_id": "gruwatch-consumer",
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_bytes": 16 * 1024 * 1024,
        "max_partition_fetch_bytes": 4 * 1024 * 1024,
        "max_poll_records": 5000,
        "bootstrap_timeout_ms": 10000,
        **security_config(settings),
    }
    config.update(overrides)
    try:
        return KafkaConsumer(**config)
    except (KafkaError, OSError) as exc:
        raise KafkaUnavailable(f"Kafka at {settings.kafka_bootstrap} is unreachable: {exc}") from exc
