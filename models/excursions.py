"""Counting a stream's excursions: how often it shows something extreme, an incident counted once.

An excursion is an extreme event (what counts as extreme is the caller's) after a quiet spell of
QUIET events without one: the steps of one incident are one excursion. The count forgets over
~1,000 events (a count that forgot over ~500 let NAB's bursty series turn tame, models.residual).
A stream that keeps making new excursions has them as a habit (a heavy tail, a recurring burst);
one incident is not a habit.

>>> count, last = np.zeros((1, 1)), np.zeros((1, 1))
>>> for seen, extreme in enumerate([True, True, False, True] + [False] * 30 + [True]):
...     advance_excursions(count, last, np.array([[extreme]]), np.array([float(seen)]))
>>> round(float(count[0, 0]), 3)  # the first three extremes are one excursion, the last a second
1.967
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUIET", "advance_excursions"]

QUIET = 20
_ALPHA = 0.001


def advance_excursions(count: np.ndarray, last: np.ndarray, extreme: np.ndarray, seen: np.ndarray) -> None:
    """Advance the excursion counts of several streams by one event each, in place: ``count`` and
    ``last`` (B, features; ``last`` is the event after the latest extreme one, 0 for none),
    ``extreme`` (B, features) whether this event is extreme, ``seen`` (B,) the events each stream
    had seen before it."""
    calm = (last == 0) | (seen[:, None] - (last - 1) > QUIET)
    last[:] = np.where(extreme, seen[:, None] + 1.0, last)
    count *= 1.0 - _ALPHA
    count += extreme & calm
