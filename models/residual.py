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
an extreme r is habitual there). A stream whose tail has proven light needs no such guard: an
exponentially weighted mean of r⁴ (~3 for Gaussian residuals; each r⁴ capped at _CAP⁴) under
TAME_TAIL after TAIL_HISTORY judged events makes the stream *tame*, and its residual rule ungated.

Memory per stream: per feature, the mean of z² and the mean of r⁴ (``residual_size``); how many
events the stream has seen comes from its running statistics. Both means are robust: one reading
moves the first by at most _CAP² times itself, so an incident does not teach the stream that it
is noisy, and adds at most _CAP⁴ to the second.

>>> memory, rng = np.zeros((1, residual_size(1))), np.random.default_rng(0)
>>> def step(z, seen):
...     r, tame = advance_residual(memory, np.array([[z]]), np.array([float(seen)]))
...     return float(r[0, 0]), bool(tame[0])
>>> quiet = [step(0.3 * rng.normal(), seen) for seen in range(200)]
>>> max(r for r, _ in quiet) < 4.0, [seen for seen, (_, tame) in enumerate(quiet) if tame][:1]
(True, [100])
>>> r, tame = step(2.0, 200)  # z 2 in a stream whose residuals run at 0.3: r ~7, and it is tame
>>> round(r, 1), tame
(6.9, True)
"""

from __future__ import annotations

import numpy as np

__all__ = ["RESIDUAL_HISTORY", "TAIL_HISTORY", "TAME_TAIL", "advance_residual", "residual_size"]

# Events before a stream's spread is trusted: r is 0 (no word) until then.
RESIDUAL_HISTORY = 50
# The mean weighs ~the last 50 events once the stream is older than that (an exact mean before).
_ALPHA = 0.02
_CAP = 4.0
# Judged events before a stream's tail is trusted, the mean r⁴ under which it is light (chosen on
# a development seed, 9: 4.5 to 6 trade recall on synthetic streams against alerts on NAB), and
# how fast that mean forgets (~330 events: a heavy tail shows itself only now and then).
TAIL_HISTORY = 50
TAME_TAIL = 5.0
_TAIL_ALPHA = 0.003


def residual_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return 2 * features


def advance_residual(memory: np.ndarray, z: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, residual_size) is updated in place
    with the whitened residuals ``z`` (B, features); ``seen`` (B,) is how many events each stream
    had seen before this one. Returns each residual against its stream's spread before it, r
    (B, features; 0 while the stream has seen fewer than RESIDUAL_HISTORY), and whether each
    stream was tame before it (B,)."""
    z = np.asarray(z, dtype=np.float64)
    features = z.shape[1]
    spread, tail = memory[:, :features], memory[:, features:]
    judged = seen >= RESIDUAL_HISTORY
    r = np.where(judged[:, None], z / np.sqrt(np.maximum(spread, 1e-12)), 0.0)
    tame = (seen >= RESIDUAL_HISTORY + TAIL_HISTORY) & np.all(tail < TAME_TAIL, axis=1)
    square = z * z
    weight = np.maximum(1.0 / (seen + 1.0), _ALPHA)[:, None]
    # A stream's first reading has no spread to be capped against: it is taken whole.
    taught = np.where(seen[:, None] > 0, np.minimum(square, _CAP * _CAP * spread), square)
    spread += weight * (taught - spread)
    # An exact mean over the judged events while they are few, then exponentially weighted.
    tail_weight = np.maximum(1.0 / np.maximum(seen - RESIDUAL_HISTORY + 1.0, 1.0), _TAIL_ALPHA)[:, None]
    tail += np.where(judged[:, None], tail_weight * (np.minimum(r**4, _CAP**4) - tail), 0.0)
    return np.asarray(r), np.asarray(tame)
