"""The GRU detector: predicts the next event's features as a Gaussian with a full covariance.

Score of an event = its negative log-likelihood under the prediction made from the stream's
previous hidden state. The covariance is ``L Lᵀ`` with ``L`` lower-triangular, so channels that
move together (a machine's temperature and current) are expected to keep doing so: an event
whose features break that pattern scores high even when each feature alone looks plausible.
Whitening the residual with ``L`` splits the score into one term per feature (feature j given
the features before it), which is the explanation; the whitened residual is its z.

Two APIs that agree to float tolerance: ``step`` (one event for each of a batch of streams) and
``sequence`` (whole sequences, offline).

The hidden state a stream carries is rounded to float16 after every step (the recurrence itself
runs in float64, so the rounding does not depend on how streams were batched). A state is then
stored losslessly in 128 bytes instead of 256 — the difference between a stream costing more or
less than 400 bytes of Redis — and a stream replayed after a crash, in other batches, reaches
the same state as an uninterrupted one. Training runs the plain float32 ``nn.GRU``
(``exact_state=False``); the rounding changes scores by ~1e-3 relative.

>>> import torch
>>> model = GRUDetector(n_inputs=3, n_targets=2, hidden=8, seed=0)
>>> h = model.initial_state(2)
>>> terms, mean, z, h2 = model.step(h, torch.zeros(2, 3), torch.zeros(2, 2))
>>> tuple(terms.shape), tuple(z.shape), tuple(h2.shape)
((2, 2), (2, 2), (2, 8))
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LOG_SCALE_MAX", "LOG_SCALE_MIN", "GRUDetector", "round_state"]

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
        self._w64: tuple[tuple[int, ...], tuple[torch.Tensor, ...]] | None = None

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

    def _weights64(self) -> tuple[torch.Tensor, ...]:
        """The GRU's weights in float64, cached per parameter version (they change only in training)."""
        params: list[torch.Tensor] = [
            getattr(self.gru, name) for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
        ]
        version = tuple(p._version for p in params)
        if self._w64 is None or self._w64[0] != version:
            self._w64 = (version, tuple(p.detach().double() for p in params))
        return self._w64[1]

    @staticmethod
    def _cell(gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor) -> torch.Tensor:
        """One GRU step in float64 from the input projection ``gi`` (B, 3H); returns the rounded state."""
        gh = torch.addmm(b_hh, h.double(), w_hh.t())
        i_r, i_z, i_n = gi.chunk(3, dim=-1)
        h_r, h_z, h_n = gh.chunk(3, dim=-1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return round_state((1.0 - z) * n + z * h.double())

    def step(
        self, h: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One event per stream: h (B, H), inputs x (B, I), targets y (B, T).

        Returns the NLL terms of y under the prediction from h, the predicted mean, the whitened
        residual and the new hidden state after reading x.
        """
        mean, chol = self.predict(h)
        terms, z = self.nll_terms(y, mean, chol)
        w_ih, w_hh, b_ih, b_hh = self._weights64()
        return terms, mean, z, self._cell(torch.matmul(x.double(), w_ih.t()) + b_ih, h, w_hh, b_hh)

    def sequence(
        self, x: torch.Tensor, y: torch.Tensor, h0: torch.Tensor | None = None, exact_state: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole sequences: x (B, L, I), y (B, L, T). Returns terms, mean, z (B, L, ·) and h_L.

        ``exact_state`` steps the rounded float64 recurrence of ``step`` (scoring); without it,
        float32 ``nn.GRU`` over the whole sequence (training: fast and differentiable)."""
        batch = x.shape[0]
        h0 = self.initial_state(batch) if h0 is None else h0
        if exact_state:
            w_ih, w_hh, b_ih, b_hh = self._weights64()
            gi = torch.matmul(x.double(), w_ih.t()) + b_ih
            states, h = [], h0
            for t in range(x.shape[1]):
                h = self._cell(gi[:, t], h, w_hh, b_hh)
                states.append(h)
            outputs, h_last = torch.stack(states, dim=1), h.unsqueeze(0)
        else:
            outputs, h_last = self.gru(x, h0.unsqueeze(0).contiguous())
        # The prediction for event t comes from the state before it: h0, h1, …, h_{L-1}.
        before = torch.cat([h0.unsqueeze(1), outputs[:, :-1]], dim=1)
        mean, chol = self.predict(before)
        terms, z = self.nll_terms(y, mean, chol)
        return terms, mean, z, h_last.squeeze(0)


def round_state(h: torch.Tensor) -> torch.Tensor:
    """A hidden state as the float32 values of its float16 rounding (what a stored state holds)."""
    return h.to(torch.float16).to(torch.float32)


def _fill_lower(chol: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``chol`` with its strictly lower triangle set from ``values`` (differentiably)."""
    lower = torch.zeros_like(chol)
    lower[..., rows, cols] = values
    return chol + lower
