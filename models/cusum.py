"""The two-sided CUSUM shared by the level rule (models.features), its seasonal part
(models.seasonal) and the autoregressive rule (models.autoregressive): sums of standardised
values beyond K standard deviations, each way. Under independent N(0, 1) values the stationary
tail of a sum is P(S > s) ≈ exp(-2 · K · s) (``tail``).

>>> up, down = np.zeros(1), np.zeros(1)
>>> for v in [3.0, 9.0, 0.5]:  # 9 is clipped to CLIP: one wild value moves a sum by at most 3
...     up, down = advance(up, down, clipped(np.array([v])))
>>> float(up[0]), float(down[0])
(4.5, 0.0)
"""

from __future__ import annotations

import numpy as np

from models.tails import student_tail

__all__ = [
    "CAP",
    "CLIP",
    "DEVIATION_HISTORY",
    "DEVIATION_SCALARS",
    "HOLD",
    "RHO",
    "K",
    "advance",
    "advance_deviations",
    "building",
    "clipped",
    "deviation_spread",
    "holding",
    "jump_tail",
    "tail",
]

K = 1.0
# Values are clipped here first: one wild reading moves a sum by at most CLIP - K.
CLIP = 4.0
# The sums stop here (a chance of ~1e-9), so they drain within a few events of the stream's
# return: a drift would otherwise leave a sum of hundreds that flags long after it ends.
CAP = 10.0
# The rules judge only values close to independent: a lag-1 autocorrelation under RHO (a daily
# cycle or a wandering level is autocorrelated). Set on development seed 9 (models.features).
RHO = 0.3
# In a stream a rule judges, the autocorrelation stops learning while a sum exceeds this: a drift
# under way would teach it that the stream is autocorrelated, and silence the rule.
HOLD = 4.0
# Deviations from a stream's expected value (models.seasonal's day, models.autoregressive's
# prediction) are judged by sums of their own (``advance_deviations``): the sums start after
# DEVIATION_HISTORY standing deviations (their spread and autocorrelation need a history). Per
# feature they keep DEVIATION_SCALARS floats: the deviations' mean square and count, their lag-1
# autocorrelation and its count, the last standardised deviation, the two sums.
DEVIATION_HISTORY = 50
DEVIATION_SCALARS = 7
_DEVIATION_ALPHA = 0.01  # spread and autocorrelation: exact means while young, then ~the last 100
# Deviations before their spread is known (it standardises them, and clips what it learns).
_SPREAD_HISTORY = 10
# The degrees of freedom a spread counts for at most. A stationary stream's spread is a mean of
# ~199 squares (_DEVIATION_ALPHA), but a young fit still adapts: over readings 100-300 of 60 daily
# cycles the standardised deviations ran at sd 1.08, and past 4.4 eight times as often as the
# normal law says; t with 60 degrees of freedom says four times. With 199, a steady daily cycle
# paged at its 117th reading, and development seeds 9-11 had 2 more false alerts (3 more incidents).
_SPREAD_DOF = 60.0


def clipped(v: np.ndarray) -> np.ndarray:
    """Standardised values as the sums take them."""
    return np.clip(v, -CLIP, CLIP)


def advance(up: np.ndarray, down: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The upward and downward sums after clipped values ``v``."""
    return np.clip(up + v - K, 0.0, CAP), np.clip(down - v - K, 0.0, CAP)


def holding(autocorrelation: np.ndarray, up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Where a judged stream's sums say "shift under way": its autocorrelation must not learn."""
    return (autocorrelation < RHO) & (np.maximum(up, down) > HOLD)


def tail(up: np.ndarray, down: np.ndarray) -> np.ndarray:
    """The stationary tail of the larger sum, one direction."""
    return np.exp(-2.0 * K * np.maximum(up, down))


def advance_deviations(
    scalars: np.ndarray, deviation: np.ndarray, complete: np.ndarray, level_autocorrelation: np.ndarray, rho: float
) -> np.ndarray:
    """Advance the sums of deviations from an expected value (B, features; where ``complete``),
    whose memory ``scalars`` (B, features, DEVIATION_SCALARS) is updated in place; returns each
    feature's tail (1 where not judged: its deviations' autocorrelation is ``rho`` or more, or the
    level rule judges it, its ``level_autocorrelation`` being under RHO)."""
    square, n, autocorrelation, judged_n, last, up, down = (scalars[..., k] for k in range(DEVIATION_SCALARS))
    spread, known = deviation_spread(scalars)
    standing = complete & known
    v = np.where(standing, clipped(deviation / spread), 0.0)
    summing = standing & (judged_n >= DEVIATION_HISTORY)
    new_up, new_down = advance(up, down, v)
    up[:] = np.where(summing, new_up, up)
    down[:] = np.where(summing, new_down, down)
    judged = summing & (autocorrelation < rho) & (level_autocorrelation >= RHO)
    chance = np.where(judged, tail(up, down), 1.0)
    # The autocorrelation learns from every standing deviation but those of a shift under way.
    learning = standing & ~holding(autocorrelation, up, down)
    judged_n += learning
    weight = np.maximum(1.0 / np.maximum(judged_n, 1.0), _DEVIATION_ALPHA)
    autocorrelation[:] = np.where(learning, autocorrelation + weight * (v * last - autocorrelation), autocorrelation)
    last[:] = np.where(standing, v, last)
    # The spread learns from deviations clipped at 3 of it: an incident does not teach it noise.
    taught = np.where(known, np.clip(deviation, -3.0 * spread, 3.0 * spread), deviation)
    n += complete
    weight = np.maximum(1.0 / np.maximum(n, 1.0), _DEVIATION_ALPHA)
    square[:] = np.where(complete, square + weight * (taught * taught - square), square)
    return chance


def jump_tail(
    scalars: np.ndarray, deviation: np.ndarray, judged: np.ndarray, spread: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """The two-sided normal tail of each deviation (B, features; where ``judged`` and the spread
    is known, 1 elsewhere) against its deviations' spread so far, ``spread`` (what
    ``deviation_spread(scalars)`` gives before ``advance_deviations`` learns the deviation). A
    spread estimated from n deviations makes the ratio a Student's t with n degrees of freedom,
    heavier-tailed than the normal while n is small: it is taken to its normal deviate first
    (Wallace, 1959: within ~1 % of the exact quantile in the tail). At most _SPREAD_DOF degrees of
    freedom count.

    >>> scalars = np.zeros((2, 1, DEVIATION_SCALARS))
    >>> scalars[:, 0, 0], scalars[:, 0, 1] = 1.0, [10, 1000]  # unit spread, from 10 and 1,000 deviations
    >>> chances = jump_tail(scalars, np.full((2, 1), 5.0), np.ones((2, 1), bool), deviation_spread(scalars))
    >>> [f"{p:.1e}" for p in chances[:, 0]]
    ['5.5e-04', '5.3e-06']

    (Student's t gives 5.4e-4 and 5.3e-6 for 10 and 60 degrees of freedom, the most it counts;
    the normal law 5.7e-7.)
    """
    sd, known = spread
    standing = judged & known
    with np.errstate(over="ignore"):  # a wild value's ratio: past 1e100 its chance is 0 all the same
        ratio = np.minimum(np.where(standing, np.abs(deviation) / sd, 0.0), 1e100)
    return student_tail(ratio, np.minimum(np.maximum(scalars[..., 1], 1.0), _SPREAD_DOF))


def deviation_spread(scalars: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From deviations' memory (``advance_deviations``): their running spread, and where it is
    known (it has _SPREAD_HISTORY deviations behind it)."""
    return np.sqrt(np.maximum(scalars[..., 0], 1e-300)), scalars[..., 1] >= _SPREAD_HISTORY


def building(scalars: np.ndarray) -> np.ndarray:
    """From deviations' memory: where the larger sum is past HOLD but not yet at CAP (a shift under
    way whose alarm has not been raised)."""
    larger = np.maximum(scalars[..., 5], scalars[..., 6])
    return (larger > HOLD) & (larger < CAP)
