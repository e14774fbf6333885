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

Values enter relative to the stream's first one, which keeps the regressors' products in
proportion for a level far from zero.

Memory per stream and feature: the first value, the last ORDER values (relative to it, latest
first), the fit's weighted sums and its deviations' scalars: ``autoregressive_size``.

>>> memory, rng = np.zeros((1, autoregressive_size(1))), np.random.default_rng(0)
>>> level, chances = 0.0, []
>>> for i in range(640):  # a wandering level in noise, then from reading 600 a ramp of 0.6 noise sd a reading
...     level = 0.98 * level + rng.normal(0, 0.3)
...     value = 50 + level + rng.normal(0, 1) + 0.6 * max(0, i - 600)
...     chance, _ = advance_autoregressive(memory, np.array([[value]]), np.array([float(i)]), np.array([[0.9]]))
...     chances.append(float(chance[0]))
>>> min(chances[:600]) > 1e-3, min(chances[600:]) < 1e-4
(True, True)
"""

from __future__ import annotations

import numpy as np

from models import cusum, fitted

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


def autoregressive_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return features * (1 + ORDER + _FIT + cusum.DEVIATION_SCALARS)


def _parts(memory: np.ndarray, features: int) -> tuple[np.ndarray, ...]:
    """Views into ``memory`` (B, autoregressive_size): first values (B, f), last values (B, f,
    ORDER), the fits' sums (B, f, _FIT) and the deviations' scalars (B, f, DEVIATION_SCALARS)."""
    b = len(memory)
    lags_end = features * (1 + ORDER)
    fit_end = lags_end + features * _FIT
    parts = (
        memory[:, :features],
        memory[:, features:lags_end].reshape(b, features, ORDER),
        memory[:, lags_end:fit_end].reshape(b, features, _FIT),
        memory[:, fit_end:].reshape(b, features, cusum.DEVIATION_SCALARS),
    )
    # Updated in place: a reshape that had to copy would lose the update.
    if b and not all(np.shares_memory(part, memory) for part in parts):
        raise ValueError("the autoregressive memory's rows must each be contiguous")
    return parts


def advance_autoregressive(
    memory: np.ndarray, values: np.ndarray, seen: np.ndarray, level_autocorrelation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, autoregressive_size) is updated in
    place with the values (B, features); ``seen`` (B,): the events each stream had seen before;
    ``level_autocorrelation`` (B, features): the level rule's lag-1 autocorrelation of each
    stream's standardised values. Returns each event's chance (B,): the rarest feature's
    two-sided tail, times two directions and the number of features (1 where the stream is not
    judged), and each value's prediction (B, features; NaN until the rule follows it)."""
    values = np.asarray(values, dtype=np.float64)
    features = values.shape[1]
    first, lags, fit, scalars = _parts(memory, features)
    fresh = seen == 0
    first[fresh] = np.clip(values[fresh], -fitted.VALUE_MAX, fitted.VALUE_MAX)
    relative = np.clip(values - first, -fitted.VALUE_MAX, fitted.VALUE_MAX)
    full = np.broadcast_to((seen >= ORDER)[:, None], relative.shape)
    basis = np.concatenate([np.ones((*relative.shape, 1)), lags], axis=-1)
    prediction = fitted.predict(fit, basis)
    follows = full & (fit[..., 0] >= _WARMUP) & np.isfinite(prediction)
    deviation = np.where(follows, relative - np.where(follows, prediction, 0.0), 0.0)
    tail = cusum.advance_deviations(scalars, deviation, follows, level_autocorrelation, _RHO)
    fitted.learn(fit, basis, relative, prediction, scalars, follows, _FORGET, teach=full)
    lags[..., 1:] = lags[..., :-1].copy()
    lags[..., 0] = relative
    chance = np.minimum(1.0, tail.min(axis=1) * 2 * features)
    return chance, np.where(follows, first + np.where(follows, prediction, 0.0), np.nan)
