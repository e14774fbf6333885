"""Two-sided normal tails of deviates, worked out only where they can matter.

The rules that judge a value by the normal law (the autoregressive rule's jumps, a tame stream's
residuals, a feature against the others it moves with) need its tail only where it is small:
under 3 standard deviations the chance is over 0.003, far above any false-alarm rate, and is left
at 1 (no word). ``math.erfc`` then runs one value at a time on the few deviates past 3, which is
cheaper on a worker's batches than a vectorised erfc over all of them (numpy has none).

>>> [f"{p:.2e}" for p in normal_tail(np.array([1.0, 3.5, 5.0]))]
['1.00e+00', '4.65e-04', '5.73e-07']
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["normal_tail", "student_tail"]

# Deviates at or under this get no tail (1): their chance, over 0.003, cannot matter.
_MATTERS = 3.0


def normal_tail(deviate: np.ndarray) -> np.ndarray:
    """P(|N(0, 1)| > d) for each deviate d (any shape) past _MATTERS; 1 elsewhere."""
    chance = np.ones(deviate.shape)
    for at in zip(*np.nonzero(deviate > _MATTERS), strict=True):
        chance[at] = math.erfc(deviate[at] / math.sqrt(2.0))
    return chance


def student_tail(deviate: np.ndarray, dof: np.ndarray | float) -> np.ndarray:
    """P(|T| > d) for Student's t with ``dof`` degrees of freedom, past _MATTERS (1 elsewhere):
    each deviate taken to the normal deviate of the same tail first (Wallace, 1959: within ~1 % of
    the exact quantile in the tail). A spread estimated from a few values makes a ratio heavier-tailed
    than the normal law.

    >>> [f"{p:.1e}" for p in student_tail(np.array([5.0, 5.0]), np.array([10.0, 60.0]))]
    ['5.5e-04', '5.3e-06']
    """
    dof = np.asarray(dof, dtype=np.float64)
    with np.errstate(over="ignore"):  # a wild deviate: past 1e100 its chance is 0 all the same
        deviate = np.minimum(np.asarray(deviate, dtype=np.float64), 1e100)
    return normal_tail(np.sqrt(dof * np.log1p(deviate * deviate / dof)) * (8.0 * dof + 1.0) / (8.0 * dof + 3.0))
