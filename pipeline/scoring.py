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
from itertools import compress
from operator import attrgetter
from typing import Any, NamedTuple, Protocol

import numpy as np

from models.detector import Detector
from pipeline.alerts import build_alert
from pipeline.errors import InvalidEvent
from pipeline.events import Event, decode_event, decode_plain
from pipeline.state import (
    StateShape,
    StateStore,
    StoredBatch,
    pack_states,
    prefixed_state_key,
    state_key_prefix,
    unpack_states,
)

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
    """One stream's events in this batch, in order (two lists: a tuple per event cost more)."""

    key: str
    records: list[KafkaRecord] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


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
        self._shapes = {kind: StateShape.of(d) for kind, d in detectors.items()}

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
        # Per kind, the batch's streams by stream key, in order of first appearance.
        pending: dict[str, dict[str, _Pending]] = {}
        streams: dict[str, _Pending] = {}
        topic, kind, features = None, None, frozenset[str]()
        max_bytes, max_values = self.max_event_bytes, self.max_event_values
        for record in records:
            if record.topic != topic:  # records come partition by partition: look up rarely
                topic = record.topic
                kind = self.topic_kinds.get(topic)
                kind = kind if kind in self.detectors else None
                if kind is not None:
                    streams = pending.setdefault(kind, {})
                    features = self._features[kind]
            # The common case in one call (this loop runs for every event); anything unusual goes
            # through _decode, which finds the reason.
            value, event = record.value, None
            if kind is not None and value is not None and len(value) <= max_bytes:
                event = decode_plain(value, features, max_values)
                if event is not None and record.key is not None and record.key != event.key.encode():
                    event = None
            if event is None:
                try:
                    event = self._decode(record, kind)
                except InvalidEvent as exc:
                    outcome.dead.append(DeadLetter(record, exc.reason))
                    continue
            group = streams.get(event.key)
            if group is None:
                group = streams[event.key] = _Pending(event.key)
            group.records.append(record)
            group.events.append(event)
        if not pending:
            return outcome

        kind_keys = {kind: [self.key_for(kind, k) for k in groups] for kind, groups in pending.items()}
        keys = [k for redis_keys in kind_keys.values() for k in redis_keys]
        raw_states = iter(await self.store.get_many(keys))
        for kind, groups in pending.items():
            redis_keys = kind_keys[kind]
            raws = [next(raw_states) for _ in redis_keys]
            states = self._advance(kind, redis_keys, list(groups.values()), raws, outcome)
            written = np.array([i for i, g in enumerate(groups.values()) if g.events], dtype=np.intp)
            packed = pack_states(
                StoredBatch(states.states.take(written), states.partition[written], states.offset[written]),
                self._shapes[kind],
            )
            outcome.states.update(zip((redis_keys[i] for i in written), packed, strict=True))
        # Found kind by kind, stream by stream: published in each partition's order.
        outcome.alerts.sort(key=lambda a: (a["source"]["topic"], a["source"]["partition"], a["source"]["offset"]))
        return outcome

    def _advance(
        self,
        kind: str,
        keys: list[str],
        groups: list[_Pending],
        raws: list[bytes | None],
        outcome: BatchOutcome,
    ) -> StoredBatch:
        """Apply every pending event of one kind's streams to their stored states, in arrays."""
        detector = self.detectors[kind]
        stored, usable = unpack_states(raws, self._shapes[kind])
        for i in np.flatnonzero(~usable & np.array([r is not None for r in raws], dtype=bool)):
            outcome.ignored_states += 1
            logger.warning("state %s has another layout or model size; starting the stream afresh", keys[i])
        # The fence: skip every event not newer than its stream's stored offset in that partition
        # (a redelivery). Checked in arrays over all events: it is almost never true.
        counts = np.array([len(g.events) for g in groups], dtype=np.int64)
        records = [r for g in groups for r in g.records]
        partition = np.fromiter(map(_PARTITION, records), dtype=np.int64, count=len(records))
        offset = np.fromiter(map(_OFFSET, records), dtype=np.int64, count=len(records))
        stream = np.repeat(np.arange(len(groups)), counts)
        stale = usable[stream] & (partition == stored.partition[stream]) & (offset <= stored.offset[stream])
        if stale.any():
            outcome.fenced += int(stale.sum())
            fresh = ~stale
            starts = np.cumsum(counts) - counts
            for i in np.unique(stream[stale]):
                keep = fresh[starts[i] : starts[i] + counts[i]]
                groups[i].records = list(compress(groups[i].records, keep))
                groups[i].events = list(compress(groups[i].events, keep))
            counts = np.bincount(stream[fresh], minlength=len(groups))
            partition, offset, records = partition[fresh], offset[fresh], list(compress(records, fresh))

        # Every pending event of these streams in one call, stream after stream (the detector
        # steps the w-th event of every stream together: a stream's events apply in order).
        live = np.flatnonzero(counts > 0)
        if live.size:
            events = [e for i in live for e in groups[i].events]
            scores, decision, new = detector.step_batch(
                stored.states.take(live),
                np.fromiter(map(_TS, events), dtype=np.int64, count=len(events)),
                list(map(_VALUES, events)),
                counts[live],
            )
            stored.states.put(live, new)
            last = np.cumsum(counts[live]) - 1
            stored.partition[live] = partition[last]
            stored.offset[live] = offset[last]
            for j in np.flatnonzero(decision.alert):
                record, event = records[j], events[j]
                result = scores.scored(detector, int(j), decision.decision(int(j)))
                outcome.alerts.append(
                    build_alert(event, result, detector, kind, record.topic, record.partition, record.offset)
                )
            outcome.scored += len(events)
        outcome.waves = max(outcome.waves, int(counts.max(initial=0)))
        return stored


_TS = attrgetter("ts")
_VALUES = attrgetter("values")
_PARTITION = attrgetter("partition")
_OFFSET = attrgetter("offset")
