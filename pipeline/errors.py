"""The one exception tree of gruwatch.

GruwatchError
├── ConfigError            settings or arguments that cannot work
├── StackError             the local Kafka/Redis stack could not be started or stopped
├── ServiceUnavailable     a service did not answer
│   ├── KafkaUnavailable
│   └── StateStoreUnavailable
├── InvalidEvent           an event broke the contract (carries a precise reason)
├── InputFileError         a file to replay or train on cannot be read
└── ModelLoadError         a model directory is missing, corrupt or of another kind

Third-party errors (kafka-python, redis, OS) are translated into these at the
module that talks to the third party, so callers handle one tree.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GruwatchError",
    "InputFileError",
    "InvalidEvent",
    "KafkaUnavailable",
    "ModelLoadError",
    "ServiceUnavailable",
    "StackError",
    "StateStoreUnavailable",
]


class GruwatchError(Exception):
    """Base of every error gruwatch raises on purpose."""


class ConfigError(GruwatchError):
    """Settings or arguments that cannot work."""


class StackError(GruwatchError):
    """The local Kafka/Redis stack could not be started or stopped."""


class ServiceUnavailable(GruwatchError):
    """A service (Kafka, Redis) did not answer."""


class KafkaUnavailable(ServiceUnavailable):
    """The Kafka cluster did not answer."""


class StateStoreUnavailable(ServiceUnavailable):
    """The state store (Redis) did not answer."""


class InvalidEvent(GruwatchError):
    """An event broke the contract; ``reason`` says how, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InputFileError(GruwatchError):
    """A file to replay or train on cannot be read."""


class ModelLoadError(GruwatchError):
    """A model directory is missing, corrupt or of another kind (from models.artifacts.ModelError)."""
