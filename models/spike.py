"""The spike rule: a reading that leaves its stream's path and comes straight back, judged one
reading late.

A spike in a wandering level, or in a daily cycle the stream has not yet shown whole, can sit
inside the spread the GRU predicts for the next reading: neither it nor the other rules know yet
where the stream is going. The reading after the spike does. A spike is a reading far from the
midpoint of its two neighbours,

    r = x[t-1] - (x[t-2] + x[t]) / 2,

where a wander, a cycle or any trend over three readings cancels out (a straight line exactly),
and what is left is the noise (1.22 of its spread) and the spike. Only a reading that came back
is judged: one further from both its neighbours than they are from each other (the reading before
a spike or a shift has an r half the step too, but the step lies between its neighbours). A stream of whole numbers (all
its values so far whole multiples of their greatest common divisor, its unit) is judged on
Anscombe's root of its counts, 2·√(x / unit + 3/8), whose spread is the same at every rate: a
count's upper tail is long where its rate is low (a 4 among 0s and 1s), and the normal law on raw
counts paged on it (4 of 5 false alerts the rule added on a long synthetic file). Per stream and feature, an
exponentially weighted mean of r² gives r's own spread; the rule's chance is the largest |r|'s
two-sided tail under Student's t with as many degrees of freedom as the mean has taken r's (up to
_DOF_MAX), times the number of features. The mean is robust as the residual rule's is: one r
moves it by at most _CAP² times itself, so a spike does not teach the stream that it is spiky,
and a reading more than _CAP spreads out is not the next one's neighbour (its midpoint is).

The flag falls on the reading after the spike: an alert one reading late, where the others missed
it. An alert's explanation gives the spiked reading as ``previous`` and its neighbours' midpoint
as ``previous_expected``.

Memory per stream: per feature, the two last values, the mean of r² and the unit (``spike_size``:
0 before a value, -1 once one is not a whole number ≥ 0); how many events the stream has seen
comes from its running statistics.

>>> memory, rng = np.zeros((1, spike_size(1))), np.random.default_rng(0)
>>> def step(x, seen):
...     chance, _, _ = advance_spike(memory, np.array([[x]]), np.array([float(seen)]))
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

from models.bounds import DEVIATION_MAX
from models.tails import student_tail

__all__ = ["SPIKE_HISTORY", "advance_spike", "spike_size"]

# Events before a stream's spread of r is trusted (the calibration's warm-up): r's chance is 1
# (no word) until then.
SPIKE_HISTORY = 10
# The mean of r² weighs ~the last 100 r's once the stream is older than that (an exact mean before).
_ALPHA = 0.01
_CAP = 4.0
_DOF_MAX = 200.0
# Whole numbers past this are not judged as counts (their gcd would overflow int64).
_COUNT_MAX = 2.0**53


def spike_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return 4 * features


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


def advance_spike(
    memory: np.ndarray, values: np.ndarray, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, spike_size) is updated in place with
    the transformed ``values`` (B, features); ``seen`` (B,) is how many events each stream had seen
    before this one. Returns the chance that the stream's previous reading was a spike (B; 1 while
    the stream has seen fewer than SPIKE_HISTORY events, or where it cannot matter), that reading
    (B, features) and the midpoint of its neighbours (B, features; NaN before a stream's third
    event)."""
    values = np.asarray(values, dtype=np.float64)
    features = values.shape[1]
    before, last, spread, unit = (memory[:, k * features : (k + 1) * features] for k in range(4))
    seen = np.asarray(seen, dtype=np.float64)[:, None]
    has_r = seen >= 2
    midpoint = np.where(has_r, (before + values) / 2, np.nan)
    _advance_unit(unit, values)
    judged_as = [_judged_as(v, unit) for v in (before, last, values)]
    r = np.where(has_r, np.clip(judged_as[1] - (judged_as[0] + judged_as[2]) / 2, -DEVIATION_MAX, DEVIATION_MAX), 0.0)
    # It came back: its neighbours are closer to each other than it is to them. The reading before
    # a spike, or before a shift, has an r half the step, and the step lies between its neighbours.
    back = np.abs(judged_as[2] - judged_as[0]) < np.abs(r)
    learned = np.maximum(seen - 2, 0.0)  # r's the spread has taken in before this one
    judged = (seen >= SPIKE_HISTORY) & (spread > 0)
    deviate = np.where(judged, np.abs(r) / np.sqrt(np.where(judged, spread, 1.0)), 0.0)
    tail = student_tail(np.where(back, deviate, 0.0), np.clip(learned - 1, 1.0, _DOF_MAX))
    chance = np.minimum(1.0, tail.min(axis=1) * features)
    previous = last.copy()
    square = r * r
    # Until the spread is above 0 (a count stream's first r's may all be 0) r is taken whole.
    taught = np.where((learned > 0) & (spread > 0), np.minimum(square, _CAP * _CAP * spread), square)
    weight = np.maximum(1.0 / (learned + 1.0), _ALPHA)
    spread += np.where(has_r, weight * (taught - spread), 0.0)
    # A spike is not a neighbour: the next reading's r takes the midpoint in its place, or the
    # reading after a spike would be judged one too, named as the spike.
    before[:] = np.where(seen > 0, np.where(back & (deviate > _CAP), midpoint, last), values)
    last[:] = values
    return chance, previous, midpoint
