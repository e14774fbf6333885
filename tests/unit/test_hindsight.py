"""The hindsight rule (models.hindsight): a reading judged once the next one is in, as a spike (it
came straight back) or as the start of a step (the next reading stayed with it)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.hindsight import HINDSIGHT_HISTORY, advance_hindsight, hindsight_size

# The budget the detector gives the rule (the level rule's share of a false-alarm rate of 1e-4).
_BAR = 1e-5


def advance(memory: np.ndarray, values: np.ndarray, seen: np.ndarray, scale: float = np.inf) -> tuple[np.ndarray, ...]:
    """advance_hindsight with the streams' running scale (inf: unknown, nothing is found out
    wild) about a centre of 0."""
    return advance_hindsight(memory, values, seen, np.zeros(values.shape), np.full(values.shape, scale))


def stepped(values: list[float], scale: float = np.inf) -> tuple[list[float], np.ndarray, np.ndarray]:
    """Each value's chance that the reading before it was a spike, that reading and its
    neighbours' midpoint, one stream stepped from a fresh memory (with running scale ``scale``)."""
    memory = np.zeros((1, hindsight_size(1)))
    chances, previous, midpoints = [], [], []
    for seen, value in enumerate(values):
        chance, before, midpoint = advance(memory, np.array([[value]]), np.array([float(seen)]), scale)
        chances.append(float(chance[0]))
        previous.append(float(before[0, 0]))
        midpoints.append(float(midpoint[0, 0]))
    return chances, np.array(previous), np.array(midpoints)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_spike_on_a_wandering_level_is_flagged_when_the_next_reading_comes_back(seed: int) -> None:
    """A random walk (steps of 1) with noise of 2: a spike of 8 noise sds sits well inside a
    wander of this size, and comes straight back. The reading after it is flagged, and names the
    spiked reading and the midpoint of its neighbours; no normal reading is."""
    rng = np.random.default_rng(seed)
    values = list(100.0 + np.cumsum(rng.normal(0, 1.0, 400)) + rng.normal(0, 2.0, 400))
    values[300] += 16.0
    chances, previous, expected = stepped(values)
    assert chances[301] < _BAR
    assert previous[301] == values[300]
    assert abs(expected[301] - values[300]) > 10.0
    assert min(c for i, c in enumerate(chances) if i != 301) > _BAR


def test_a_young_stream_has_no_word_until_its_history() -> None:
    """Before HINDSIGHT_HISTORY events the spread of r is a handful of values: no chance under 1."""
    chances, _, midpoints = stepped([10.0, 11.0, 10.0, 50.0, 10.0, 11.0, 10.0, 11.0, 10.0, 11.0, 10.0])
    assert chances[:HINDSIGHT_HISTORY] == [1.0] * HINDSIGHT_HISTORY
    assert np.isnan(midpoints[:2]).all()  # no neighbours on both sides yet


def test_a_trend_cancels_out() -> None:
    """A straight line with a little noise: the midpoint of a reading's neighbours is where the
    line is, so a reading 10 noise sds off it is flagged, though the line moves 3 sds a step."""
    rng = np.random.default_rng(3)
    values = [3.0 * i + rng.normal(0, 1.0) for i in range(200)]
    values[150] += 10.0
    chances, _, _ = stepped(values)
    assert chances[151] < _BAR
    assert min(c for i, c in enumerate(chances) if i != 151) > _BAR


def test_counts_are_judged_on_their_root() -> None:
    """A Poisson count at a rate of 0.5: a 4 among its 0s and 1s is one reading in ~600, and on the
    raw counts r was 8 of its spreads (paged). On Anscombe's root it is not; a burst of 20 is."""
    rng = np.random.default_rng(4)
    counts = [float(v) for v in rng.poisson(0.5, 500)]
    counts[200:203] = [0.0, 4.0, 0.0]
    counts[400:403] = [0.0, 20.0, 0.0]
    chances, _, _ = stepped(counts)
    assert chances[202] > _BAR
    assert chances[402] < _BAR
    assert min(c for i, c in enumerate(chances) if i != 402) > _BAR


def test_a_count_in_thousands_is_counted_in_its_unit() -> None:
    """Counts of thousands (the unit the gcd finds) are judged as counts of 1: the spike of 30
    where 5 are expected is flagged, and the unit is kept in the memory."""
    rng = np.random.default_rng(5)
    counts = [1000.0 * v for v in rng.poisson(5.0, 300)]
    counts[250] = 30000.0
    memory = np.zeros((1, hindsight_size(1)))
    chances = []
    for seen, value in enumerate(counts):
        chance, _, _ = advance(memory, np.array([[value]]), np.array([float(seen)]))
        chances.append(float(chance[0]))
    assert memory[0, -1] == 1000.0  # the unit, the memory's last float
    assert chances[251] < _BAR
    # One value off the whole numbers: the stream is no count stream, for good.
    advance(memory, np.array([[5500.5]]), np.array([300.0]))
    advance(memory, np.array([[5000.0]]), np.array([301.0]))
    assert memory[0, -1] == -1.0


def test_several_streams_step_as_each_alone() -> None:
    """A batch of streams gives each stream what it gets stepped alone."""
    rng = np.random.default_rng(6)
    streams = [list(rng.normal(0, 1, 60) + 5.0 * k) for k in range(3)]
    streams[1] = [float(v) for v in rng.poisson(3.0, 60)]
    alone = [stepped(values)[0] for values in streams]
    memory = np.zeros((3, hindsight_size(1)))
    together = []
    for seen in range(60):
        values = np.array([[streams[k][seen]] for k in range(3)])
        chance, _, _ = advance(memory, values, np.full(3, float(seen)))
        together.append(chance)
    assert np.allclose(np.array(together).T, np.array(alone), rtol=1e-12, atol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_shift_in_a_noisy_wandering_level_is_flagged_on_its_second_reading(seed: int) -> None:
    """A random walk (steps of 0.3) in noise of 1: a shift of 6 noise sds is flagged once its
    second reading stays with the first, and names the first against the pair before; no normal
    reading is flagged, and the shift's first reading alone is not (it could be a spike)."""
    rng = np.random.default_rng(seed)
    values = list(50.0 + np.cumsum(rng.normal(0, 0.3, 400)) + rng.normal(0, 1.0, 400))
    values[300:] = [v + 6.0 for v in values[300:]]
    chances, previous, expected = stepped(values)
    assert chances[301] < _BAR
    assert previous[301] == values[300]
    assert expected[301] == pytest.approx((values[298] + values[299]) / 2)
    assert min(c for i, c in enumerate(chances) if i not in (301, 302, 303)) > _BAR


def test_a_step_in_counts_is_judged_on_their_root() -> None:
    """A Poisson count at 8 that steps to 30 (7.8 of its sds) is flagged within the step's first
    three readings; nothing before it is."""
    rng = np.random.default_rng(7)
    counts = [float(v) for v in rng.poisson(8.0, 200)] + [float(v) for v in rng.poisson(30.0, 30)]
    chances, _, _ = stepped(counts)
    assert min(chances[200:203]) < _BAR
    assert min(chances[:200]) > _BAR


def test_wild_readings_leave_chances_and_memory_finite() -> None:
    """Sentinels of ±1e308 (their sums overflow to inf, inf - inf is NaN) are judged as what they
    are, and leave no NaN behind: the memory stays finite and the stream is judged after them."""
    values = [1.0, 2.0, 1.5] * 5 + [1e308, 1e308, -1e308, 1e308, 5.0] + [1.0, 2.0, 1.5] * 100
    memory = np.zeros((1, hindsight_size(1)))
    for seen, value in enumerate(values):
        chance, _, _ = advance(memory, np.array([[value]]), np.array([float(seen)]))
        assert np.isfinite(chance).all() and np.isfinite(memory).all()
    assert memory[0, -1] == -1.0  # no count stream: 1e308 is past the whole numbers judged as counts


@pytest.mark.parametrize("at", [3, 8, 50])
def test_a_sentinel_after_a_streams_first_readings_does_not_blind_it(at: int) -> None:
    """A reading of 1e6 from a stream's 4th reading on (noise of 1 about 10) is capped by the
    spreads it meets: a spike of 10 sds 300 readings later is flagged."""
    values = list(10.0 + np.random.default_rng(8).normal(0.0, 1.0, 400))
    values[at] = 1e6
    values[300] += 10.0
    chances, _, _ = stepped(values)
    assert chances[301] < _BAR


@pytest.mark.parametrize("sentinel", [1e6, 1e308, -1e308])
@pytest.mark.parametrize("at", [0, 1, 2])
def test_a_sentinel_among_a_streams_first_readings_is_found_out_by_its_scale(sentinel: float, at: int) -> None:
    """Among a stream's first three readings a sentinel is the first value a spread learns, taken
    whole. From the stream's 5th reading its running scale (the normalisation's, which has dropped
    the sentinel by then; here the noise's sd, 1) finds the spread out as wild and starts it again:
    a spike of 10 sds at reading 60 is flagged, and nothing normal from reading 10 is. Without a
    scale to find it out by, the rule is blind there."""
    values = list(10.0 + np.random.default_rng(9).normal(0.0, 1.0, 80))
    values[at] = sentinel
    values[60] += 10.0
    chances, _, _ = stepped(values, scale=1.0)
    assert chances[61] < _BAR
    assert min(c for i, c in enumerate(chances) if i >= HINDSIGHT_HISTORY and i != 61) > _BAR
    blind, _, _ = stepped(values)
    assert blind[61] > _BAR


def test_a_count_streams_wild_spread_is_found_out_in_its_anscombe_units() -> None:
    """A count stream (Poisson at rate 5) whose first reading is 10,000 (a whole number: the
    stream stays a count stream): its spreads, in Anscombe units, are found out by the running
    scale √5 about 5 (the root's slope there turns it into ~1), and a count of 30 at reading 80 is
    flagged; nothing normal from reading 10 is."""
    counts = [float(v) for v in np.random.default_rng(10).poisson(5.0, 120)]
    counts[0], counts[80] = 10_000.0, 30.0
    memory = np.zeros((1, hindsight_size(1)))
    chances = []
    for seen, value in enumerate(counts):
        chance, _, _ = advance_hindsight(
            memory, np.array([[value]]), np.array([float(seen)]), np.array([[5.0]]), np.array([[5.0**0.5]])
        )
        chances.append(float(chance[0]))
    assert memory[0, -1] == 1.0  # still counted in ones
    assert min(chances[81:83]) < _BAR
    assert min(c for i, c in enumerate(chances) if i >= HINDSIGHT_HISTORY and i not in (81, 82)) > _BAR


@settings(max_examples=80, deadline=None)
@given(
    sentinel=st.floats(allow_nan=False, allow_infinity=False),
    at=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_whatever_a_stream_starts_with_a_spike_at_its_100th_reading_is_flagged(
    sentinel: float, at: int, seed: int
) -> None:
    """Whatever finite reading sits among a stream's first five (noise of 1 about 10, its running
    scale), a spike of 12 sds at its 100th reading is flagged once the next reading is in, and the
    memory stays finite. A reading orders of magnitude off is found out against the scale from the
    5th reading; one within 16 times the widest spread (a 0 here, 10 sds off) is not, and weighs
    on the spreads' exact means until they have forgotten it: at the 30th reading, a 0 at the
    2nd left such a spike at a chance of 1.7e-4."""
    values = list(10.0 + np.random.default_rng(seed).normal(0.0, 1.0, 102))
    values[at] = sentinel
    values[100] += 12.0
    memory = np.zeros((1, hindsight_size(1)))
    chances = []
    for seen, value in enumerate(values):
        chance, _, _ = advance(memory, np.array([[value]]), np.array([float(seen)]), scale=1.0)
        chances.append(float(chance[0]))
        assert np.isfinite(memory).all()
    assert chances[101] < _BAR
