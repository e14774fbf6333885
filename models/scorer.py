"""Scoring with a trained GRU detector in numpy: the worker's hot path and offline scoring.

Numpy only — a worker process never imports torch (it would cost ~600 MB of resident memory for
torch's CUDA build). ``models.gru`` holds the torch module that training runs; its docstring
describes the model.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> shapes = {"gru.weight_ih_l0": (24, 3), "gru.weight_hh_l0": (24, 8), "gru.bias_ih_l0": (24,),
...           "gru.bias_hh_l0": (24,), "head.weight": (5, 8), "head.bias": (5,)}
>>> scorer = GRUScorer({k: rng.normal(size=v).astype(np.float32) for k, v in shapes.items()}, n_targets=2)
>>> terms, mean, z, h = scorer.step(scorer.initial_state(2), np.zeros((2, 3)), np.zeros((2, 2)))
>>> terms.shape, h.shape, h.dtype.name
((2, 2), (2, 8), 'float32')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["LOG_SCALE_MAX", "LOG_SCALE_MIN", "GRUScorer", "round_state"]

# Bounds keep the likelihood finite: a scale can neither vanish nor explode.
LOG_SCALE_MIN = -3.5
LOG_SCALE_MAX = 3.5
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class GRUScorer:
    """A trained ``GRUDetector`` (models.gru) frozen into numpy for scoring: the worker's hot path and offline
    scoring alike (no autograd, no per-operation dispatch, and numpy's float64 ``tanh`` is ~5×
    torch's on this CPU).

    The recurrence runs in float64 and every new state is rounded to float16, so the rounding
    does not depend on how streams were batched: a stream reaches bit-identical states whether
    its events came one per call, in runs, or as one sequence (tested).
    """

    def __init__(
        self, weights: Mapping[str, np.ndarray], n_targets: int, log_scale_min: Sequence[float] | float = LOG_SCALE_MIN
    ) -> None:
        """``weights``: the trained module's parameters by name (``GRUDetector.scorer()`` or a
        model directory's ``weights.npz``); ``log_scale_min``: the least predicted log-scale, one
        for all targets or one each (FeatureSpec.log_scale_floor)."""
        self.hidden, self.n_targets = int(weights["gru.weight_hh_l0"].shape[1]), n_targets
        self.n_inputs = int(weights["gru.weight_ih_l0"].shape[1])
        self._log_scale_min = np.broadcast_to(np.asarray(log_scale_min, dtype=np.float64), (n_targets,))
        self._w_ih = np.ascontiguousarray(weights["gru.weight_ih_l0"].T, dtype=np.float64)
        self._w_hh = np.ascontiguousarray(weights["gru.weight_hh_l0"].T, dtype=np.float64)
        self._b_ih = weights["gru.bias_ih_l0"].astype(np.float64)
        self._b_hh = weights["gru.bias_hh_l0"].astype(np.float64)
        self._head_w = np.ascontiguousarray(weights["head.weight"].T, dtype=np.float32)
        self._head_b = weights["head.bias"].astype(np.float32)

    def initial_state(self, batch: int) -> np.ndarray:
        return np.zeros((batch, self.hidden), dtype=np.float32)

    def project(self, x: np.ndarray) -> np.ndarray:
        """The input half of the GRU gates for every event at once: (N, I) → float64 (N, 3H)."""
        gi = np.asarray(x, dtype=np.float64) @ self._w_ih
        gi += self._b_ih
        return gi

    def cell(self, gi: np.ndarray, h: np.ndarray) -> np.ndarray:
        """One GRU step from the projected inputs ``gi`` (B, 3H); returns the rounded new state."""
        size = self.hidden
        h64 = h.astype(np.float64)
        gh = h64 @ self._w_hh
        gh += self._b_hh
        gates = gi[:, : 2 * size] + gh[:, : 2 * size]
        _sigmoid(gates)
        candidate = gh[:, 2 * size :]
        candidate *= gates[:, :size]  # reset gate
        candidate += gi[:, 2 * size :]
        np.tanh(candidate, out=candidate)
        # (1 − z)·n + z·h, as n + z·(h − n)
        h64 -= candidate
        h64 *= gates[:, size:]
        h64 += candidate
        return round_state(h64)

    def terms(self, h_before: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """NLL terms (N, T) of targets y under the predictions from the states before them, the
        predicted mean and the whitened residual z."""
        out = (h_before @ self._head_w + self._head_b).astype(np.float64)
        t = self.n_targets
        mean = out[:, :t]
        log_scale = np.clip(out[:, t : 2 * t], self._log_scale_min, LOG_SCALE_MAX)
        scale, off = np.exp(log_scale), out[:, 2 * t :]
        residual = np.asarray(y, dtype=np.float64) - mean
        # Forward substitution through L = diag(scale) + strictly-lower(off), row j's
        # off-diagonal entries at off[:, j(j−1)/2 : j(j−1)/2 + j] (torch.tril_indices' order).
        z = np.empty_like(residual)
        for j in range(t):
            start = j * (j - 1) // 2
            row = residual[:, j] - np.einsum("ij,ij->i", off[:, start : start + j], z[:, :j]) if j else residual[:, 0]
            z[:, j] = row / scale[:, j]
        return 0.5 * z * z + log_scale + _HALF_LOG_2PI, mean, z

    def step(self, h: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
        """One event per stream: h (B, H), inputs x (B, I), targets y (B, T) → terms, mean, z of y
        under the prediction from h, and the state after reading x."""
        terms, mean, z = self.terms(h, y)
        return terms, mean, z, self.cell(self.project(x), h)

    def runs(
        self, h: np.ndarray, x: np.ndarray, y: np.ndarray, waves: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Several events for each of several streams. ``h`` (S, H) holds the streams' states with
        the longest runs first; ``waves[w]`` are the flat indices into x, y (N, ·) of the w-th
        event of streams 0 … len(waves[w]) − 1. Returns terms, mean, z (N, ·) and the final states.

        Only the recurrence steps wave by wave; the projection and the head run once over all
        N events."""
        gi = self.project(x)
        h_before = np.empty((len(x), self.hidden), dtype=np.float32)
        h = h.copy()
        for index in waves:
            active = len(index)
            h_before[index] = h[:active]
            h[:active] = self.cell(gi[index], h[:active])
        terms, mean, z = self.terms(h_before, y)
        return terms, mean, z, h

    def sequence(self, x: np.ndarray, y: np.ndarray, h0: np.ndarray) -> tuple[np.ndarray, ...]:
        """One stream's events in order: x (L, I), y (L, T), h0 (H,) → terms, mean, z and h_L."""
        waves = [np.array([t]) for t in range(len(x))]
        terms, mean, z, h = self.runs(h0[None, :], x, y, waves)
        return terms, mean, z, h[0]


def _sigmoid(values: np.ndarray) -> None:
    """Logistic function in place, through tanh (no overflow for large negative inputs)."""
    values *= 0.5
    np.tanh(values, out=values)
    values += 1.0
    values *= 0.5


def round_state(h: np.ndarray) -> np.ndarray:
    """A hidden state as the float32 values of its float16 rounding (what a stored state holds)."""
    return h.astype(np.float16).astype(np.float32)
