"""The GRU detector: predicts the next event's features as a Gaussian with a full covariance.

Score of an event = its negative log-likelihood under the prediction made from the stream's
previous hidden state. The covariance is ``L Lᵀ`` with ``L`` lower-triangular, so channels that
move together (a machine's temperature and current) are expected to keep doing so: an event
whose features break that pattern scores high even when each feature alone looks plausible.
Whitening the residual with ``L`` splits the score into one term per feature (feature j given
the features before it), which is the explanation; the whitened residual is its z.

Training runs the torch module (``GRUDetector.sequence``: float32 ``nn.GRU``); scoring runs
``GRUScorer``, the trained weights frozen into numpy, with three APIs that agree: ``step`` (one
event for each of a batch of streams), ``runs`` (several events for each of several streams: the
worker's batches) and ``sequence`` (one stream, offline).

The hidden state a stream carries is rounded to float16 after every step (the recurrence itself
runs in float64, so the rounding does not depend on how streams were batched). A state is then
stored losslessly in 128 bytes instead of 256 — the difference between a stream costing more or
less than 400 bytes of Redis — and a stream replayed after a crash, in other batches, reaches
the same state as an uninterrupted one. The rounding changes scores by ~1e-3 relative against
the float32 training pass.

>>> import numpy as np
>>> scorer = GRUScorer(GRUDetector(n_inputs=3, n_targets=2, hidden=8, seed=0))
>>> h = scorer.initial_state(2)
>>> terms, mean, z, h2 = scorer.step(h, np.zeros((2, 3)), np.zeros((2, 2)))
>>> terms.shape, z.shape, h2.shape, h2.dtype.name
((2, 2), (2, 2), (2, 8), 'float32')
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["LOG_SCALE_MAX", "LOG_SCALE_MIN", "GRUDetector", "GRUScorer", "round_state"]

# Bounds keep the likelihood finite: a scale can neither vanish nor explode.
LOG_SCALE_MIN = -3.5
LOG_SCALE_MAX = 3.5
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class GRUDetector(nn.Module):
    """GRU over event inputs with a full-covariance Gaussian head for the next event's targets."""

    def __init__(self, n_inputs: int, n_targets: int, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        self.n_targets = n_targets
        self.hidden = hidden
        self.seed = seed
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True)
        self.n_off = n_targets * (n_targets - 1) // 2
        self.head = nn.Linear(hidden, 2 * n_targets + self.n_off)
        torch.random.set_rng_state(generator_state)
        # Where the off-diagonal outputs go in L (constants, not parameters or saved state).
        self._rows, self._cols = torch.tril_indices(n_targets, n_targets, offset=-1)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hidden)

    def predict(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (…, T) and Cholesky factor L (…, T, T) of the next event's targets."""
        out = self.head(h)
        t = self.n_targets
        mean = out[..., :t]
        log_scale = out[..., t : 2 * t].clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
        chol = torch.diag_embed(torch.exp(log_scale))
        if self.n_off:
            chol = _fill_lower(chol, out[..., 2 * t :], self._rows, self._cols)
        return mean, chol

    @staticmethod
    def nll_terms(y: torch.Tensor, mean: torch.Tensor, chol: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-target NLL terms (feature j given the ones before it) and the whitened residual z."""
        residual = (y - mean).unsqueeze(-1)
        z = torch.linalg.solve_triangular(chol, residual, upper=False).squeeze(-1)
        log_diag = torch.log(torch.diagonal(chol, dim1=-2, dim2=-1))
        return 0.5 * z**2 + log_diag + _HALF_LOG_2PI, z

    def sequence(
        self, x: torch.Tensor, y: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training's forward pass over whole sequences: x (B, L, I), y (B, L, T) → terms, mean,
        z (B, L, ·) and h_L, with float32 ``nn.GRU`` (fast and differentiable; scoring runs
        ``GRUScorer``, whose rounded states differ from these by ~1e-3 relative)."""
        h0 = self.initial_state(x.shape[0]) if h0 is None else h0
        outputs, h_last = self.gru(x, h0.unsqueeze(0).contiguous())
        # The prediction for event t comes from the state before it: h0, h1, …, h_{L-1}.
        before = torch.cat([h0.unsqueeze(1), outputs[:, :-1]], dim=1)
        mean, chol = self.predict(before)
        terms, z = self.nll_terms(y, mean, chol)
        return terms, mean, z, h_last.squeeze(0)


class GRUScorer:
    """A trained ``GRUDetector`` frozen into numpy for scoring: the worker's hot path and offline
    scoring alike (no autograd, no per-operation dispatch, and numpy's float64 ``tanh`` is ~5×
    torch's on this CPU).

    The recurrence runs in float64 and every new state is rounded to float16, so the rounding
    does not depend on how streams were batched: a stream reaches bit-identical states whether
    its events came one per call, in runs, or as one sequence (tested).
    """

    def __init__(self, model: GRUDetector) -> None:
        self.hidden, self.n_targets = model.hidden, model.n_targets
        weights = {name: p.detach().numpy() for name, p in model.named_parameters()}
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
        log_scale = np.clip(out[:, t : 2 * t], LOG_SCALE_MIN, LOG_SCALE_MAX)
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


def _fill_lower(chol: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``chol`` with its strictly lower triangle set from ``values`` (differentiably)."""
    lower = torch.zeros_like(chol)
    lower[..., rows, cols] = values
    return chol + lower
