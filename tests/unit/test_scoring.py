"""The batched hot path with the in-memory store: waves, the fence, dead letters, state packing."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifacts import load_detector, shipped_model_dir
from models.calibration import EpisodeState
from models.detector import Detector, StreamState
from pipeline.scoring import BatchScorer, Record
from pipeline.state import (
    MemoryStateStore,
    StateShape,
    StoredBatch,
    StoredState,
    pack_state,
    pack_states,
    state_key,
    unpack_state,
    unpack_states,
)
from producers.generic import GenericGenerator
from producers.network import NetworkGenerator

TOPIC = "events.network"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return load_detector(shipped_model_dir("network"), kind="network")


def records_of(events: list[dict], partition_of: dict[str, int] | None = None) -> list[Record]:
    offsets: dict[int, int] = defaultdict(int)
    out = []
    for e in events:
        p = (partition_of or {}).get(e["key"], hash(e["key"]) % 3)
        out.append(Record(TOPIC, p, offsets[p], e["key"].encode(), orjson.dumps(e)))
        offsets[p] += 1
    return out


def assert_same_states(got: dict[str, bytes], want: dict[str, bytes], shape: StateShape) -> None:
    """Same streams, counts and offsets exactly; hidden states to float tolerance (batching differs)."""
    assert got.keys() == want.keys()
    for key in want:
        a, b = unpack_state(got[key], shape), unpack_state(want[key], shape)
        assert a is not None and b is not None
        assert (a.partition, a.offset, a.count, a.stream.last_ts) == (
            b.partition,
            b.offset,
            b.count,
            b.stream.last_ts,
        )
        np.testing.assert_allclose(a.stream.h, b.stream.h, atol=1e-5)


def run(coro):
    return asyncio.run(coro)


def test_waves_equal_offline_sequence_scoring(detector: Detector) -> None:
    events = list(NetworkGenerator(keys=6, seed=8, anomaly_rate=0.02).events(400))
    store = MemoryStateStore()
    scorer = BatchScorer({"network": detector}, {TOPIC: "network"}, store)
    records = records_of(events)
    for start in range(0, len(records), 97):  # batches with many events per stream
        outcome = run(scorer.process(records[start : start + 97]))
        store.data.update(outcome.states)
    assert store.reads == 5
    for key in {e["key"] for e in events}:
        stream = [(e["ts"], e["values"]) for e in events if e["key"] == key]
        _, offline = detector.score_sequence(stream)
        stored = unpack_state(store.data[scorer.key_for("network", key)], StateShape.of(detector))
        assert stored is not None
        assert stored.count == len(stream)
        np.testing.assert_allclose(stored.stream.h, offline.h, atol=1e-5)


def test_a_generic_stream_stored_between_batches_keeps_its_days_bit_for_bit() -> None:
    """The seasonal rule's hourly means are stored as float32; the model holds them at that
    precision, so a worker's stream, stored and read back between batches, keeps exactly the days
    the same stream keeps offline."""
    generic = load_detector(shipped_model_dir("generic"), kind="generic")
    shape = StateShape.of(generic)
    assert shape.single[1] - shape.single[0] >= 100  # the seasonal days are the float32 part
    events = list(GenericGenerator(keys=3, seed=4, anomaly_rate=0.01).events(4500))
    store = MemoryStateStore()
    scorer = BatchScorer({"generic": generic}, {TOPIC: "generic"}, store)
    records = records_of(events)
    for start in range(0, len(records), 500):
        outcome = run(scorer.process(records[start : start + 500]))
        store.data.update(outcome.states)
    days = slice(*shape.single)
    filled = 0
    for key in {e["key"] for e in events}:
        _, offline = generic.score_sequence([(e["ts"], e["values"]) for e in events if e["key"] == key])
        filled += int(np.isfinite(offline.norm[days]).all())
        stored = unpack_state(store.data[scorer.key_for("generic", key)], shape)
        assert stored is not None
        np.testing.assert_array_equal(stored.stream.norm[days], offline.norm[days])
    assert filled >= 1  # a stream old enough for the rule: all its hours hold three days


def test_redelivery_is_fenced_and_alert_ids_repeat(detector: Detector) -> None:
    events = list(NetworkGenerator(keys=4, seed=13, anomaly_rate=0.05).events(300))
    store = MemoryStateStore()
    scorer = BatchScorer({"network": detector}, {TOPIC: "network"}, store)
    records = records_of(events)
    first = run(scorer.process(records))
    store.data.update(first.states)
    snapshot = dict(store.data)
    again = run(scorer.process(records))  # as after a crash before the commit
    assert again.fenced == len(records) and again.scored == 0 and again.alerts == [] and again.states == {}
    assert store.data == snapshot
    # Half applied, then the whole batch redelivered: only the rest is scored.
    store2 = MemoryStateStore()
    scorer2 = BatchScorer({"network": detector}, {TOPIC: "network"}, store2)
    part = run(scorer2.process(records[:150]))
    store2.data.update(part.states)
    rest = run(scorer2.process(records))
    store2.data.update(rest.states)
    assert rest.fenced == 150 and rest.scored == len(records) - 150
    assert_same_states(store2.data, snapshot, StateShape.of(detector))
    # Each stream's alerts, in order, with the same ids.
    assert per_stream(part.alerts + rest.alerts) == per_stream(first.alerts) != {}


def per_stream(alerts: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for a in alerts:
        out[a["key"]].append(a["alert_id"])
    return dict(out)


BAD = [
    (b"not json", "not valid JSON"),
    (b"[1,2,3]", "must be a JSON object"),
    (
        b'{"ts":1,"values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1}}',
        "missing field 'key'",
    ),
    (
        b'{"key":"k","values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1}}',
        "missing field 'ts'",
    ),
    (b'{"key":"k","ts":1}', "missing field 'values'"),
    (
        b'{"key":"k","ts":1,"values":{"bytes":"x","packets":1,"duration_ms":1,"dst_ports":1}}',
        "not a number",
    ),
    (b'{"key":"k","ts":1,"values":{"bytes":NaN,"packets":1,"duration_ms":1,"dst_ports":1}}', "NaN"),
    (
        b'{"key":"k","ts":1,"values":{"bytes":1e999,"packets":1,"duration_ms":1,"dst_ports":1}}',
        "out of range",
    ),
    (
        b'{"key":"k","ts":1,"values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1,"colour":3}}',
        "unknown feature",
    ),
    (
        b'{"key":"k","ts":1,"values":{"amount":1,"merchant_novelty":0,"distance_km":1}}',
        "lacks feature",
    ),  # wrong kind
    (
        b'{"key":"k","ts":1,"values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1},"pad":"'
        + b"x" * 70000
        + b'"}',
        "bytes; at most",
    ),
    (
        b'{"key":"other","ts":1,"values":{"bytes":1,"packets":1,"duration_ms":1,"dst_ports":1}}',
        "differs from the event key",
    ),
]


def test_every_bad_input_becomes_a_dead_letter(detector: Detector) -> None:
    good = records_of(list(NetworkGenerator(keys=2, seed=1).events(10)), {})
    bad = [Record(TOPIC, 0, 1000 + i, b"k", raw) for i, (raw, _) in enumerate(BAD)]
    bad.append(Record(TOPIC, 0, 2000, b"k", None))
    scorer = BatchScorer({"network": detector}, {TOPIC: "network"}, MemoryStateStore())
    outcome = run(scorer.process(good[:5] + bad + good[5:]))
    assert outcome.scored == len(good)
    assert len(outcome.dead) == len(bad)
    for dead, (_, reason) in zip(outcome.dead, [*BAD, (None, "tombstone")], strict=True):
        assert reason in dead.reason
        headers = dict(dead.headers())
        assert (
            headers["source.topic"] == TOPIC.encode() and headers["source.offset"] == str(dead.record.offset).encode()
        )


def test_state_packing_with_stream_statistics() -> None:
    norm = np.array([3.0, 1.5, -2.0, 0.25, 4.1])
    state = StreamState(h=np.ones(4, dtype=np.float32), last_ts=7, norm=norm)
    shape = StateShape(4, 5, single=(1, 3))  # 1.5 and -2.0 are float32 values: stored in 4 bytes each
    raw = pack_state(StoredState(state, 0, 1), shape)
    back = unpack_state(raw, shape)
    assert back is not None
    np.testing.assert_array_equal(back.stream.norm, norm)
    assert len(raw) == len(pack_state(StoredState(state, 0, 1), StateShape(4, 5))) - 8
    assert unpack_state(raw, StateShape(4, 5)) is None  # the same sizes, another float32 part
    with pytest.raises(ValueError, match="packed as"):
        pack_state(StoredState(state, 0, 1), StateShape(4, 3))
    with pytest.raises(ValueError, match="not within"):
        StateShape(4, 5, single=(3, 7))


def test_state_packing_round_trip_and_foreign_layouts(detector: Detector) -> None:
    state = detector.new_state()
    # A state after real steps: the model rounds hidden states to float16, so storing is lossless.
    _, (state,) = detector.step([state], [(1000, {n: 3.0 for n in detector.spec.names})])
    _, (state,) = detector.step([state], [(1234, {n: 5.0 for n in detector.spec.names})])
    assert np.any(state.h != 0)
    state.episode.count, state.episode.open, state.episode.score_mean = (
        56,
        True,
        3.5,
    )
    shape = StateShape.of(detector)
    raw = pack_state(StoredState(state, partition=2, offset=99), shape)
    assert len(raw) <= 250  # with Redis's key overhead, under 400 bytes a stream (see `gruwatch bench`)
    back = unpack_state(raw, shape)
    assert back is not None and (back.partition, back.offset, back.stream.last_ts, back.count) == (
        2,
        99,
        1234,
        56,
    )
    assert back.stream.episode.open and back.stream.episode.score_mean == 3.5
    np.testing.assert_array_equal(back.stream.h, state.h)
    assert unpack_state(raw, StateShape(detector.model.hidden + 1)) is None  # another model size
    assert unpack_state(b"XX" + raw[2:], shape) is None  # another format
    assert unpack_state(raw[:-4], shape) is None  # truncated


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 10**9),  # count
            st.floats(-50, 50),  # score mean
            st.booleans(),
            st.integers(0, 10**6),  # quiet (stored capped at 65,535)
            st.integers(-1, 2**31 - 1),  # partition
            st.integers(-1, 2**62),  # offset
            st.sampled_from([None, "ok", "short", "foreign"]),
        ),
        max_size=8,
    ),
    st.sampled_from([StateShape(8), StateShape(8, 9), StateShape(8, 9, single=(2, 6))]),
)
def test_batched_state_codec_is_the_single_one(rows: list[tuple], shape: StateShape) -> None:
    """The worker packs and unpacks whole batches in arrays; every value must be byte for byte what
    the one-state codec writes, and every value it rejects the one-state codec rejects too."""
    rng = np.random.default_rng(len(rows))
    stored, raws = [], []
    for count, mean, is_open, quiet, partition, offset, form in rows:
        episode = EpisodeState(count, mean, is_open, quiet, float(rng.random()), float(rng.normal()))
        h = rng.normal(size=8).astype(np.float16).astype(np.float32)
        norm = rng.normal(size=shape.norm_size)
        norm[slice(*shape.single)] = norm[slice(*shape.single)].astype(np.float32)
        state = StoredState(StreamState(h, int(rng.integers(0, 2**40)), episode, norm), partition, offset)
        stored.append(state)
        raw = pack_state(state, shape)
        raws.append({None: None, "ok": raw, "short": raw[:-2], "foreign": b"XX" + raw[2:]}[form])
    packed = pack_states(StoredBatch.of(stored, 8, shape.norm_size), shape)
    assert packed == [pack_state(s, shape) for s in stored]
    batch, usable = unpack_states(raws, shape)
    for i, raw in enumerate(raws):
        single = unpack_state(raw, shape) if raw is not None else None
        assert usable[i] == (single is not None)
        if single is None:
            assert (batch.partition[i], batch.offset[i], batch.states.last_ts[i]) == (-1, -1, -1)
            continue
        got = batch.row(i)
        assert (got.partition, got.offset, got.stream.last_ts) == (
            single.partition,
            single.offset,
            single.stream.last_ts,
        )
        assert got.stream.episode == single.stream.episode
        np.testing.assert_array_equal(got.stream.h, single.stream.h)
        np.testing.assert_array_equal(got.stream.norm, single.stream.norm)
        np.testing.assert_array_equal(got.stream.norm, stored[i].stream.norm)  # lossless
    another = StateShape(9, shape.norm_size, shape.single)
    assert unpack_states(raws, another)[1].sum() == 0  # another model size: nothing usable


def test_foreign_state_is_ignored_and_replaced(detector: Detector) -> None:
    store = MemoryStateStore()
    scorer = BatchScorer({"network": detector}, {TOPIC: "network"}, store)
    events = list(NetworkGenerator(keys=1, seed=2).events(5))
    store.data[scorer.key_for("network", events[0]["key"])] = b"old layout"
    outcome = run(scorer.process(records_of(events)))
    assert outcome.ignored_states == 1 and outcome.scored == 5


def test_the_scorer_keys_states_by_the_state_key_contract(detector: Detector) -> None:
    scorer = BatchScorer({"network": detector}, {TOPIC: "network"}, MemoryStateStore(), namespace="ns")
    assert scorer.key_for("network", "10.0.0.1>10.0.0.2:80") == state_key(
        "ns", detector.ident, "network", "10.0.0.1>10.0.0.2:80"
    )
