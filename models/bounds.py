"""Bounds that keep a stream's running statistics robust to one wild reading.

Shared by the features' running normalisation (models.features) and the coupling rule's mean and
covariance (models.coupling), which must agree on them: both learn a stream's scale from its own
readings, and a sentinel (1e6, 65535, 1e300) must not blind either.
"""

from __future__ import annotations

__all__ = ["DEVIATION_MAX", "ROBUST_FROM"]

# From a stream's ROBUST_FROM-th event on, one reading moves its statistics by a bounded step
# (each module's own clip, in spreads of the stream); before then it has no scale to clip by.
ROBUST_FROM = 5
# Squares of larger deviations overflow float64 (a 1e300 reading); the clip changes nothing else.
DEVIATION_MAX = 1e150
