"""The batched hot path, without Kafka: records in → dead letters, alerts and new states out.

Per batch: decode every record (bad ones become dead letters with a reason); one state read for
every stream in the batch; skip events whose offset is not newer than the stream's stored one
(the effectively-once fence); one model step per wave (the i-th pending event of every stream,
so a stream's events apply in order); alerts from the calibration's episodes. Nothing here
writes: the worker produces, then writes the states, then commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from models.detector import Detector
from pipeline.alerts import build_alert
from pipeline.errors import InvalidEvent
from pipeline.events import Event, decode_event
from pipeline.state import StateStore, StoredState, pack_state, state_key, unpack_state

__all__ = ["BatchOutcome", "BatchScorer", "DeadLetter", "Record"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0  # the record's Kafka timestamp (producer create time)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: Record
    reason: str

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            ("reason", self.reason.encode()),
            ("source.topic", self.record.topic.encode()),
            ("source.partition", str(self.record.partition).encode()),
            ("source.offset", str(self.record.offset).encode()),
        ]


@dataclass
class BatchOutcome:
    dead: list[DeadLetter] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    states: dict[str, bytes] = field(default_factory=dict)
    scored: int = 0
    fenced: int = 0  # redelivered events that were already applied
    ignored_states: int = 0  # stored states of another layout, started afresh
    waves: int = 0


@dataclass
class _Pending:
    kind: str
    stream_key: str
    items: list[tuple[Record, Event]] = field(default_factory=list)


class BatchScorer:
    def __init__(
        self,
        detectors: Mapping[str, Detector],
        topic_kinds: Mapping[str, str],
        store: StateStore,
        namespace: str = "live",
        max_event_bytes: int = 64 * 1024,
        max_event_values: int = 256,
    ) -> None:
        self.detectors = detectors
        self.topic_kinds = topic_kinds
        self.store = store
        self.namespace = namespace
        self.max_event_bytes = max_event_bytes
        self.max_event_values = max_event_values

    def _decode(self, record: Record) -> tuple[str, Event]:
        kind = self.topic_kinds.get(record.topic)
        if kind is None or kind not in self.detectors:
            raise InvalidEvent(f"no model for topic {record.topic!r}")
        if record.value is None:
            raise InvalidEvent("empty value (tombstone)")
        event = decode_event(
            record.value,
            features=self.detectors[kind].spec.names,
            max_bytes=self.max_event_bytes,
            max_values=self.max_event_values,
        )
        if record.key is not None and record.key != event.key.encode():
            raise InvalidEvent(
                f"Kafka key {record.key[:80]!r} differs from the event key (stream order needs them equal)"
            )
        return kind, event

    def key_for(self, kind: str, stream_key: str) -> str:
        return state_key(self.namespace, self.detectors[kind].ident, kind, stream_key)

    async def process(self, records: Sequence[Record]) -> BatchOutcome:
        outcome = BatchOutcome()
        pending: dict[str, _Pending] = {}
        for record in records:
            try:
                kind, event = self._decode(record)
            except InvalidEvent as exc:
                outcome.dead.append(DeadLetter(record, exc.reason))
                continue
            redis_key = self.key_for(kind, event.key)
            pending.setdefault(redis_key, _Pending(kind, event.key)).items.append((record, event))
        if not pending:
            return outcome

        keys = list(pending)
        raw_states = await self.store.get_many(keys)
        states: dict[str, StoredState] = {}
        for redis_key, raw in zip(keys, raw_states, strict=True):
            group = pending[redis_key]
            detector = self.detectors[group.kind]
            stored = unpack_state(raw, detector.model.hidden, detector.spec.norm_size) if raw is not None else None
            if raw is not None and stored is None:
                outcome.ignored_states += 1
                logger.warning(
                    "state %s has another layout or model size; starting the stream afresh",
                    redis_key,
                )
            first = group.items[0][0]
            if stored is not None and (
                len(group.items) > 1 or (first.partition == stored.partition and first.offset <= stored.offset)
            ):
                # The fence: a stream lives in one partition, so its offsets only grow.
                before = len(group.items)
                group.items = [
                    (r, e) for r, e in group.items if r.partition != stored.partition or r.offset > stored.offset
                ]
                outcome.fenced += before - len(group.items)
            states[redis_key] = stored or StoredState(detector.new_state(), -1, -1)

        # Wave i holds the i-th pending event of every stream that has one: one model call per kind.
        waves: list[dict[str, list[str]]] = []
        for redis_key, group in pending.items():
            for i in range(len(group.items)):
                if i == len(waves):
                    waves.append({})
                waves[i].setdefault(group.kind, []).append(redis_key)
        for wave, by_kind in enumerate(waves):
            for kind, redis_keys in by_kind.items():
                detector = self.detectors[kind]
                batch = [pending[k].items[wave] for k in redis_keys]
                results, new_states = detector.step(
                    [states[k].stream for k in redis_keys], [(e.ts, e.values) for _, e in batch]
                )
                for redis_key, (record, event), result, new in zip(redis_keys, batch, results, new_states, strict=True):
                    states[redis_key] = StoredState(new, record.partition, record.offset)
                    if result.alert:
                        outcome.alerts.append(
                            build_alert(
                                event,
                                result,
                                detector,
                                kind,
                                record.topic,
                                record.partition,
                                record.offset,
                            )
                        )
                outcome.scored += len(batch)
        outcome.waves = len(waves)
        outcome.states = {k: pack_state(states[k]) for k, g in pending.items() if g.items}
        return outcome
