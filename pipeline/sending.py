"""A paced, acknowledged Kafka sender shared by `produce` and `replay`."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from kafka.errors import KafkaError

from pipeline import kafka
from pipeline.errors import KafkaUnavailable
from pipeline.pacing import Pacer
from pipeline.settings import Settings

__all__ = ["Sender"]


class Sender:
    """Sends keyed values to one topic; on exit it flushes and fails loudly if any send was not acked."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        pacer: Pacer | None = None,
        producer_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.pacer = pacer or Pacer()
        self.sent = 0
        self._failures: list[BaseException] = []
        self._producer = kafka.producer(settings, **(producer_overrides or {}))

    def send(self, key: str, ts_ms: int, value: bytes) -> None:
        self.pacer.wait(ts_ms)
        try:
            future = self._producer.send(self.topic, key=key.encode(), value=value)
        except KafkaError as exc:
            raise KafkaUnavailable(f"sending to {self.topic} failed: {exc}") from exc
        future.add_errback(self._failures.append)
        self.sent += 1

    def __enter__(self) -> Sender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._producer.flush()
        except KafkaError as error:
            if exc is None:
                raise KafkaUnavailable(f"flushing to {self.topic} failed: {error}") from error
        finally:
            self._producer.close()
        if exc is None and self._failures:
            raise KafkaUnavailable(
                f"{len(self._failures)} of {self.sent} events to {self.topic} were not acknowledged: "
                f"{self._failures[0]}"
            )
