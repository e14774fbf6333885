"""The residual rule: an event's residual against the spread of its own stream's residuals.

The GRU predicts each feature's spread from what streams of its kind do. A stream steadier than
the model thinks (a daily cycle it follows closely, a quiet plateau) then shows residuals well
inside the predicted spread, and a spike, a shift or the steps of a drift that are extreme for
that stream stay under a threshold set for all streams. Per stream and feature, an exponentially
weighted mean of the squared whitened residual z² measures the spread the stream really shows;
the rule rescales each residual by it, r = z / √mean, and the calibration turns the largest |r|
of an event into a tail probability (``Calibration.residual``). An alert's explanation gives each
feature's r as ``z_stream`` beside the model's ``z``.

Memory per stream: one mean per feature (``residual_size``); how many events the stream has seen
comes from its running statistics. The mean is robust: one reading moves it by at most _CAP²
times itself, so an incident does not teach the stream that it is noisy.

>>> memory, rng = np.zeros((1, residual_size(1))), np.random.default_rng(0)
>>> def step(z, seen):
...     return float(advance_residual(memory, np.array([[z]]), np.array([float(seen)]))[0, 0])
>>> quiet = [step(0.3 * rng.normal(), seen) for seen in range(200)]
>>> max(quiet) < 4.0, round(step(2.0, 200), 1)  # z 2 in a stream whose residuals run at 0.3: r ~7
(True, 6.9)
"""

from __future__ import annotations

import numpy as np

__all__ = ["RESIDUAL_HISTORY", "advance_residual", "residual_size"]

# Events before a stream's spread is trusted: r is 0 (no word) until then.
RESIDUAL_HISTORY = 50
# The mean weighs ~the last 50 events once the stream is older than that (an exact mean before).
_ALPHA = 0.02
_CAP = 4.0


def residual_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return features


def advance_residual(spread: np.ndarray, z: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """One event for each of several streams: ``spread`` (B, residual_size) is updated in place
    with the whitened residuals ``z`` (B, features); ``seen`` (B,) is how many events each stream
    had seen before this one. Returns each residual against its stream's spread before it, r
    (B, features; 0 while the stream has seen fewer than RESIDUAL_HISTORY)."""
    z = np.asarray(z, dtype=np.float64)
    square = z * z
    r = np.where((seen >= RESIDUAL_HISTORY)[:, None], z / np.sqrt(np.maximum(spread, 1e-12)), 0.0)
    weight = np.maximum(1.0 / (seen + 1.0), _ALPHA)[:, None]
    # A stream's first reading has no spread to be capped against: it is taken whole.
    taught = np.where(seen[:, None] > 0, np.minimum(square, _CAP * _CAP * spread), square)
    spread += weight * (taught - spread)
    return np.asarray(r)
