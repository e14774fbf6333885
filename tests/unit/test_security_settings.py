"""Kafka SASL/SSL and Redis ACL/TLS come from the settings; secrets never show in logs or status."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pipeline.kafka import aiokafka_security, security_config
from pipeline.settings import Settings


def test_plaintext_adds_nothing() -> None:
    assert security_config(Settings()) == {}
    assert aiokafka_security(Settings()) == {}


def test_sasl_ssl_reaches_both_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("GRUWATCH_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("GRUWATCH_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("GRUWATCH_KAFKA_SASL_USERNAME", "gruwatch")
    monkeypatch.setenv("GRUWATCH_KAFKA_SASL_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("GRUWATCH_KAFKA_SSL_CAFILE", str(ca))
    monkeypatch.setenv("GRUWATCH_REDIS_URL", "rediss://gruwatch:redis-secret@cache:6380/0")
    settings = Settings()
    kp = security_config(settings)
    assert kp == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "gruwatch",
        "sasl_plain_password": "hunter2-secret",
        "ssl_cafile": str(ca),
    }
    aio = aiokafka_security(settings)
    assert aio["security_protocol"] == "SASL_SSL" and isinstance(aio["ssl_context"], ssl.SSLContext)
    assert "ssl_cafile" not in aio
    shown = str(settings.masked()) + repr(settings)
    assert "hunter2-secret" not in shown and "redis-secret" not in shown


def test_unknown_security_protocol_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRUWATCH_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValueError):
        Settings()
