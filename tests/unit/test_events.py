"""The event contract: what is accepted, and a precise reason for everything that is not."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InvalidEvent
from pipeline.events import Event, decode_event, encode_event, parse_ts


def test_accepts_the_contract_example() -> None:
    raw = b'{"key": "10.0.0.5>10.0.0.9:443", "ts": 1764075600123, "values": {"bytes": 5120, "packets": 7}, "label": 0}'
    event = decode_event(raw)
    assert event == Event("10.0.0.5>10.0.0.9:443", 1764075600123, {"bytes": 5120.0, "packets": 7.0}, 0)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2025-11-25T13:00:00.123Z", 1764075600123),
        ("2025-11-25T14:00:00.123+01:00", 1764075600123),
        ("2025-11-25 13:00:00.123", 1764075600123),  # naive is UTC
        (1764075600123, 1764075600123),
        (1764075600123.9, 1764075600123),
    ],
)
def test_timestamps(ts: object, expected: int) -> None:
    assert parse_ts(ts) == expected


def test_meta_passes_through() -> None:
    event = decode_event(b'{"key":"k","ts":1,"values":{"a":1},"meta":{"site":"x"}}')
    assert event.meta == {"site": "x"}
    assert orjson.loads(encode_event(event))["meta"] == {"site": "x"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b'{"key":"k","ts":1,"values":{"a":NaN}}', "NaN is not a JSON number"),
        (b'{"key":"k","ts":1,"values":{"a":Infinity}}', "Infinity is not a JSON number"),
        (b"[1, 2]", "must be a JSON object, got array"),
        (b'{"ts":1,"values":{"a":1}}', "missing field 'key'"),
        (b'{"key":"k","values":{"a":1}}', "missing field 'ts'"),
        (b'{"key":"k","ts":1}', "missing field 'values'"),
        (b'{"key":"","ts":1,"values":{"a":1}}', "key must be a non-empty string"),
        (b'{"key":7,"ts":1,"values":{"a":1}}', "key must be a non-empty string"),
        (b'{"key":"k","ts":"yesterday","values":{"a":1}}', "is not ISO-8601"),
        (b'{"key":"k","ts":true,"values":{"a":1}}', "got a boolean"),
        (b'{"key":"k","ts":1e20,"values":{"a":1}}', "outside 1970..2200"),
        (b'{"key":"k","ts":1,"values":[1]}', "values must be an object, got array"),
        (b'{"key":"k","ts":1,"values":{}}', "values is empty"),
        (b'{"key":"k","ts":1,"values":{"a":"1"}}', "values.a is not a number (string)"),
        (b'{"key":"k","ts":1,"values":{"a":true}}', "values.a is not a number (boolean)"),
        (b'{"key":"k","ts":1,"values":{"a":null}}', "values.a is not a number (null)"),
        (b'{"key":"k","ts":1,"values":{"a":1e999}}', "1e999 is out of range"),
        (b'{"key":"k","ts":1,"values":{"a":1},"label":2}', "label must be 0 or 1"),
        (b'{"key":"k","ts":1,"values":{"a":1},"meta":"x"}', "meta must be an object"),
    ],
)
def test_rejections_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_event(raw)
    assert reason in caught.value.reason
    assert "\n" not in caught.value.reason


def test_size_limits() -> None:
    big = orjson.dumps({"key": "k", "ts": 1, "values": {f"v{i}": i for i in range(300)}})
    with pytest.raises(InvalidEvent, match="at most 256"):
        decode_event(big)
    with pytest.raises(InvalidEvent, match="bytes; at most 100"):
        decode_event(big, max_bytes=100)
    with pytest.raises(InvalidEvent, match="longer than"):
        decode_event(orjson.dumps({"key": "k" * 600, "ts": 1, "values": {"a": 1}}))


def test_feature_spec() -> None:
    raw = b'{"key":"k","ts":1,"values":{"bytes":1,"colour":2}}'
    with pytest.raises(InvalidEvent, match="lacks feature"):
        decode_event(raw, features=("bytes", "packets"))
    with pytest.raises(InvalidEvent, match="unknown feature"):
        decode_event(raw, features=("bytes",))


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(
    key=st.text(min_size=1, max_size=40),
    ts=st.integers(min_value=0, max_value=7_000_000_000_000),
    values=st.dictionaries(st.text(min_size=1, max_size=10), finite, min_size=1, max_size=8),
    label=st.none() | st.sampled_from([0, 1]),
)
def test_encode_decode_round_trip(key: str, ts: int, values: dict[str, float], label: int | None) -> None:
    event = Event(key, ts, values, label)
    decoded = decode_event(encode_event(event))
    assert decoded == event
    assert all(math.isfinite(v) for v in decoded.values.values())
