"""The batched hot path, without Kafka: records in → dead letters, alerts and new states out.

Per batch: decode every record (bad ones become dead letters with a reason); one state read for
every stream in the batch; skip events whose offset is not newer than the stream's stored one
(the effectively-once fence); one ``step_batch`` call per kind with every stream's run of
pending events (applied in order); alerts from the calibration's episodes. States
stay in arrays from the MGET reply to the packed values: an object per stream cost more than the
model. Nothing here writes: the worker produces, then writes the states, then commits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from models.detector import Detector
from pipeline.alerts import build_alert
from pipeline.errors import InvalidEvent
from pipeline.events import Event, decode_event
from pipeline.state import StateStore, StoredBatch, pack_states, prefixed_state_key, state_key_prefix, unpack_states

__all__ = ["BatchOutcome", "BatchScorer", "DeadLetter", "KafkaRecord", "Record"]

logger = logging.getLogger(__name__)


class KafkaRecord(Protocol):
    """What the scorer reads of a consumed record: aiokafka's ConsumerRecord as it comes (the
    worker makes no object of its own per record) or a ``Record``."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...  # the record's Kafka timestamp (producer create time), epoch ms


class Record(NamedTuple):
    """A consumed record made by hand (tests, tools)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: KafkaRecord
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
    items: list[tuple[KafkaRecord, Event]] = field(default_factory=list)


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
        self._features = {kind: frozenset(d.spec.names) for kind, d in detectors.items()}
        self._key_prefixes = {kind: state_key_prefix(namespace, d.ident, kind) for kind, d in detectors.items()}

    def _decode(self, record: KafkaRecord, kind: str | None) -> Event:
        """The record's event, or InvalidEvent with the reason (``kind``: its topic's, if any)."""
        if kind is None:
            raise InvalidEvent(f"no model for topic {record.topic!r}")
        if record.value is None:
            raise InvalidEvent("empty value (tombstone)")
        event = decode_event(
            record.value,
            features=self._features[kind],
            max_bytes=self.max_event_bytes,
            max_values=self.max_event_values,
        )
        if record.key is not None and record.key != event.key.encode():
            raise InvalidEvent(
                f"Kafka key {record.key[:80]!r} differs from the event key (stream order needs them equal)"
            )
        return event

    def key_for(self, kind: str, stream_key: str) -> str:
        return prefixed_state_key(self._key_prefixes[kind], stream_key)  # the prefix is built once

    async def process(self, records: Sequence[KafkaRecord]) -> BatchOutcome:
        outcome = BatchOutcome()
        pending: dict[str, _Pending] = {}
        topic, kind, prefix = None, None, ""
        for record in records:
            if record.topic != topic:  # records come partition by partition: look up rarely
                topic = record.topic
                kind = self.topic_kinds.get(topic)
                kind = kind if kind in self.detectors else None
                prefix = self._key_prefixes[kind] if kind is not None else ""
            try:
                event = self._decode(record, kind)
            except InvalidEvent as exc:
                outcome.dead.append(DeadLetter(record, exc.reason))
                continue
            redis_key = prefixed_state_key(prefix, event.key)
            group = pending.get(redis_key)
            if group is None:
                group = pending[redis_key] = _Pending(kind, event.key)  # type: ignore[arg-type]  # kind is set
            group.items.append((record, event))
        if not pending:
            return outcome

        keys = list(pending)
        raw_states = dict(zip(keys, await self.store.get_many(keys), strict=True))
        by_kind: dict[str, list[str]] = {}
        for redis_key, group in pending.items():
            by_kind.setdefault(group.kind, []).append(redis_key)
        for kind, kind_keys in by_kind.items():
            states = self._advance(kind, kind_keys, [pending[k] for k in kind_keys], raw_states, outcome)
            written = np.array([i for i, k in enumerate(kind_keys) if pending[k].items], dtype=np.intp)
            packed = pack_states(
                StoredBatch(states.states.take(written), states.partition[written], states.offset[written])
            )
            outcome.states.update(zip((kind_keys[i] for i in written), packed, strict=True))
        # Found kind by kind, stream by stream: published in each partition's order.
        outcome.alerts.sort(key=lambda a: (a["source"]["topic"], a["source"]["partition"], a["source"]["offset"]))
        return outcome

    def _advance(
        self,
        kind: str,
        keys: list[str],
        groups: list[_Pending],
        raw_states: Mapping[str, bytes | None],
        outcome: BatchOutcome,
    ) -> StoredBatch:
        """Apply every pending event of one kind's streams to their stored states, in arrays."""
        detector = self.detectors[kind]
        raws = [raw_states[k] for k in keys]
        stored, usable = unpack_states(raws, detector.hidden, detector.spec.norm_size)
        for i in np.flatnonzero(~usable & np.array([r is not None for r in raws], dtype=bool)):
            outcome.ignored_states += 1
            logger.warning("state %s has another layout or model size; starting the stream afresh", keys[i])
        # The fence: a stream lives in one partition, so its offsets only grow. Only streams with a
        # stored state and more than one event, or a first event not newer, need a look.
        firsts = [g.items[0][0] for g in groups]
        first_partition = np.array([r.partition for r in firsts], dtype=np.int64)
        first_offset = np.array([r.offset for r in firsts], dtype=np.int64)
        counts = np.array([len(g.items) for g in groups], dtype=np.int64)
        suspect = usable & ((counts > 1) | ((first_partition == stored.partition) & (first_offset <= stored.offset)))
        for i in np.flatnonzero(suspect):
            group, partition, offset = groups[i], stored.partition[i], stored.offset[i]
            before = len(group.items)
            group.items = [(r, e) for r, e in group.items if r.partition != partition or r.offset > offset]
            outcome.fenced += before - len(group.items)
            counts[i] = len(group.items)

        # Every pending event of these streams in one call, stream after stream (the detector
        # steps the w-th event of every stream together: a stream's events apply in order).
        live = np.flatnonzero(counts > 0)
        if live.size:
            batch = [item for i in live for item in groups[i].items]
            scores, decision, new = detector.step_batch(
                stored.states.take(live),
                np.array([e.ts for _, e in batch], dtype=np.int64),
                [e.values for _, e in batch],
                counts[live],
            )
            stored.states.put(live, new)
            last = np.cumsum(counts[live]) - 1
            stored.partition[live] = [batch[j][0].partition for j in last]
            stored.offset[live] = [batch[j][0].offset for j in last]
            for j in np.flatnonzero(decision.alert):
                record, event = batch[j]
                result = scores.scored(detector, int(j), decision.decision(int(j)))
                outcome.alerts.append(
                    build_alert(event, result, detector, kind, record.topic, record.partition, record.offset)
                )
            outcome.scored += len(batch)
        outcome.waves = max(outcome.waves, int(counts.max(initial=0)))
        return stored
