"""The coupling rule (models.coupling): a feature judged against the others it moves with."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.coupling import _LASTING, COUPLING_HISTORY, advance_coupling, coupling_size

# The rule's bar in the calibration: the false-alarm rate (1e-4) times its share of it (0.1).
BAR = 1e-5
GAINS = np.array([8.0, 5.0, 0.8, 3.0])
NOISE = np.array([0.3, 0.4, 0.08, 0.2])


def machine(rng: np.random.Generator, events: int) -> np.ndarray:
    """Four channels driven by one load (a daily cycle of 1-minute readings and an AR(1) wander),
    each with its own gain and noise, as the sensor producer makes them."""
    wander = np.zeros(events)
    for t in range(1, events):
        wander[t] = 0.95 * wander[t - 1] + rng.normal(0, 0.1)
    load = np.sin(2 * np.pi * np.arange(events) / 1440) + wander
    return 50.0 + GAINS * load[:, None] + rng.normal(0, NOISE, (events, 4))


def run(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One stream's r (events, features) and chances (events,)."""
    memory = np.zeros((1, coupling_size(values.shape[1])))
    out = [advance_coupling(memory, row[None, :]) for row in values]
    return np.concatenate([r for r, _, _ in out]), np.concatenate([c for _, c, _ in out])


def test_channels_on_one_load_are_quiet_and_one_drifting_off_it_is_caught_early() -> None:
    """Three days of one machine: no event comes near the rule's bar, though the load swings by
    tens of noise sds. A drift of three gains over 60 readings on one channel (the sensor
    producer's) passes it within its first 20 readings, and it is that channel's r that does."""
    rng = np.random.default_rng(3)
    values = machine(rng, 4320)
    r, chance = run(values)
    assert np.all(r[:COUPLING_HISTORY] == 0) and np.all(chance[:COUPLING_HISTORY] == 1)
    assert chance.min() > BAR * 10
    drifting = values.copy()
    drifting[4000:4060, 2] += 3 * GAINS[2] * np.arange(1, 61) / 60
    r, chance = run(drifting)
    first = 4000 + int(np.argmax(chance[4000:] < BAR))
    assert chance[first] < BAR and first < 4020
    assert int(np.argmax(np.abs(r[first]))) == 2


def test_a_channel_following_the_load_inverted_is_caught() -> None:
    """Decorrelation: one channel moves against the load for 40 readings while the load is off
    its midpoint (the producer's fourth anomaly)."""
    rng = np.random.default_rng(5)
    values = machine(rng, 2000)
    broken = values.copy()
    broken[1700:1740, 0] = 100.0 - values[1700:1740, 0]  # 50 + 8·load  →  50 - 8·load
    _, chance = run(broken)
    assert chance[1700:1740].min() < BAR
    assert run(values)[1].min() > BAR


def test_an_incident_does_not_teach_the_relation_it_breaks() -> None:
    """A channel 30 noise sds off its siblings for 40 readings: each of those readings teaches
    the statistics as if it were only _CAP off, so the incident stays rare to its end (taught
    whole, its own readings widened the spread until its last ones looked ordinary), the
    channel's readings back in line are quiet, and a second incident's r is as large as the
    first's."""
    rng = np.random.default_rng(8)
    values = machine(rng, 2500)
    values[1000:1040, 1] += 30 * NOISE[1]
    values[2000:2040, 1] += 30 * NOISE[1]
    r, chance = run(values)
    assert chance[1000:1040].max() < BAR and chance[2000:2040].max() < BAR
    assert chance[1040:1100].min() > BAR
    first, second = np.abs(r[1000, 1]), np.abs(r[2000, 1])
    assert first > 15 and second > 0.8 * first


def test_a_constant_feature_keeps_the_statistics_finite() -> None:
    """A feature that never changes (a channel that reads 0) has no variance: its inverse is kept
    finite by a floor, and the others are judged as before. A 1e300 on it, against that floor, is
    as rare as can be and overflows nothing."""
    rng = np.random.default_rng(2)
    values = machine(rng, 600)
    values[:, 3] = 0.0
    r, chance = run(values)
    assert np.all(np.isfinite(r)) and chance.min() > BAR
    values[500, 3] = 1e300
    with np.errstate(over="raise", invalid="raise"):
        r, chance = run(values)
    assert np.all(np.isfinite(r)) and chance[500] == 0.0


@settings(max_examples=40, deadline=None)
@given(
    streams=st.integers(1, 6),
    features=st.integers(1, 4),
    events=st.integers(1, 80),
    seed=st.integers(0, 2**16),
)
def test_streams_advanced_together_advance_as_each_alone(streams: int, features: int, events: int, seed: int) -> None:
    """The worker advances a batch of streams at once: each stream's r, chance and memory are
    what advancing it alone gives (bit for bit: no stream's numbers touch another's)."""
    rng = np.random.default_rng(seed)
    values = rng.normal(0, 1, (events, streams, features)) * rng.uniform(0.1, 100, (1, streams, features))
    together = np.zeros((streams, coupling_size(features)))
    alone = np.zeros((streams, coupling_size(features)))
    for t in range(events):
        r, chance, expected = advance_coupling(together, values[t])
        for s in range(streams):
            r_alone, chance_alone, expected_alone = advance_coupling(alone[s : s + 1], values[t, s : s + 1])
            assert r_alone.tobytes() == r[s : s + 1].tobytes()
            assert chance_alone.tobytes() == chance[s : s + 1].tobytes()
            assert expected_alone.tobytes() == expected[s : s + 1].tobytes()
    assert together.tobytes() == alone.tobytes()


@pytest.mark.parametrize(("wild", "at"), [(1e6, 20), (-9999.0, 30), (1e300, 20), (1e300, 2000)])
def test_one_wild_reading_does_not_blind_the_rule(wild: float, at: int) -> None:
    """A sentinel or a glitch on one channel, young or old: it is rare itself once the rule
    judges, nothing overflows, and a drift 2,000 readings later is caught as it would be without
    it. A young stream's wild reading used to swell the statistics until the rule was blind for
    thousands of readings."""
    rng = np.random.default_rng(11)
    values = machine(rng, 4320)
    values[4000:4060, 2] += 3 * GAINS[2] * np.arange(1, 61) / 60
    values[at, 1] = wild
    with np.errstate(over="raise", invalid="raise"):
        r, chance = run(values)
    assert np.all(np.isfinite(r))
    if at >= COUPLING_HISTORY:
        assert chance[at] < BAR
    assert chance[at + 1 : 4000].min() > BAR
    assert chance[4000:4020].min() < BAR


def test_a_lasting_break_becomes_the_streams_new_relation() -> None:
    """A channel that reads one value from the stream's first reading has no spread of its own;
    when it starts to move, every reading is off what the statistics know. After _LASTING such
    readings in a row the rule starts over and learns the relation anew: quiet again a history
    later, and it still catches a drift after that. (It used to stay anomalous for good.)"""
    rng = np.random.default_rng(4)
    values = machine(rng, 3000)
    values[:300, 3] = values[0, 3]
    values[2500:2560, 0] += 3 * GAINS[0] * np.arange(1, 61) / 60
    _, chance = run(values)
    flagged = np.flatnonzero(chance < BAR)
    assert flagged[0] >= 300  # nothing to judge while the channel is still
    quiet_from = 300 + _LASTING + COUPLING_HISTORY
    assert chance[quiet_from:2500].min() > BAR
    assert chance[2500:2520].min() < BAR
