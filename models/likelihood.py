"""Anomaly likelihood: how unusual a stream's *recent* surprise is against its own history.

The GRU's surprise (the whitened residual of the predicted features) is on a scale that differs
from stream to stream: a noisy stream is always a little surprising. Following Numenta's anomaly
likelihood (Ahmad et al., 2017), the score of an event is the Gaussian tail of the short-term
average of surprise against the long-term distribution of that average — both kept as
exponentially weighted statistics, so the state is a handful of floats and everything is online.
Two additions from the same detector family:

- a *spatial* check: a value outside every value the stream has shown so far scores over every
  likelihood at once — once per excursion: while a stream keeps setting new extremes (a trend, a
  ramp), it scores so again only after ``spatial_quiet`` events inside its range. Such scores are
  ranked by how far outside the value is, as a share of the range so far: a record beaten by a
  hair is the commonest false alarm on real series (NAB: median 0.3 % of the range outside its
  windows, 13 % inside), so a threshold set to page less drops those first;
- a red filter: only the first of consecutive near-certain scores stays near-certain, so one
  incident is one top score rather than a plateau of them.

The output is a score in [0, 1], comparable across streams: the likelihood log-scaled (1 − 1e-10
likelihood ↦ 1.0) and held under ``LIKELIHOOD_TOP``; a value outside the range scores from
``LIKELIHOOD_TOP`` (a hair outside) towards 1.0 (far outside).

>>> lk = AnomalyLikelihood(learning=3)
>>> state = lk.new_state(1)
>>> [round(lk.update(s, [v], state), 4) for s, v in [(1, 5), (1, 6), (1, 5), (1, 5.5), (1, 9)]]
[0.5, 0.5, 0.5, 0.0301, 0.9998]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GATE_FIELDS",
    "LIKELIHOOD_TOP",
    "AnomalyLikelihood",
    "LikelihoodState",
    "advance_gate",
    "gate_probabilities",
    "gate_probability",
    "gate_size",
]

_RED = 0.99999  # a likelihood this close to 1 is "red"; a second red in a row is demoted
_DEMOTED = 0.999
_LOG_BASE = math.log(1.0 - 0.9999999999)
# The likelihood's scores stay under this; a value outside the stream's range scores above it.
LIKELIHOOD_TOP = 0.999


@dataclass
class LikelihoodState:
    """One stream's likelihood: the statistics ``advance_gate`` keeps (a row of ``memory``), the
    events seen, and whether the last score was red."""

    memory: np.ndarray  # (1, gate_size(features))
    count: int = 0
    prev_red: bool = False


@dataclass(frozen=True)
class AnomalyLikelihood:
    learning: int = 288  # events before a stream is scored (0.5 = "don't know" until then)
    short_alpha: float = 0.2  # ~ the last 10 events
    long_alpha: float = 1 / 2000  # the slowest weight of the long-term statistics
    spatial: bool = True
    spatial_quiet: int = 20  # events inside the range before an excursion scores over the likelihood again

    def new_state(self, features: int) -> LikelihoodState:
        return LikelihoodState(np.zeros((1, gate_size(features))))

    def update(self, surprise: float, values: Sequence[float] | np.ndarray, state: LikelihoodState) -> float:
        """Score one event of the stream (its surprise and raw feature values), then learn it."""
        x = np.asarray(values, dtype=np.float64).reshape(1, -1)
        bounds = state.memory[0, GATE_FIELDS:].copy()  # the range before this event: the gate widens it
        z, opened = advance_gate(self, state.memory, np.array([float(surprise)]), x, np.array([float(state.count)]))
        state.count += 1
        if state.count <= self.learning:
            return 0.5
        score = min(self._score(float(z[0]), state), LIKELIHOOD_TOP)
        return 1.0 - (1.0 - LIKELIHOOD_TOP) / (1.0 + _outside_share(bounds, x[0])) if opened[0] else score

    def _score(self, z: float, state: LikelihoodState) -> float:
        likelihood = 1.0 - 0.5 * math.erfc(z / math.sqrt(2.0))
        red = likelihood >= _RED
        if red and state.prev_red:
            likelihood = _DEMOTED
        state.prev_red = red
        # Log scale as Numenta's; a likelihood of 0 would give -4e-12: clamp to the unit interval.
        return min(1.0, max(0.0, math.log(1.0000000001 - likelihood) / _LOG_BASE))

    def score_series(self, surprises: Sequence[float] | np.ndarray, values: np.ndarray) -> np.ndarray:
        """One stream, in order: ``values`` is (events, features)."""
        values = np.asarray(values, dtype=np.float64).reshape(len(surprises), -1)
        state = self.new_state(values.shape[1])
        return np.array([self.update(float(s), row, state) for s, row in zip(surprises, values, strict=True)])


# The likelihood's statistics for many streams at once (``AnomalyLikelihood.update`` keeps one
# stream's with them too), and the likelihood as a gate on a detector's per-event decisions
# (FeatureSpec.likelihood_gate). Each stream's are a row of floats of its memory — short, mean,
# var, the last event outside the range (plus one; 0 for none), then the per-feature low and high
# (meaningful once the stream has seen an event). How many events each stream has seen is the
# caller's (a detector's running statistics count them already).
GATE_FIELDS = 4


def gate_size(features: int) -> int:
    """Floats of stream memory the gate keeps for ``features`` values."""
    return GATE_FIELDS + 2 * features


def advance_gate(
    likelihood: AnomalyLikelihood, memory: np.ndarray, surprise: np.ndarray, values: np.ndarray, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, gate_size) is updated in place;
    ``seen`` (B,) is how many events each stream had seen before this one.

    Returns, per event, the z of its stream's recent surprise against the stream's history, and
    whether the gate is open regardless of z: a value outside every value the stream has shown
    (once per excursion, as ``update``). z is +inf while the stream is learning: the gate lets
    every decision through until the stream has a history to be unusual against."""
    n = values.shape[1]
    count = np.asarray(seen, dtype=np.float64)
    short, mean, var, outside_at = (memory[:, k] for k in range(GATE_FIELDS))
    low, high = memory[:, GATE_FIELDS : GATE_FIELDS + n], memory[:, GATE_FIELDS + n :]
    first = count == 0
    short[:] = np.where(first, surprise, short + likelihood.short_alpha * (surprise - short))
    learned = count >= likelihood.learning
    z = np.where(learned, (short - mean) / np.sqrt(np.maximum(var, 1e-12)), np.inf)
    opened = np.zeros(len(count), dtype=bool)
    if likelihood.spatial:
        # No range before the first value (low and high are meaningless then).
        outside = learned & ~first & np.any((values > high) | (values < low), axis=1)
        # outside_at holds the last such event's count plus one: 0 is "none yet".
        opened = outside & ((outside_at == 0) | (count - (outside_at - 1) > likelihood.spatial_quiet))
        outside_at[:] = np.where(outside, count + 1, outside_at)
    weight = np.maximum(1.0 / (count + 1.0), likelihood.long_alpha)
    delta = short - mean
    mean += weight * delta
    var[:] = (1.0 - weight) * (var + weight * delta * delta)
    low[:] = np.where(first[:, None], values, np.minimum(low, values))
    high[:] = np.where(first[:, None], values, np.maximum(high, values))
    return z, opened


def _outside_share(bounds: np.ndarray, values: np.ndarray) -> float:
    """How far outside its stream's range so far (``bounds``: the gate's per-feature lows, then
    highs) an event's ``values`` lie, as a share of that range: the largest over its features (inf
    for a range of one value). Asked only of an excursion, not of every event."""
    low, high = np.split(bounds, 2)
    beyond = np.maximum(np.maximum(values - high, low - values), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 / 0 inside a one-value range: not picked
        share = np.where(beyond > 0, beyond / (high - low), 0.0)
    return float(share.max())


def gate_probabilities(probability: np.ndarray, z: np.ndarray, opened: np.ndarray, far: float) -> np.ndarray:
    """A detector's per-event probabilities, gated: an event below the false-alarm rate ``far``
    stays as improbable only as the Gaussian tail of its stream's recent surprise allows, unless
    the gate is open. Events at or above ``far`` are left as they are."""
    gated = probability.copy()
    for i in np.flatnonzero((probability < far) & ~opened):  # rare: a loop of math.erfc is cheapest
        gated[i] = gate_probability(float(gated[i]), float(z[i]), False, far)
    return gated


def gate_probability(probability: float, z: float, opened: bool, far: float) -> float:
    """``gate_probabilities`` for one event."""
    if probability >= far or opened:
        return probability
    return max(probability, 0.5 * math.erfc(z / math.sqrt(2.0)))
