"""The residual rule: an event's residual against the spread of its own stream's residuals.

The GRU predicts each feature's spread from what streams of its kind do. A stream steadier than
the model thinks (a daily cycle it follows closely, a quiet plateau) then shows residuals well
inside the predicted spread, and a spike, a shift or the steps of a drift that are extreme for
that stream stay under a threshold set for all streams. Per stream and feature, an exponentially
weighted mean of the squared whitened residual z² measures the spread the stream really shows;
the rule rescales each residual by it, r = z / √mean, and the calibration turns the largest |r|
of an event into a tail probability (``Calibration.residual``). An alert's explanation gives each
feature's r as ``z_stream`` beside the model's ``z``. (The detector gives z in the stream's own
units, times the scale it normalised the value by: that scale swells during an incident, and
would shrink the residual of the reading that ends it.)

The likelihood gate holds the rule back on streams whose residuals have heavy tails (real series:
an extreme r is habitual there). A stream whose tail has proven light needs no such guard: a
stream that, after TAIL_HISTORY judged events, shows fewer than TAME_EXCURSIONS *excursions* (an
|r| over EXCURSION after models.excursions.QUIET events inside it, unless it goes against the
excursion before it: that is its end, a shift snapping back) over about its last 1,000 events is
*tame*, and its residual rule ungated. Excursions are counted, not events nor their size: an
incident is one excursion however long or large it is, so a stream with a light tail stays tame
after it, while a heavy-tailed one keeps making new ones. (Gaussian residuals pass 5 once in
~1.7 million events; on NAB's real series the median file makes ~4 excursions per 1,000 events,
and synthetic streams, incidents included, about 1.)

Memory per stream: per feature, the mean of z², the count of recent excursions and the event of
the last |r| over EXCURSION (plus one; 0 for none) (``residual_size``); how many events the
stream has seen comes from its running statistics. The mean is robust: one reading moves it by at
most _CAP² times itself, so an incident does not teach the stream that it is noisy.

>>> memory, rng = np.zeros((1, residual_size(1))), np.random.default_rng(0)
>>> def step(z, seen):
...     r, tame, _ = advance_residual(memory, np.array([[z]]), np.array([float(seen)]), np.ones((1, 1)))
...     return float(r[0, 0]), bool(tame[0])
>>> quiet = [step(0.3 * rng.normal(), seen) for seen in range(200)]
>>> max(r for r, _ in quiet) < 4.0, [seen for seen, (_, tame) in enumerate(quiet) if tame][:1]
(True, [100])
>>> r, tame = step(2.0, 200)  # z 2 in a stream whose residuals run at 0.3: r ~7, and it is tame
>>> round(r, 1), tame
(6.9, True)
>>> incident = [step(3.0, seen) for seen in range(201, 221)]  # an incident: 20 readings at z 3
>>> after = [step(0.3 * rng.normal(), seen) for seen in range(221, 400)]
>>> all(tame for _, tame in incident + after)  # one excursion: the stream stays tame
True
>>> spikes = [step(3.0 if seen % 50 == 0 else 0.3 * rng.normal(), seen) for seen in range(400, 700)]
>>> [seen for seen, (_, tame) in enumerate(spikes, 400) if not tame][:1]  # the third excursion: not tame
[451]
"""

from __future__ import annotations

import numpy as np

from models.bounds import restart_wild, squared_scale
from models.excursions import advance_excursions
from models.tails import normal_tail

__all__ = [
    "EXCURSION",
    "RESIDUAL_HISTORY",
    "TAIL_HISTORY",
    "TAME_EXCURSIONS",
    "TAME_LAW_HISTORY",
    "TAME_VERDICT",
    "advance_residual",
    "residual_size",
]

# Events before a stream's spread is trusted: r is 0 (no word) until then.
RESIDUAL_HISTORY = 50
# The mean weighs ~the last 50 events once the stream is older than that (an exact mean before).
_ALPHA = 0.02
_CAP = 4.0
# A spread past _WILD times the square of the stream's scale is a sentinel's, not the model's: a
# whitened residual reaches at most ~3,300 (inputs clipped at 50 of the scale, predicted spreads
# no narrower than e^-3.5), whose square is ~1.1e7. Found out, the spread starts again from the
# scale's square (a residual the model's own size).
_WILD = 1e8
# Judged events before a stream's tail is trusted. Then an |r| over EXCURSION is extreme, and
# under TAME_EXCURSIONS excursions (models.excursions) the stream is tame. Chosen on a development seed (9) and NAB's
# worker alerts: |r| 4.5 to 6 and a bound of 1.5 to 3.5 trade recall on synthetic streams against
# alerts on real ones; a count that forgets over ~500 events lets NAB's bursty series turn tame.
TAIL_HISTORY = 50
# Events before a stream is judged tame or not: until then the rule has no word on its tail.
TAME_VERDICT = RESIDUAL_HISTORY + TAIL_HISTORY
EXCURSION = 5.0
TAME_EXCURSIONS = 2.5
# A tame stream with a day of 5-minute readings behind it is judged by a light-tailed law as well
# as by the pooled calibration (whose tail holds every kind of stream's, count streams' Poisson
# skew among them): normal, with a spread of _TAME_SPREAD (r divides by a spread estimated from
# ~50 readings, and tame streams' r run close to Student's t with ~30 degrees of freedom). Chosen
# on a development seed (9): spreads of 1.3 / 1.2 / 1.15 gave +0.9 / +1.4 / +2.4 points of
# incident recall at -0.3 / -0.2 / -2.0 of alert precision; from 150 readings rather than 288,
# the same recall at -0.8 more precision lost.
TAME_LAW_HISTORY = 288
_TAME_SPREAD = 1.2


def residual_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return 3 * features


def advance_residual(
    memory: np.ndarray, z: np.ndarray, seen: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, residual_size) is updated in place
    with the whitened residuals ``z`` (B, features); ``seen`` (B,) is how many events each stream
    had seen before this one; ``scale`` (B, features), the stream's running scale that ``z`` is in
    units of, finds a sentinel's spread out (from the stream's ROBUST_FROM-th event, once its
    statistics have dropped such readings). Returns each residual against its stream's spread before it, r
    (B, features; 0 while the stream has seen fewer than RESIDUAL_HISTORY), whether each stream
    was tame before it (B,), and the chance of its largest |r| under the light-tailed law (B;
    1 unless it is tame and has seen TAME_LAW_HISTORY events, or where it cannot matter)."""
    z = np.asarray(z, dtype=np.float64)
    features = z.shape[1]
    spread, excursions, last = (memory[:, k * features : (k + 1) * features] for k in range(3))
    # A sentinel among the first readings: its scale (~1e305 for 1e308) made residuals that the
    # spread took whole, and it never came back (an exact mean, then an average).
    restart_wild(spread, seen[:, None], squared_scale(scale), _WILD)
    judged = seen >= RESIDUAL_HISTORY
    r = np.where(judged[:, None], z / np.sqrt(np.maximum(spread, 1e-12)), 0.0)
    tame = (seen >= TAME_VERDICT) & np.all(excursions < TAME_EXCURSIONS, axis=1)
    # Two-sided normal tail of the largest |r|, times the number of features.
    by_law = tame & (seen >= TAME_LAW_HISTORY)
    largest = np.where(by_law, np.abs(r).max(axis=1) / _TAME_SPREAD, 0.0)
    law = np.minimum(1.0, normal_tail(largest) * features)
    square = z * z
    weight = np.maximum(1.0 / (seen + 1.0), _ALPHA)[:, None]
    # A stream's first reading has no spread to be capped against: it is taken whole.
    taught = np.where(seen[:, None] > 0, np.minimum(square, _CAP * _CAP * spread), square)
    spread += weight * (taught - spread)
    # An incident is one excursion: only an |r| over EXCURSION after a quiet spell starts one, and
    # one against the excursion before it ends that one.
    advance_excursions(excursions, last, np.abs(r) > EXCURSION, seen, np.sign(r))
    return np.asarray(r), np.asarray(tame), law
