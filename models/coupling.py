"""The coupling rule: a feature that breaks away from the features it moves with.

A machine's channels follow one load: when it rises, temperature, pressure and current rise with
it. The GRU predicts each reading from the stream's past, so a channel that drifts slowly, or
starts to follow the load inverted, is predicted from its own recent (already broken) values and
looks ordinary step by step. Against the *other channels of the same event* it does not: per
stream, an exponentially weighted mean and covariance of the transformed values give each
feature's value expected from the others (the Gaussian conditional), and its residual against
that, standardised, is r = (Q (x - mean))_i / √Q_ii with Q the inverse covariance. A drift of a
few gains, or a channel moving against its siblings, takes r to tens while the stream's own
noise keeps it near a standard normal; the calibration turns the largest |r| into a chance.

The statistics forget over ~_ALPHA⁻¹ events (the load's daily swing is what pins the relation
down) and an event with a large r teaches them only up to _CAP: an incident does not move the
relation it breaks, while a lasting change is learned slowly. The rule has no word until the
stream has seen COUPLING_HISTORY events.

Memory per stream: the events seen, how many in a row were past _CAP, the mean (n) and the
covariance (n × n).

>>> rng = np.random.default_rng(0)
>>> memory = np.zeros((1, coupling_size(2)))
>>> def step(a, b):
...     r, chance, _ = advance_coupling(memory, np.array([[a, b]]))
...     return r[0], float(chance[0])
>>> load = np.sin(np.arange(300) / 20)
>>> quiet = [step(2 * v + 0.1 * rng.normal(), 3 * v + 0.1 * rng.normal()) for v in load]
>>> bool(max(abs(r).max() for r, _ in quiet) < 5), min(chance for _, chance in quiet) > 1e-4
(True, True)
>>> r, chance = step(2 * load[0] + 1.0, 3 * load[0])  # the first feature moves off its partner
>>> round(float(abs(r).max())), chance < 1e-10
(9, True)
"""

from __future__ import annotations

import numpy as np

from models.bounds import DEVIATION_MAX, ROBUST_FROM
from models.tails import normal_tail

__all__ = ["COUPLING_HISTORY", "advance_coupling", "coupling_size"]

# Events before the relation between a stream's features is trusted: r is 0 (no word) until then.
# Chosen on a development seed (9): at 30 rather than 50 the rule catches drifts that start in a
# stream's first readings (+2 of the short file's 199 incidents, +1 of the long one's 339, one
# more false alert); at 20 its estimates are too young (+11 false alerts).
COUPLING_HISTORY = 30
# The statistics weigh ~the last 200 events once the stream is older than that (an exact mean
# before). Chosen on a development seed (9, 3,000-reading sensor streams): forgetting over 100
# caught 3 fewer of 340 incidents, no fewer false alerts.
_ALPHA = 0.005
# An event whose largest |r| is over _CAP teaches the statistics its deviation shrunk until that
# |r| is _CAP: a stream's spread then grows by at most _ALPHA·_CAP² of itself an event however far
# an incident goes. At a cap of 3 a drift's own readings widened it until, 60 readings in, r was 9
# where 28 was due; at 2 it is 20 (the seed-9 long file: 338 of 339 incidents caught).
_CAP = 2.0
# r divides by a covariance estimated from ~200 events: its tail is a little wider than a normal's.
_SPREAD = 1.2
# A young stream (from its ROBUST_FROM-th event until COUPLING_HISTORY) has no relation to judge
# an event by yet; each feature's deviation teaches at most _YOUNG_CLIP of its own spread, so one
# wild reading (a sentinel such as 65535, a glitch of 1e6) cannot swell the statistics until the
# rule is blind for thousands of events. A real change still gets through: each clipped step
# widens the spread. Deviations past DEVIATION_MAX (a 1e300 reading) are clipped to it, whose
# square does not overflow (models.bounds: the features' running statistics use the same).
_YOUNG_CLIP = 20.0
# Events in a row past _CAP after which a broken relation is taken for the stream's new one: longer
# than the sensor producer's longest incident (a drift of up to 90 readings). Without it, a channel
# stuck from a stream's first reading had no spread to learn its movement by, and the stream stayed
# anomalous for the rest of its file once the channel moved (305 readings in one of seed 9's).
_LASTING = 100


def coupling_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return 2 + features + features * features


def advance_coupling(memory: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, coupling_size) is updated in place
    with the transformed ``values`` (B, features). Returns each feature's residual against the
    value the stream's other features expect, r (B, features; 0 while the stream is young), the
    chance of the largest |r| under a normal law of spread _SPREAD, times the number of features
    (B; 1 while young), and those expected values (B, features; NaN while young)."""
    values = np.asarray(values, dtype=np.float64)
    size, n = values.shape
    seen, broken = memory[:, 0], memory[:, 1]  # views: in place
    mean = memory[:, 2 : 2 + n]
    cov = memory[:, 2 + n :].reshape(size, n, n)
    judged = seen >= COUPLING_HISTORY
    deviation = np.clip(values - mean, -DEVIATION_MAX, DEVIATION_MAX)
    r = np.zeros((size, n))
    expected = np.full((size, n), np.nan)
    if judged.any():
        # A floor on each variance keeps the inverse finite for a feature that has been constant.
        floor = 1e-12 * (1.0 + np.square(mean[judged]))
        precision = np.linalg.inv(cov[judged] + floor[:, :, None] * np.eye(n))
        pulled = np.einsum("bij,bj->bi", precision, deviation[judged])
        diagonal = np.diagonal(precision, axis1=1, axis2=2)
        r[judged] = pulled / np.sqrt(diagonal)
        expected[judged] = values[judged] - pulled / diagonal
    largest = np.abs(r).max(axis=1)
    chance = np.where(judged, np.minimum(1.0, normal_tail(largest / _SPREAD) * n), 1.0)
    # Shrunk, an incident cannot teach the stream its own spread; a lasting change is learned in time.
    step = deviation * (_CAP / np.maximum(largest, _CAP))[:, None]
    young = (seen >= ROBUST_FROM) & ~judged
    if young.any():
        # (A floor relative to the level: a feature constant so far has no spread to clip by.)
        spread = np.sqrt(np.diagonal(cov[young], axis1=1, axis2=2))
        bound = np.maximum(_YOUNG_CLIP * spread, 1e-3 * (1.0 + np.abs(mean[young])))
        step[young] = np.clip(step[young], -bound, bound)
    weight = np.maximum(1.0 / (seen + 1.0), _ALPHA)[:, None]
    mean += weight * step
    memory[:, 2 + n :] = (
        (1.0 - weight[:, :, None]) * (cov + weight[:, :, None] * step[:, :, None] * step[:, None, :])
    ).reshape(size, n * n)
    seen += 1.0
    # A relation broken for _LASTING events in a row is the stream's new one: the rule starts over
    # from this event (and has no word for COUPLING_HISTORY events).
    broken[:] = np.where(largest > _CAP, broken + 1.0, 0.0)
    lasting = broken >= _LASTING
    if lasting.any():
        memory[lasting] = 0.0
        seen[lasting], mean[lasting] = 1.0, values[lasting]
    return r, chance, expected
