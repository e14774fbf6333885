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

Memory per stream: the events seen, the mean (n) and the covariance (n × n).

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

from models.tails import normal_tail

__all__ = ["COUPLING_HISTORY", "advance_coupling", "coupling_size"]

# Events before the relation between a stream's features is trusted: r is 0 (no word) until then.
COUPLING_HISTORY = 50
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


def coupling_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return 1 + features + features * features


def advance_coupling(memory: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, coupling_size) is updated in place
    with the transformed ``values`` (B, features). Returns each feature's residual against the
    value the stream's other features expect, r (B, features; 0 while the stream is young), the
    chance of the largest |r| under a normal law of spread _SPREAD, times the number of features
    (B; 1 while young), and those expected values (B, features; NaN while young)."""
    values = np.asarray(values, dtype=np.float64)
    size, n = values.shape
    seen = memory[:, 0]  # a view: in place
    mean = memory[:, 1 : 1 + n]
    cov = memory[:, 1 + n :].reshape(size, n, n)
    judged = seen >= COUPLING_HISTORY
    deviation = values - mean
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
    weight = np.maximum(1.0 / (seen + 1.0), _ALPHA)[:, None]
    mean += weight * step
    memory[:, 1 + n :] = (
        (1.0 - weight[:, :, None]) * (cov + weight[:, :, None] * step[:, :, None] * step[:, None, :])
    ).reshape(size, n * n)
    seen += 1.0
    return r, chance, expected
