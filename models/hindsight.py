"""The hindsight rule: a reading judged once the next one is in, as a spike (it left the stream's
path and came straight back) or as a step (it left, and the next reading stayed with it).

The GRU predicts the next reading from the ones before, and for a young stream, or a wandering
one whose noise is large against its wander, its spread is wide: a spike or a shift of 5-7 noise
sds can sit inside it, since nothing yet says where the stream is going. The reading after it
does. Per stream and feature, with x the readings (t the newest):

- a spike is a reading far from the midpoint of its two neighbours,
  r = x[t-1] - (x[t-2] + x[t]) / 2, judged only where it came back: further from both neighbours
  than they are from each other (the reading before a spike or a shift has an r of half the step
  too, but the step lies between its neighbours);
- a step is a pair of readings far from the pair before them,
  s = (x[t-1] + x[t]) / 2 - (x[t-3] + x[t-2]) / 2, judged only where the pair agrees: closer to
  each other than to the pair before (a spike is no step). Runs of three readings against the
  three before as well (less noise, a reading later) caught 1 more incident on development seeds
  9-11 for 3 more false alerts.

A wander, a cycle or a trend over a few readings cancels out of both (a straight line exactly),
and what is left is the noise (r at 1.22 of its spread, s of two readings at 1) and the incident.
Each has its own spread: an exponentially weighted mean of its squares, robust as the residual
rule's (one value moves it by at most _CAP² times itself, so an incident does not teach the
stream that it is spiky), and a spike more than _CAP spreads out is not the next reading's
neighbour (its midpoint is). A spread's first value has nothing to be capped against and is taken
whole: a sentinel among a stream's first readings swells it. From the stream's ROBUST_FROM-th
reading on, the normalisation's running scale (which has dropped such readings by then) finds it
out: r and s can have at most _WIDEST times the readings' variance, and a spread past _CAP² times
that starts again from that widest. The rule then sees spikes of ~10 noise sds from a few dozen
readings on, where it was blind for thousands (for good, after a 1e308). A sentinel later is
capped by the spreads it meets. The rule's chance is the rarer
part's: its largest deviation's two-sided tail under Student's t with as many degrees of freedom
as its mean has taken values (up to _DOF_MAX), times the number of features.

A stream of whole numbers (all its values so far whole multiples of their greatest common divisor,
its unit) is judged on Anscombe's root of its counts, 2·√(x / unit + 3/8), whose spread is the same
at every rate: a count's upper tail is long where its rate is low (a 4 among 0s and 1s), and the
normal law on raw counts paged on it (4 of 5 false alerts the spike part added on a long synthetic
file).

The flag falls on the reading after the spike, or the step's second reading: one reading late,
where the other rules missed it. An alert's explanation gives the reading before this one as
``previous`` and what it was judged against (its neighbours' midpoint, or the mean of the run
before the step) as ``previous_expected``.

Memory per stream: per feature, the last three values, the two spreads and the unit
(``hindsight_size``; the unit 0 before a value, -1 once one is not a whole number ≥ 0); how many
events the stream has seen comes from its running statistics.

>>> memory, rng = np.zeros((1, hindsight_size(1))), np.random.default_rng(0)
>>> center, scale = np.zeros((1, 1)), np.full((1, 1), 10.0)  # the walk's, roughly
>>> def step(x, seen):
...     chance, _, _ = advance_hindsight(memory, np.array([[x]]), np.array([float(seen)]), center, scale)
...     return float(chance[0])
>>> wander = np.cumsum(rng.normal(0, 1.0, 300)) + rng.normal(0, 0.5, 300)  # a random walk, noisy
>>> quiet = [step(x, seen) for seen, x in enumerate(wander)]
>>> min(quiet) > 1e-4
True
>>> _ = step(wander[-1] + 8.0, 300)  # a spike of 8 noise sds on the walk's last level
>>> step(wander[-1], 301) < 1e-6  # judged when the next reading comes back
True
"""

from __future__ import annotations

import numpy as np

from models.bounds import DEVIATION_MAX, restart_wild, squared_scale
from models.tails import student_tail

__all__ = ["HINDSIGHT_HISTORY", "advance_hindsight", "hindsight_size"]

# Events before a stream's spreads are trusted (the calibration's warm-up): the chance is 1 (no
# word) until then.
HINDSIGHT_HISTORY = 10
# The means of r² and s² weigh ~the last 100 values once the stream is older than that (exact
# means before).
_ALPHA = 0.01
_CAP = 4.0
# r and s weigh readings by 1, 1/2, 1/2 and 1/2 four times: whatever their correlation, neither
# has more than _WIDEST times the readings' variance. A spread past _CAP² times that is a wild
# reading's, and starts again from that widest.
_WIDEST = 4.0
_DOF_MAX = 200.0
# Whole numbers past this are not judged as counts (their gcd would overflow int64).
_COUNT_MAX = 2.0**53
# Floats per feature: x[t-3], x[t-2], x[t-1], the spike's spread, the step's spread, the unit.
_PARTS = 6


def hindsight_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return _PARTS * features


def _advance_unit(unit: np.ndarray, values: np.ndarray) -> None:
    """Each stream's unit after ``values`` (in place): the gcd of its whole values ≥ 0, -1 for good
    once one is not."""
    whole = (values >= 0) & (values < _COUNT_MAX) & (values == np.round(values))
    counts = np.where(whole, values, 0.0).astype(np.int64)
    divisor = np.gcd(np.where(unit > 0, unit, 0.0).astype(np.int64), counts).astype(np.float64)
    unit[:] = np.where((unit < 0) | ~whole, -1.0, divisor)


def _judged_as(values: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Values as the rule judges them: a count stream's by Anscombe's root, others as they are."""
    counting = unit > 0
    return np.where(counting, 2.0 * np.sqrt(np.maximum(values / np.where(counting, unit, 1.0), 0.0) + 0.375), values)


def _bounded(deviation: np.ndarray) -> np.ndarray:
    """A deviation within ±DEVIATION_MAX: a wild reading (a sentinel such as 1e308) makes sums
    that overflow to inf, or NaN (inf - inf), which is no deviation at all; its square stays finite
    for the spreads."""
    return np.clip(np.nan_to_num(deviation, nan=0.0), -DEVIATION_MAX, DEVIATION_MAX)


def _deviate(
    value: np.ndarray, spread: np.ndarray, judged: np.ndarray, learned: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """|value| against its spread where ``judged`` (0 elsewhere), and its chance under Student's t
    (B, features). Then the spread learns the value (in place), capped once it has one."""
    judged = judged & (spread > 0)
    deviate = np.where(judged, np.abs(value) / np.sqrt(np.where(judged, spread, 1.0)), 0.0)
    chance = student_tail(deviate, np.clip(learned - 1, 1.0, _DOF_MAX))
    square = value * value
    taught = np.where((learned > 0) & (spread > 0), np.minimum(square, _CAP * _CAP * spread), square)
    spread += np.where(learned >= 0, np.maximum(1.0 / np.maximum(learned + 1.0, 1.0), _ALPHA) * (taught - spread), 0.0)
    return deviate, chance


def _widest(unit: np.ndarray, center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The widest spread r or s can have, from the stream's running centre and scale: _WIDEST times
    the variance, in a count stream's Anscombe units (the scale times the root's slope at the
    centre: the delta method)."""
    counting = unit > 0
    per_unit = np.where(counting, unit, 1.0)
    slope_squared = np.where(counting, 1.0 / (per_unit * (np.maximum(center, 0.0) + 0.375 * per_unit)), 1.0)
    return _WIDEST * squared_scale(scale) * slope_squared


def advance_hindsight(
    memory: np.ndarray, values: np.ndarray, seen: np.ndarray, center: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, hindsight_size) is updated in place
    with the transformed ``values`` (B, features); ``seen`` (B,) is how many events each stream had
    seen before this one; ``center`` and ``scale`` (B, features) its running mean and standard
    deviation before this event (the normalisation's, which has dropped wild first readings by the
    stream's ROBUST_FROM-th event: from then on they find out a wild spread). Returns the chance
    that the stream's previous reading was a spike or the start of a step (B; 1 while the stream
    has seen fewer than HINDSIGHT_HISTORY events, or where it cannot matter), that reading
    (B, features) and what the rarer part judged it against (B, features; NaN before a stream's
    third event)."""
    with np.errstate(over="ignore", invalid="ignore"):  # wild readings: _bounded
        return _advance(
            memory,
            np.asarray(values, dtype=np.float64),
            np.asarray(seen, dtype=np.float64),
            np.asarray(center, dtype=np.float64),
            np.asarray(scale, dtype=np.float64),
        )


def _advance(
    memory: np.ndarray, values: np.ndarray, seen: np.ndarray, center: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    features = values.shape[1]
    third, second, last, spike_spread, step_spread, unit = (
        memory[:, k * features : (k + 1) * features] for k in range(_PARTS)
    )
    seen = seen[:, None]
    _advance_unit(unit, values)
    # A wild first reading swells the spreads it starts (nothing caps a spread's first value); the
    # stream's own scale, once it has dropped such readings, finds them out.
    widest = _widest(unit, center, scale)
    for spread in (spike_spread, step_spread):
        restart_wild(spread, seen, widest, _CAP * _CAP)
    # The readings as judged, oldest first (a young stream's slots before its first value are unused).
    x3, x2, x1, x0 = (_judged_as(v, unit) for v in (third, second, last, values))
    judging = seen >= HINDSIGHT_HISTORY

    # A spike: the previous reading against the midpoint of its neighbours, where it came back.
    has_r = seen >= 2
    r = np.where(has_r, _bounded(x1 - (x2 + x0) / 2), 0.0)
    back = np.abs(x0 - x2) < np.abs(r)
    r_deviate, r_chance = _deviate(r, spike_spread, has_r & back & judging, np.where(has_r, seen - 2, -1.0))
    midpoint = np.where(has_r, second / 2 + values / 2, np.nan)  # halves: 1e308 + 1e308 is inf
    # A step: the pair (previous, this) against the pair before it, where the pair agrees.
    has_s = seen >= 3
    s = np.where(has_s, _bounded((x1 + x0) / 2 - (x3 + x2) / 2), 0.0)
    agrees = np.abs(x0 - x1) < np.abs(s)
    _, s_chance = _deviate(s, step_spread, has_s & agrees & judging, np.where(has_s, seen - 3, -1.0))
    stepped = (s_chance.min(axis=1) < r_chance.min(axis=1))[:, None]
    chance = np.where(stepped, s_chance, r_chance)
    expected = np.where(stepped, np.where(has_s, third / 2 + second / 2, np.nan), midpoint)
    previous = last.copy()
    # A spike is not a neighbour: the next readings take the midpoint in its place, or the reading
    # after a spike would be judged too, and named as the spike.
    third[:], second[:] = second, np.where(back & (r_deviate > _CAP), midpoint, last)
    last[:] = values
    return np.minimum(1.0, chance.min(axis=1) * features), previous, expected
