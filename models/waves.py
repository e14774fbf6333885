"""Streams of different lengths stepped together, wave by wave: the t-th event of every stream that
has one. The streams sit longest first, so each wave's streams are a prefix of the rows, and a
corpus of files costs one array step per wave rather than one per event (NAB: ~23,000 waves for
365,558 events).

>>> waves = Waves(np.array([2, 3]))
>>> padded = waves.pad([np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])])
>>> padded.tolist(), [waves.going(t) for t in range(waves.count)]
([[3.0, 4.0, 5.0], [1.0, 2.0, 0.0]], [2, 2, 1])
>>> [row.tolist() for row in waves.unpad(padded * 10)]
[[10.0, 20.0], [30.0, 40.0, 50.0]]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

__all__ = ["Waves"]


class Waves:
    """The layout of streams of ``lengths`` events, longest first."""

    def __init__(self, lengths: np.ndarray) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.order = np.argsort(-self.lengths, kind="stable")
        self.count = int(self.lengths.max(initial=0))  # waves
        self._remaining = self.lengths[self.order]

    def going(self, t: int) -> int:
        """How many streams have a t-th event: the first rows of every padded array."""
        return int(np.count_nonzero(self._remaining > t))

    def pad(
        self, streams: Sequence[ArrayLike], trailing: tuple[int, ...] = (), dtype: DTypeLike = np.float64
    ) -> np.ndarray:
        """The streams' events (each of its length, then ``trailing``) as rows, longest first,
        padded with zeros to every wave."""
        padded = np.zeros((len(self.lengths), self.count, *trailing), dtype=dtype)
        for row, i in enumerate(self.order):
            padded[row, : self.lengths[i]] = streams[i]
        return padded

    def unpad(self, padded: np.ndarray) -> list[np.ndarray]:
        """Each stream's own events of a padded array, in the streams' order (copies)."""
        out: list[np.ndarray] = [np.zeros(0)] * len(self.lengths)
        for row, i in enumerate(self.order):
            out[i] = padded[row, : self.lengths[i]].copy()
        return out
