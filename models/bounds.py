"""Bounds that keep a stream's running statistics robust to one wild reading.

Shared by the features' running normalisation (models.features) and the coupling rule's mean and
covariance (models.coupling), which must agree on them: both learn a stream's scale from its own
readings, and a sentinel (1e6, 65535, 1e300) must not blind either. The hindsight and residual
rules (models.hindsight, models.residual) take the first value of a spread whole, and find out
one a sentinel swelled against that scale once it is robust (``restart_wild``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEVIATION_MAX", "ROBUST_FROM", "restart_wild", "squared_scale"]

# From a stream's ROBUST_FROM-th event on, one reading moves its statistics by a bounded step
# (each module's own clip, in spreads of the stream); before then it has no scale to clip by.
ROBUST_FROM = 5
# Squares of larger deviations overflow float64 (a 1e300 reading); the clip changes nothing else.
DEVIATION_MAX = 1e150


def squared_scale(scale: np.ndarray) -> np.ndarray:
    """A stream's scale squared without overflow (a first reading of 1e308 is a scale of ~1e305
    until ROBUST_FROM drops it)."""
    return np.square(np.minimum(np.asarray(scale, dtype=np.float64), DEVIATION_MAX**0.5))


def restart_wild(spread: np.ndarray, seen: np.ndarray, widest: np.ndarray, wild: float) -> None:
    """A rule's spreads (B, features; in place) found out against the stream's scale: from its
    ROBUST_FROM-th event (``seen``, (B, 1): the events before this one), when its statistics have
    dropped a wild first reading, a spread past ``wild`` times ``widest`` (the widest the rule's
    values can have at that scale) is a sentinel's, and starts again from ``widest``."""
    spread[:] = np.where((seen >= ROBUST_FROM) & (spread > wild * widest), widest, spread)
