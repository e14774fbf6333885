"""The two-sided CUSUM shared by the level rule (models.features) and its seasonal part
(models.seasonal): sums of standardised values beyond K standard deviations, each way. Under
independent N(0, 1) values the stationary tail of a sum is P(S > s) ≈ exp(-2 · K · s) (``tail``).

>>> up, down = np.zeros(1), np.zeros(1)
>>> for v in [3.0, 9.0, 0.5]:  # 9 is clipped to CLIP: one wild value moves a sum by at most 3
...     up, down = advance(up, down, clipped(np.array([v])))
>>> float(up[0]), float(down[0])
(4.5, 0.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["CAP", "CLIP", "HOLD", "RHO", "K", "advance", "clipped", "holding", "tail"]

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
