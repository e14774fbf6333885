"""Synthetic generators: deterministic, realistic enough, and honestly labelled."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from pipeline.events import validate_event
from producers.base import StreamGenerator
from producers.financial import FinancialGenerator
from producers.generic import GenericGenerator
from producers.network import NetworkGenerator
from producers.sensor import SensorGenerator

GENERATORS = [NetworkGenerator, FinancialGenerator, SensorGenerator, GenericGenerator]


def by_key(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in events:
        streams[event["key"]].append(event)
    return streams


@pytest.mark.parametrize("cls", GENERATORS)
def test_deterministic_per_seed(cls: type[StreamGenerator]) -> None:
    first = list(cls(keys=30, seed=11, anomaly_rate=0.02).events(3000))
    again = list(cls(keys=30, seed=11, anomaly_rate=0.02).events(3000))
    other = list(cls(keys=30, seed=12, anomaly_rate=0.02).events(3000))
    assert first == again
    assert first != other


@pytest.mark.parametrize("cls", GENERATORS)
def test_a_stream_is_the_same_whatever_its_range(cls: type[StreamGenerator]) -> None:
    whole = by_key(list(cls(keys=12, seed=5, anomaly_rate=0.02).events(2400)))
    tail = by_key(list(cls(keys=4, seed=5, anomaly_rate=0.02, first_key=8).events(2400)))
    head = by_key(list(cls(keys=8, seed=5, anomaly_rate=0.02).events(2400)))
    assert not set(tail) & set(head)  # disjoint ranges, disjoint keys
    assert set(tail) == {cls().key(i) for i in range(8, 12)}
    for key, events in tail.items():
        # The shorter run of 4 streams goes further into each: compare what both produced.
        n = len(whole[key])
        assert n > 10 and events[:n] == whole[key]


@pytest.mark.parametrize("cls", GENERATORS)
def test_events_keep_the_contract_and_time_order(cls: type[StreamGenerator]) -> None:
    events = list(cls(keys=50, seed=1, anomaly_rate=0.01).events(5000))
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)
    for event in events:
        validate_event(event, features=cls.features)
    for stream in by_key(events).values():
        stamps = [e["ts"] for e in stream]
        assert all(a < b for a, b in itertools.pairwise(stamps)), "per-stream ts strictly increase"
    assert len(by_key(events)) == 50


@pytest.mark.parametrize("cls", GENERATORS)
def test_labels_mark_exactly_the_injected_events(cls: type[StreamGenerator]) -> None:
    """Normal behaviour does not depend on the anomaly rate, so the anomaly-free run is the truth."""
    injected = list(cls(keys=20, seed=5, anomaly_rate=0.03).events(6000))
    clean = list(cls(keys=20, seed=5, anomaly_rate=0.0).events(8000))
    horizon = min(injected[-1]["ts"], clean[-1]["ts"])
    clean_streams = by_key([e for e in clean if e["ts"] <= horizon])
    labelled = 0
    for key, stream in by_key([e for e in injected if e["ts"] <= horizon]).items():
        baseline = {e["ts"]: e["values"] for e in clean_streams[key]}
        labelled_ts = {e["ts"] for e in stream if e["label"] == 1}
        normal = [(e["ts"], e["values"]) for e in stream if e["label"] == 0]
        # Unlabelled events are exactly the anomaly-free ones; no normal event moved or vanished.
        assert normal == sorted((ts, v) for ts, v in baseline.items() if ts not in labelled_ts)
        assert set(baseline) <= {e["ts"] for e in stream}
        changed: dict[int, bool] = {}  # incident → whether any of its events differs from normal
        for event in stream:
            if event["label"] == 1:
                labelled += 1
                same = baseline.get(event["ts"]) == event["values"]
                # Only a count can round back to its normal reading (a variance burst's small draw, a
                # drift's first step): every other labelled event differs from normal.
                assert not same or all(v == round(v) for v in event["values"].values()), "a labelled event must differ"
                incident = event["meta"]["incident"]
                changed[incident] = changed.get(incident, False) or not same
                assert event["meta"]["anomaly"] in cls.anomaly_types
            else:
                assert "meta" not in event
        assert all(changed.values()), "every incident changes some reading"
    assert labelled > 0
    assert all(e["label"] == 0 for e in clean)


@pytest.mark.parametrize("cls", GENERATORS)
def test_every_anomaly_type_occurs(cls: type[StreamGenerator]) -> None:
    events = cls(keys=50, seed=2, anomaly_rate=0.02).events(30000)
    seen = {e["meta"]["anomaly"] for e in events if e["label"]}
    assert seen == set(cls.anomaly_types)


@pytest.mark.parametrize("cls", [NetworkGenerator, FinancialGenerator])
def test_irregular_spacing_is_kept(cls: type[StreamGenerator]) -> None:
    events = [e for e in cls(keys=5, seed=3, anomaly_rate=0.0).events(3000)]
    for stream in by_key(events).values():
        gaps = np.diff([e["ts"] for e in stream])
        assert gaps.std() / gaps.mean() > 0.5  # exponential-like, not a clock


def test_sensor_channels_are_correlated() -> None:
    events = list(SensorGenerator(keys=1, seed=4, anomaly_rate=0.0).events(2000))
    temp = np.array([e["values"]["temperature"] for e in events])
    current = np.array([e["values"]["current"] for e in events])
    assert np.corrcoef(temp, current)[0, 1] > 0.9


def test_network_sizes_are_heavy_tailed() -> None:
    sizes = np.array([e["values"]["bytes"] for e in NetworkGenerator(keys=1, seed=6, anomaly_rate=0).events(5000)])
    assert np.quantile(sizes, 0.99) / np.median(sizes) > 8
    assert all(math.isfinite(s) for s in sizes)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="first_key"):
        NetworkGenerator(first_key=-1)
    with pytest.raises(ValueError):
        NetworkGenerator(keys=0)
    with pytest.raises(ValueError):
        NetworkGenerator(anomaly_rate=1.5)


def test_large_amounts_are_large_for_their_account() -> None:
    """A "large amount" must be beyond what the account itself does: larger than every normal
    purchase it makes (a multiple of a low draw could land inside its usual range)."""
    events = list(FinancialGenerator(keys=40, seed=9, anomaly_rate=0.02).events(20000))
    large = 0
    for stream in by_key(events).values():
        usual = max(e["values"]["amount"] for e in stream if e["label"] == 0)
        for event in stream:
            if event["label"] and event["meta"]["anomaly"] == "large_amount":
                large += 1
                assert event["values"]["amount"] > usual
    assert large >= 10


def test_count_anomalies_are_sized_against_the_poisson_spread() -> None:
    """A count stream's spread is √(its mean): a level shift must clear it, where one sized against
    a share of the level (+1 on a count of 0.5, +10 on one of 90) could not be seen. Measured
    against the readings just before it, which share its time of day."""
    events = list(GenericGenerator(keys=60, seed=4, anomaly_rate=0.01).events(24000))
    checked = 0
    for stream in by_key(events).values():
        values = np.array([e["values"]["value"] for e in stream])
        labels = np.array([e["label"] for e in stream])
        if not np.all(values[labels == 0] == np.round(values[labels == 0])):  # count streams alone are whole
            continue
        scale = 1000 if np.all(values[labels == 0] % 1000 == 0) and values.max() > 0 else 1  # thousands
        spread = math.sqrt(max(values[labels == 0].mean() / scale, 0.75)) * scale
        for start in np.flatnonzero(np.diff(labels, prepend=0) == 1):
            if stream[start]["meta"]["anomaly"] != "level_shift" or start < 20 or labels[start - 20 : start].any():
                continue
            end = start + int(np.argmin(labels[start:] == 1)) if labels[start:].min() == 0 else len(labels)
            checked += 1
            assert values[start:end].mean() - values[start - 20 : start].mean() > 2 * spread
    assert checked >= 10


def test_count_anomalies_stay_counts() -> None:
    """An anomaly in a count stream is itself a count (whole, in the stream's unit, not negative):
    a fraction would give it away to a detector that merely checks for whole numbers."""
    events = list(GenericGenerator(keys=60, seed=4, anomaly_rate=0.01).events(24000))
    checked = 0
    for stream in by_key(events).values():
        values = np.array([e["values"]["value"] for e in stream])
        labels = np.array([e["label"] for e in stream])
        normal = values[labels == 0]
        if not labels.any() or not np.all(normal == np.round(normal)) or np.all(normal == normal[0]):
            continue
        unit = 1000 if np.all(normal % 1000 == 0) else 1
        anomalous = values[labels == 1]
        checked += len(anomalous)
        assert np.all(anomalous % unit == 0) and np.all(anomalous >= 0)
    assert checked >= 50
