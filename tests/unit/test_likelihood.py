"""The anomaly likelihood over a stream's surprise (models.likelihood)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.likelihood import (
    LIKELIHOOD_TOP,
    SPELL_SCORE,
    AnomalyLikelihood,
    advance_gate,
    gate_probabilities,
    gate_probability,
    gate_size,
)


def _noise(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Surprise, and values that fill their range evenly: no level inside it stays new for long
    (a Gaussian's sparse tails would be novel now and then, which is not what these tests test)."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(8.0, 12.0, size=(n, 1))
    values[:2, 0] = 8.0, 12.0  # the range from the start: no record is beaten by a hair later
    return np.abs(rng.normal(size=n)), values


def test_nothing_is_scored_while_learning() -> None:
    surprise, values = _noise(100)
    scores = AnomalyLikelihood(learning=100).score_series(surprise, values)
    assert np.all(scores == 0.5)


def test_a_run_of_surprise_scores_far_above_noise() -> None:
    surprise, values = _noise(3000)
    surprise[2500:2510] += 6.0  # ten events the model did not expect, values within range
    scores = AnomalyLikelihood(spatial=False).score_series(surprise, values)
    assert scores[2500:2510].max() > 0.5
    assert scores[400:2500].max() < scores[2500:2510].max()
    # a red likelihood is near-certain once: its successors are demoted
    red = scores[288:] > 0.5  # likelihood ≥ 0.99999 (0.5 itself is "still learning")
    assert red.sum() >= 1 and not np.any(red[1:] & red[:-1])


def test_a_record_is_judged_before_the_likelihood_has_learned_but_a_new_level_is_not() -> None:
    """A range needs fewer events than a history of surprise: a record scores over every
    likelihood from the stream's ``record_learning``-th event, a level inside the range only once
    the likelihood has learned (its bins fill slower), and nothing scores before that."""
    surprise, values = _noise(300)
    values[2:, 0] = np.where(values[2:, 0] < 10.0, 8.5, 11.5)  # two levels: 10 has never been seen
    values[50, 0] = 13.0  # a record before records are judged
    values[150, 0] = 14.0  # a record after
    values[200, 0] = 10.0  # a new level inside the range, before the likelihood has learned
    scores = AnomalyLikelihood(learning=288, record_learning=100).score_series(surprise, values)
    assert scores[150] > LIKELIHOOD_TOP
    assert np.all(np.delete(scores[:288], 150) == 0.5)
    assert AnomalyLikelihood(learning=100, record_learning=100).score_series(surprise, values)[200] > LIKELIHOOD_TOP


def test_a_novel_spell_scores_over_every_likelihood_where_it_starts() -> None:
    """A detector's stuck rule marks where a spell longer than any before starts: that event
    scores as a novel value a whole range away, though its value is one the stream has shown."""
    surprise, values = _noise(1000)
    surprise[500:510] += 50.0  # a red likelihood
    values[700:760, 0] = values[699, 0]
    spells = np.zeros(1000, dtype=bool)
    spells[705] = True
    scores = AnomalyLikelihood().score_series(surprise, values, spells)
    assert scores[705] == SPELL_SCORE > LIKELIHOOD_TOP >= np.delete(scores, 705).max()
    assert AnomalyLikelihood(spatial=False).score_series(surprise, values, spells)[705] < LIKELIHOOD_TOP


def test_a_novel_value_is_ranked_by_its_distance_from_what_the_stream_has_shown() -> None:
    """On the signed log scale, as a share of the range: past the range, from its edge; inside
    it, from the nearest bin that held a value."""
    level = np.log1p  # the gate's scale, for positive values
    lk = AnomalyLikelihood(learning=2, record_learning=2, spatial_quiet=0)
    state = lk.new_state(1)
    for value in (1.0, 9.0, 1.0):
        lk.update(1.0, [value], state)
    lo, hi = level(1.0), level(9.0)
    width = (hi - lo) / 64
    inside = min(level(2.0) - (lo + width), (lo + 63 * width) - level(2.0)) / (hi - lo)
    assert lk.update(1.0, [2.0], state) == pytest.approx(1.0 - (1.0 - LIKELIHOOD_TOP) / (1.0 + inside), abs=1e-15)
    outside = (level(30.0) - hi) / (hi - lo)
    assert lk.update(1.0, [30.0], state) == pytest.approx(1.0 - (1.0 - LIKELIHOOD_TOP) / (1.0 + outside), abs=1e-15)


def test_a_value_outside_the_seen_range_scores_over_every_likelihood() -> None:
    surprise, values = _noise(1000)
    surprise[500:510] += 50.0  # a red likelihood: the top of what the surprise alone can score
    values[900, 0] = values[:900, 0].max() + 0.5
    scores = AnomalyLikelihood().score_series(surprise, values)
    assert scores[900] > LIKELIHOOD_TOP >= scores[:900].max()
    assert scores[500:510].max() == LIKELIHOOD_TOP
    assert AnomalyLikelihood(spatial=False).score_series(surprise, values)[900] < LIKELIHOOD_TOP


def test_values_outside_the_range_rank_by_how_far_outside() -> None:
    """A record beaten by a hair scores under one beaten by half the range, which scores under one
    ten ranges out: a threshold that pages less drops the near misses first."""
    surprise, values = _noise(2000)
    low, high = values[:500, 0].min(), values[:500, 0].max()
    width = high - low
    excursions = {600: high + 0.001 * width, 1000: low - 0.5 * width, 1500: high + 10 * width}
    values[501:, 0] = np.clip(values[501:, 0], low, high)  # nothing else leaves the first range
    for at, value in excursions.items():
        values[at, 0] = value
    scores = AnomalyLikelihood(learning=100).score_series(surprise, values)
    outside = [scores[at] for at in excursions]
    assert LIKELIHOOD_TOP < outside[0] < outside[1] < outside[2] < 1.0
    assert outside[0] == pytest.approx(1.0 - (1.0 - LIKELIHOOD_TOP) / 1.001)


def test_a_level_the_stream_has_never_been_at_scores_over_every_likelihood() -> None:
    """A square wave between 0 and 10 that stops halfway, at 5: inside the range, but nowhere the
    stream has been. Once it has been there, it is no longer new."""
    rng = np.random.default_rng(1)
    surprise = np.abs(rng.normal(size=1200))
    values = (np.where((np.arange(1200) // 50) % 2 == 0, 0.0, 10.0) + rng.uniform(-0.5, 0.5, 1200))[:, None]
    values[:2, 0] = -0.5, 10.5  # the range from the start
    values[1000:1010, 0] = 5.0 + rng.uniform(-0.05, 0.05, 10)
    values[1100, 0] = 5.0
    scores = AnomalyLikelihood().score_series(surprise, values)
    assert scores[1000] > LIKELIHOOD_TOP >= max(scores[:1000].max(), scores[1001:].max())
    assert AnomalyLikelihood(spatial=False).score_series(surprise, values)[1000] < LIKELIHOOD_TOP
    # Ranked by its distance from the nearest level held (the bin of the upper plateau's lowest
    # value, 9.5), as a share of the range, both on the signed log scale: within a bin of ~0.16.
    share = (1.0 - LIKELIHOOD_TOP) / (1.0 - scores[1000]) - 1.0
    expected = (math.log1p(9.5) - math.log1p(values[1000, 0])) / (math.log1p(10.5) + math.log1p(0.5))
    assert expected - 1 / 64 <= share <= expected


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=120),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=40),
)
@example([0.0, 1.0, 2.0, 3.0, 4.0], [0, 4, 2])  # a ramp: every event stretches the range
@example([5.0, 5.0, 5.0, 1e6], [0])  # a range of one value, then one far wider
def test_a_value_the_stream_has_shown_is_never_novel(fresh: list[float], repeats: list[int]) -> None:
    """However the range has grown since (the bins are redrawn each time it does), a value the
    stream has already shown does not open the gate: redrawing blurs the bins, never empties one."""
    lk = AnomalyLikelihood(learning=0, spatial_quiet=0)
    memory = np.zeros((1, gate_size(1)))
    for t, value in enumerate(fresh):
        advance_gate(lk, memory, np.array([1.0]), np.array([[value]]), np.array([float(t)]))
    for k, pick in enumerate(repeats):
        value = fresh[pick % len(fresh)]
        _, opened = advance_gate(lk, memory, np.array([1.0]), np.array([[value]]), np.array([float(len(fresh) + k)]))
        assert not opened[0]


def test_an_excursion_scores_over_the_likelihood_once() -> None:
    """A ramp past the range sets a new extreme every event: one top score for it, not fifty; a new
    excursion after the stream has been back in range scores again."""
    surprise, values = _noise(1200)
    top = values[:900, 0].max()
    values[900:950, 0] = top + np.linspace(0.1, 5.0, 50)
    values[950:1100, 0] = values[:150, 0]
    values[1100, 0] = top + 10.0
    scores = AnomalyLikelihood(spatial_quiet=20).score_series(surprise, values)
    assert scores[900] > LIKELIHOOD_TOP and np.all(scores[901:950] <= LIKELIHOOD_TOP)
    assert scores[1100] > LIKELIHOOD_TOP


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=400), st.integers(0, 50))
@example([1.0, 1.0, 0.0], 0)  # a likelihood of exactly 0: the log scale gave -4e-12
def test_scores_are_in_the_unit_interval_and_stepwise_equals_series(surprise: list[float], learning: int) -> None:
    lk = AnomalyLikelihood(learning=learning)
    values = np.arange(len(surprise), dtype=np.float64)[:, None] % 7
    series = lk.score_series(surprise, values)
    state = lk.new_state(1)
    stepwise = [lk.update(s, v, state) for s, v in zip(surprise, values, strict=True)]
    assert np.all((series >= 0.0) & (series <= 1.0))
    assert np.array_equal(series, np.array(stepwise))


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 80), min_size=1, max_size=6), seed=st.integers(0, 1000))
def test_streams_scored_at_once_score_as_each_alone(lengths: list[int], seed: int) -> None:
    """score_streams steps streams of different lengths wave by wave; each stream's scores are
    what it scores alone, event by event (novel values, spells and red likelihoods included)."""
    lk = AnomalyLikelihood(learning=20, record_learning=10, spatial_quiet=3)
    rng = np.random.default_rng(seed)
    surprise = [np.abs(rng.standard_t(2, size=n)) * rng.uniform(0.5, 5.0) for n in lengths]
    values = [np.cumsum(rng.normal(size=(n, 1)), axis=0) for n in lengths]
    spells = [rng.random(n) < 0.05 for n in lengths]
    together = lk.score_streams(surprise, values, spells)
    for s, v, b, scores in zip(surprise, values, spells, together, strict=True):
        state = lk.new_state(1)
        alone = [lk.update(float(x), row, state, bool(flag)) for x, row, flag in zip(s, v, b, strict=True)]
        assert scores.tolist() == alone


def test_streams_of_different_widths_are_refused() -> None:
    with pytest.raises(ValueError, match="different numbers of features"):
        AnomalyLikelihood().score_streams([[1.0], [1.0]], [np.zeros((1, 1)), np.zeros((1, 2))])


@settings(max_examples=25, deadline=None)
@given(
    streams=st.integers(1, 5),
    seed=st.integers(0, 1000),
    learning=st.integers(0, 40),
    record_learning=st.integers(0, 40),
)
def test_the_gate_keeps_the_likelihoods_statistics_for_many_streams_at_once(
    streams: int, seed: int, learning: int, record_learning: int
) -> None:
    """advance_gate over several streams, event by event, says what ``update`` says of each
    stream alone: the same z (the score's likelihood, where no red filter demotes it), and the
    gate opens for a novel value exactly where ``update`` scores it over the likelihood — a
    record as soon as records are judged, even while the likelihood is still learning."""
    lk = AnomalyLikelihood(learning=learning, record_learning=record_learning, spatial_quiet=3)
    rng = np.random.default_rng(seed)
    surprise = np.abs(rng.standard_t(3, size=(streams, 150)))
    values = np.cumsum(rng.normal(size=(streams, 150, 2)), axis=1)
    memory = np.zeros((streams, gate_size(2)))
    states = [lk.new_state(2) for _ in range(streams)]
    for t in range(150):
        z, opened = advance_gate(lk, memory, surprise[:, t], values[:, t], np.full(streams, float(t)))
        for i, state in enumerate(states):
            score = lk.update(float(surprise[i, t]), values[i, t], state)
            assert opened[i] == (score > LIKELIHOOD_TOP)
            if t < min(learning, record_learning):
                assert not opened[i]
            if t < learning:
                assert z[i] == np.inf and (opened[i] or score == 0.5)
                continue
            tail = 0.5 * math.erfc(z[i] / math.sqrt(2.0))
            if opened[i]:
                continue
            elif tail > 1e-5:  # not red: no filter reshapes the score
                assert score == pytest.approx(math.log(1.0000000001 - (1.0 - tail)) / math.log(1e-10), abs=1e-6)


def test_the_gate_only_holds_back_what_the_streams_history_does_not_back() -> None:
    far = 1e-3
    probability = np.array([1e-6, 1e-6, 1e-6, 0.5, 1e-6])
    z = np.array([5.0, 1.0, 1.0, 9.0, np.inf])  # inf: still learning
    opened = np.array([False, False, True, False, False])
    gated = gate_probabilities(probability, z, opened, far)
    assert gated[0] == 1e-6  # its history agrees: 5σ is rarer than the event
    assert gated[1] == pytest.approx(0.1587, abs=1e-4)  # 1σ: held back
    assert gated[2] == 1e-6  # outside the range: the gate is open
    assert gated[3] == 0.5  # not anomalous: left alone
    assert gated[4] == 1e-6  # learning: passed through
    one_by_one = [
        gate_probability(float(p), float(v), bool(o), far) for p, v, o in zip(probability, z, opened, strict=True)
    ]
    assert one_by_one == list(gated)
