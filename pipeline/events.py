"""The event contract: parsing and validation, with a precise one-line reason for every rejection.

An event is a UTF-8 JSON object:
``{"key": "10.0.0.5>10.0.0.9:443", "ts": 1764075600123, "values": {"bytes": 5120}, "label": 0}``
``ts`` is epoch milliseconds or an ISO-8601 string; ``values`` are finite numbers; ``label``
(ground truth, 0/1) and ``meta`` (an object passed through to alerts) are optional and never
used for scoring. Decoding is on the worker's hot path, hence orjson and few branches.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
import orjson

from pipeline.errors import InvalidEvent

__all__ = ["MAX_KEY_CHARS", "Event", "decode_event", "decode_plain", "encode_event", "parse_ts", "validate_event"]

MAX_KEY_CHARS = 512
# Epoch ms between 1970 and 2200: anything outside is a unit mistake (seconds, µs), not a time.
_MIN_TS_MS = 0
_MAX_TS_MS = 7_258_118_400_000


class Event(msgspec.Struct, frozen=True):
    """A valid event. A msgspec struct: the hot path decodes JSON straight into it, and msgspec
    checks the types (bools are not numbers, numbers are finite) and the ranges of key, ts and
    values in C."""

    key: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_KEY_CHARS)]
    ts: Annotated[int, msgspec.Meta(ge=_MIN_TS_MS, le=_MAX_TS_MS)]  # epoch milliseconds, UTC
    values: Annotated[dict[str, float], msgspec.Meta(min_length=1)]
    label: int | None = None
    meta: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "ts": self.ts, "values": self.values}
        if self.label is not None:
            out["label"] = self.label
        if self.meta is not None:
            out["meta"] = self.meta
        return out


def encode_event(event: Event | Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON for Kafka or a JSONL line."""
    return orjson.dumps(event.to_dict() if isinstance(event, Event) else event)


def parse_ts(raw: object) -> int:
    """Epoch milliseconds from epoch ms (int/float) or an ISO-8601 string (naive means UTC)."""
    if isinstance(raw, bool):
        raise InvalidEvent("ts must be epoch milliseconds or an ISO-8601 string, got a boolean")
    if isinstance(raw, (int, float)):  # a tuple: `int | float` builds a union object per call
        if not math.isfinite(raw):
            raise InvalidEvent("ts is not finite")
        ts = int(raw)
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw.replace("Z", "+00:00") if raw.endswith("Z") else raw)
        except ValueError:
            raise InvalidEvent(f"ts {raw[:40]!r} is not ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts = int(parsed.timestamp() * 1000)
    else:
        raise InvalidEvent(f"ts must be epoch milliseconds or an ISO-8601 string, got {type(raw).__name__}")
    if not _MIN_TS_MS <= ts <= _MAX_TS_MS:
        raise InvalidEvent(f"ts {ts} is outside 1970..2200 in epoch milliseconds (seconds or µs?)")
    return ts


def validate_event(
    obj: object,
    *,
    features: Collection[str] | None = None,
    max_values: int = 256,
) -> Event:
    """Check a decoded JSON value against the contract.

    ``features``, when given, is the kind's feature spec: every name must be present and no
    other name may appear.
    """
    if not isinstance(obj, dict):
        raise InvalidEvent(f"event must be a JSON object, got {_json_type(obj)}")
    try:
        key = obj["key"]
        raw_ts = obj["ts"]
        values = obj["values"]
    except KeyError as missing:
        raise InvalidEvent(f"missing field {missing.args[0]!r}") from None
    if not isinstance(key, str) or not key:
        raise InvalidEvent("key must be a non-empty string")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidEvent(f"key is longer than {MAX_KEY_CHARS} characters")
    ts = parse_ts(raw_ts)
    if not isinstance(values, dict):
        raise InvalidEvent(f"values must be an object, got {_json_type(values)}")
    if not values:
        raise InvalidEvent("values is empty")
    if len(values) > max_values:
        raise InvalidEvent(f"values has {len(values)} entries; at most {max_values} are accepted")
    clean: dict[str, float] = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidEvent(f"values.{name} is not a number ({_json_type(value)})")
        number = float(value)
        if not math.isfinite(number):
            raise InvalidEvent(f"values.{name} is not finite")
        clean[name] = number
    if features is not None:
        missing_names = [f for f in features if f not in clean]
        if missing_names:
            raise InvalidEvent(f"values lacks feature(s) {', '.join(missing_names)}")
        unknown = [n for n in clean if n not in features]
        if unknown:
            raise InvalidEvent(f"values has unknown feature(s) {', '.join(unknown[:5])}")
    label = obj.get("label")
    if label is not None and (isinstance(label, bool) or label not in (0, 1)):
        raise InvalidEvent("label must be 0 or 1")
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise InvalidEvent(f"meta must be an object, got {_json_type(meta)}")
    return Event(key=key, ts=ts, values=clean, label=None if label is None else int(label), meta=meta)


# Only the common shape (an epoch-ms ts) decodes here; an ISO ts takes the slow path.
_WIRE = msgspec.json.Decoder(Event)


@functools.lru_cache(maxsize=64)
def _feature_set(names: tuple[str, ...]) -> frozenset[str]:
    return frozenset(names)


def _as_set(names: Collection[str]) -> frozenset[str] | set[str]:
    if type(names) is frozenset or type(names) is set:
        return names
    return _feature_set(names) if isinstance(names, tuple) else frozenset(names)


def decode_plain(raw: bytes | str, features: frozenset[str] | set[str] | None, max_values: int) -> Event | None:
    """The event when it is plainly valid, else None (then ``decode_event``'s slow path finds the
    reason). The worker's batch loop calls it for every record.

    msgspec rejects bools as numbers, non-finite numbers, wrong types, an empty or over-long key,
    a ts outside 1970..2200 and empty values while decoding; what is left are the checks that
    depend on settings and the model (how many values, which features) and the label."""
    try:
        event = _WIRE.decode(raw)
    except msgspec.DecodeError:
        return None
    values, label = event.values, event.label
    if not (
        len(values) <= max_values
        and (label is None or label == 0 or label == 1)
        and (features is None or values.keys() == features)
    ):
        return None
    return event


def decode_event(
    raw: bytes | str,
    *,
    features: Collection[str] | None = None,
    max_bytes: int = 64 * 1024,
    max_values: int = 256,
) -> Event:
    """Decode and validate one event; raises InvalidEvent with the reason."""
    if len(raw) > max_bytes:
        raise InvalidEvent(f"event is {len(raw)} bytes; at most {max_bytes} are accepted")
    event = decode_plain(raw, None if features is None else _as_set(features), max_values)
    if event is not None:
        return event
    # Anything else (an ISO ts, a float ts, or an invalid event): decoded and checked in Python.
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(_json_error_reason(raw, exc)) from None
    return validate_event(obj, features=features, max_values=max_values)


def _json_error_reason(raw: bytes | str, exc: orjson.JSONDecodeError) -> str:
    # orjson rejects NaN/Infinity as bad JSON; name the non-finite value instead (slow path only).
    try:
        found: list[str] = []

        def note(constant: str) -> float:
            found.append(f"{constant} is not a JSON number")
            return math.nan

        def number(text: str) -> float:
            value = float(text)
            if not math.isfinite(value):
                found.append(f"{text[:30]} is out of range")
            return value

        json.loads(raw, parse_constant=note, parse_float=number)
    except (ValueError, UnicodeDecodeError):
        return f"not valid JSON: {exc}"
    if not found:
        return f"not valid JSON: {exc}"
    return f"not valid JSON: {found[0]} (values must be finite)"


def _json_type(value: object) -> str:
    match value:
        case None:
            return "null"
        case bool():
            return "boolean"
        case int() | float():
            return "number"
        case str():
            return "string"
        case list():
            return "array"
        case dict():
            return "object"
    return type(value).__name__
