"""The GRU detector: predicts the next event's features as a Gaussian with a full covariance.

Score of an event = its negative log-likelihood under the prediction made from the stream's
previous hidden state. The covariance is ``L Lᵀ`` with ``L`` lower-triangular, so channels that
move together (a machine's temperature and current) are expected to keep doing so: an event
whose features break that pattern scores high even when each feature alone looks plausible.
Whitening the residual with ``L`` splits the score into one term per feature (feature j given
the features before it), which is the explanation; the whitened residual is its z.

Two APIs that agree to float tolerance: ``step`` (one event for each of a batch of streams) and
``sequence`` (whole sequences, offline).

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

__all__ = ["LOG_SCALE_MAX", "LOG_SCALE_MIN", "GRUDetector"]

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

    def step(
        self, h: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One event per stream: h (B, H), inputs x (B, I), targets y (B, T).

        Returns the NLL terms of y under the prediction from h, the predicted mean, the whitened
        residual and the new hidden state after reading x.
        """
        mean, chol = self.predict(h)
        terms, z = self.nll_terms(y, mean, chol)
        _, h_new = self.gru(x.unsqueeze(1), h.unsqueeze(0).contiguous())
        return terms, mean, z, h_new.squeeze(0)

    def sequence(
        self, x: torch.Tensor, y: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole sequences: x (B, L, I), y (B, L, T). Returns terms, mean, z (B, L, ·) and h_L."""
        batch = x.shape[0]
        h0 = self.initial_state(batch) if h0 is None else h0
        outputs, h_last = self.gru(x, h0.unsqueeze(0).contiguous())
        # The prediction for event t comes from the state before it: h0, h1, …, h_{L-1}.
        before = torch.cat([h0.unsqueeze(1), outputs[:, :-1]], dim=1)
        mean, chol = self.predict(before)
        terms, z = self.nll_terms(y, mean, chol)
        return terms, mean, z, h_last.squeeze(0)


def _fill_lower(chol: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``chol`` with its strictly lower triangle set from ``values`` (differentiably)."""
    lower = torch.zeros_like(chol)
    lower[..., rows, cols] = values
    return chol + lower
