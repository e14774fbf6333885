"""Counting a stream's excursions: how often it shows something extreme, an incident counted once.

An excursion is an extreme event (what counts as extreme is the caller's) after a quiet spell of
QUIET events without one: the steps of one incident are one excursion, and so is its end (an
extreme against its direction soon after: a shift snapping back, RETURN). The count forgets over
~1,000 events (a count that forgot over ~500 let NAB's bursty series turn tame, models.residual).
A stream that keeps making new excursions has them as a habit (a heavy tail, a recurring burst);
one incident is not a habit.

>>> count, last = np.zeros((1, 1)), np.zeros((1, 1))
>>> for seen, extreme in enumerate([True, True, False, True] + [False] * 30 + [True]):
...     advance_excursions(count, last, np.array([[extreme]]), np.array([float(seen)]), np.ones((1, 1)))
>>> round(float(count[0, 0]), 3)  # the first three extremes are one excursion, the last a second
1.967
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUIET", "RETURN", "advance_excursions"]

QUIET = 20
# An extreme event against the direction of the excursion before it, within RETURN events of that
# excursion's latest extreme, is its end (a shift or a flatline snapping back), not a new one:
# longer than the synthetic producers' incidents (a shift lasts up to 45 readings, a drift 90).
# Counted as new, each shift made two excursions, and a stream that had shown two incidents was no
# longer tame (models.residual).
RETURN = 100
_ALPHA = 0.001


def advance_excursions(
    count: np.ndarray, last: np.ndarray, extreme: np.ndarray, seen: np.ndarray, sign: np.ndarray
) -> None:
    """Advance the excursion counts of several streams by one event each, in place: ``count`` and
    ``last`` (B, features; ``last`` is the event after the latest extreme one, 0 for none, its sign
    the direction of the excursion it belongs to), ``extreme`` (B, features) whether this event is
    extreme, ``seen`` (B,) the events each stream had seen before it, ``sign`` (B, features) the
    direction of each event."""
    since = seen[:, None] - (np.abs(last) - 1)
    calm = (last == 0) | (since > QUIET)
    returning = (last != 0) & (since <= RETURN) & (np.sign(last) == -sign)
    new = extreme & calm & ~returning
    last[:] = np.where(extreme, (seen[:, None] + 1.0) * np.where(new, sign, np.sign(last)), last)
    count *= 1.0 - _ALPHA
    count += new
