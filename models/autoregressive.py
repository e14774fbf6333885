"""The autoregressive rule: a level that has moved against what the stream's own last values
predict.

A wandering level (a queue, a temperature, a price) is autocorrelated, so the level rule is
silent on it, and it has no day for the seasonal rule to judge by. The GRU predicts its next value
from what streams of its kind do, not from this stream's own dynamics, and its residuals on such
a stream stay autocorrelated: a drift or a shift there hides in them. Per stream and feature this
rule fits the stream's own linear predictor, the value from its last ORDER values and a level,
by exponentially weighted least squares (models.fitted, forgetting over ~500 readings), and runs
the level rule's two-sided CUSUM on each value's deviation from that prediction, standardised
by the deviations' own running spread (cusum.advance_deviations). It judges where the
deviations are close to independent (lag-1 autocorrelation under _RHO: the predictor has caught
the stream's dynamics) and the level rule cannot judge (the values themselves are
autocorrelated). Its chance is the sums' stationary tail, 2·exp(-2·s) per direction. The
detector heeds it as the level rule's, on tame streams only (models.residual), as it does the
seasonal rule.

It judges each deviation alone as well, a *jump*: a spike, or the first step of a shift, that a
wandering level hides from the GRU's prediction for streams of its kind and from the stream's
own residual spread (the GRU's residuals there carry the wander). Its chance is the normal tail
of the deviation against the deviations' spread (cusum.jump_tail). Not on a stream of whole
numbers (most values whole numbers, none negative): counts are skewed, and the normal law paged
on their upper tail (on long streams of development seed 9 this guard removes 4 false alerts and
no incident). The detector
heeds jumps on tame streams and on streams too young for the residual rule to have judged their
tail.

Values enter relative to the stream's first one, which keeps the regressors' products in
proportion for a level far from zero.

Memory per stream and feature: the first value, the share of values that were not whole numbers
(or were negative), the count of jumps and when the last was, the last ORDER values (relative to
the first, latest first; NaN for a wild one), the fit's weighted sums and its deviations'
scalars: ``autoregressive_size``.

>>> memory, rng = np.zeros((1, autoregressive_size(1))), np.random.default_rng(0)
>>> level, chances = 0.0, []
>>> for i in range(640):  # a wandering level in noise, then from reading 600 a ramp of 0.6 noise sd a reading
...     level = 0.98 * level + rng.normal(0, 0.3)
...     value = 50 + level + rng.normal(0, 1) + 0.6 * max(0, i - 600)
...     chance, jump, _ = advance_autoregressive(memory, np.array([[value]]), np.array([float(i)]), np.array([[0.9]]))
...     chances.append((float(chance[0]), float(jump[0])))
>>> min(c for c, _ in chances[:600]) > 1e-3, min(c for c, _ in chances[600:]) < 1e-4
(True, True)
>>> min(j for _, j in chances[:600]) > 1e-6  # no jump: the largest of 600 normal deviations
True
"""

from __future__ import annotations

import numpy as np

from models import cusum, fitted
from models.excursions import advance_excursions

__all__ = ["ORDER", "advance_autoregressive", "autoregressive_size"]

# The predictor's lags. Chosen on development seed 9: 2 lags caught 3 fewer incidents (a wandering
# level plus noise is an ARMA(1, 1), which two lags approximate less well).
ORDER = 3
_DIMENSION = ORDER + 1
_FIT = fitted.fit_size(_DIMENSION)
_FORGET = 0.998
# The deviations' autocorrelation must be under this for the rule to judge (the bar of the
# seasonal rule's fitted sinusoid).
_RHO = 0.2
# The fit's deviations are followed from ~this many readings of weight.
_WARMUP = 10.0
# The share of whole numbers forgets over ~100 values.
_SHARE_ALPHA = 0.01
# A jump whose chance is under _JUMP_EXCURSION is extreme; from _JUMP_HABIT excursions on
# (models.excursions) the stream's jumps are its habit, not news (NAB's
# cpu_utilization_asg_misconfiguration bursts every ~30 readings: 57 false alerts without this).
_JUMP_EXCURSION = 1e-5
_JUMP_HABIT = 1.5
# A value this many of its deviations' spreads from its prediction is wild: not kept as a lag.
_WILD = 1000.0
# A value further than this many spreads from its prediction is kept as a lag this far from it.
_LAG_CLIP = 10.0
# Per feature: the first value, the share of values not whole, the count of jumps, the event after
# the last jump (0 for none).
_HEAD = 4


def autoregressive_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return features * (_HEAD + ORDER + _FIT + cusum.DEVIATION_SCALARS)


def _parts(memory: np.ndarray, features: int) -> tuple[np.ndarray, ...]:
    """Views into ``memory`` (B, autoregressive_size): first values, the shares of values that were
    not whole numbers, the counts of jumps and the events after the last jump (each (B, f)), the
    last values (B, f, ORDER), the fits' sums (B, f, _FIT) and the deviations' scalars (B, f,
    DEVIATION_SCALARS)."""
    b = len(memory)
    head_end = features * _HEAD
    lags_end = head_end + features * ORDER
    fit_end = lags_end + features * _FIT
    parts = (
        *(memory[:, k * features : (k + 1) * features] for k in range(_HEAD)),
        memory[:, head_end:lags_end].reshape(b, features, ORDER),
        memory[:, lags_end:fit_end].reshape(b, features, _FIT),
        memory[:, fit_end:].reshape(b, features, cusum.DEVIATION_SCALARS),
    )
    # Updated in place: a reshape that had to copy would lose the update.
    if b and not all(np.shares_memory(part, memory) for part in parts):
        raise ValueError("the autoregressive memory's rows must each be contiguous")
    return parts


def advance_autoregressive(
    memory: np.ndarray, values: np.ndarray, seen: np.ndarray, level_autocorrelation: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, autoregressive_size) is updated in
    place with the values (B, features); ``seen`` (B,): the events each stream had seen before;
    ``level_autocorrelation`` (B, features): the level rule's lag-1 autocorrelation of each
    stream's standardised values. Returns each event's chance (B,): the rarest feature's
    two-sided tail, times two directions and the number of features (1 where the stream is not
    judged); its jump's chance (B,): the rarest feature's, times the number of features (1 for
    a stream of whole numbers); and each value's prediction (B, features; NaN until the rule
    follows it)."""
    values = np.asarray(values, dtype=np.float64)
    features = values.shape[1]
    first, fractional, jumps, last_jump, lags, fit, scalars = _parts(memory, features)
    fresh = seen == 0
    first[fresh] = np.clip(values[fresh], -fitted.VALUE_MAX, fitted.VALUE_MAX)
    relative = np.clip(values - first, -fitted.VALUE_MAX, fitted.VALUE_MAX)
    full = np.broadcast_to((seen >= ORDER)[:, None], relative.shape)
    basis = np.concatenate([np.ones((*relative.shape, 1)), lags], axis=-1)
    prediction = fitted.predict(fit, basis)
    follows = full & (fit[..., 0] >= _WARMUP) & np.isfinite(prediction)
    expected = np.where(follows, prediction, 0.0)
    deviation = np.where(follows, relative - expected, 0.0)
    # The jump is judged on the spread before this deviation, the one the sums standardise it by.
    spread, known = cusum.deviation_spread(scalars)
    jump = cusum.jump_tail(scalars, deviation, follows & (fractional > 0.5), (spread, known))
    # A wild value (a glitch, a sentinel) is not kept as a lag: the fit would learn from it for
    # ~500 readings, and predict nonsense. A NaN holds its place, and the next ORDER values are
    # neither predicted nor taught.
    wild = follows & known & (np.abs(deviation) > _WILD * spread)
    # Jumps count once per quiet spell (an incident's steps are one excursion, and a jump back
    # against it is its end), and are judged only while they are not the stream's habit.
    habit = jumps >= _JUMP_HABIT
    advance_excursions(jumps, last_jump, jump < _JUMP_EXCURSION, seen, np.sign(deviation))
    jump = np.where(habit, 1.0, jump)
    tail = cusum.advance_deviations(scalars, deviation, follows, level_autocorrelation, _RHO)
    # The share of values that were not whole numbers (or negative), over ~the last 100: an
    # incident in a count stream (a shift by a fraction of its spread) leaves it a count stream.
    weight = np.maximum(1.0 / (seen + 1.0), _SHARE_ALPHA)[:, None]
    fractional += weight * (((values != np.floor(values)) | (values < 0)) - fractional)
    fitted.learn(fit, basis, relative, prediction, scalars, follows, _FORGET, teach=full & ~np.isnan(lags).any(axis=-1))
    lags[..., 1:] = lags[..., :-1].copy()
    # A value far out but not wild (a spike) is kept within _LAG_CLIP spreads of its prediction:
    # the next few predictions, made from it, are pulled out less.
    reach = _LAG_CLIP * spread
    kept = np.where(follows & known, np.clip(relative, expected - reach, expected + reach), relative)
    lags[..., 0] = np.where(wild, np.nan, np.clip(kept, -fitted.VALUE_MAX, fitted.VALUE_MAX))
    chance = np.minimum(1.0, tail.min(axis=1) * 2 * features)
    jump_chance = np.minimum(1.0, jump.min(axis=1) * features)
    return chance, jump_chance, np.where(follows, first + expected, np.nan)
