"""The GRU detector: predicts the next event's features as mean and log-variance.

Score of an event = its negative log-likelihood under the prediction made from the stream's
previous hidden state; the per-feature terms are the explanation. Two APIs that agree to float
tolerance: ``step`` (one event for each of a batch of different streams) and ``sequence`` (one
stream, offline).

>>> import torch
>>> model = GRUDetector(n_inputs=3, n_targets=2, hidden=8, seed=0)
>>> h = model.initial_state(2)
>>> x = torch.zeros(2, 3); y = torch.zeros(2, 2)
>>> terms, mean, logvar, h2 = model.step(h, x, y)
>>> tuple(terms.shape), tuple(h2.shape)
((2, 2), (2, 8))
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["LOGVAR_MAX", "LOGVAR_MIN", "GRUDetector"]

# Bounds keep the likelihood finite: a variance can neither vanish nor explode.
LOGVAR_MIN = -7.0
LOGVAR_MAX = 7.0
_LOG_2PI = math.log(2 * math.pi)


class GRUDetector(nn.Module):
    """GRU over event inputs with a Gaussian head for the next event's targets."""

    def __init__(self, n_inputs: int, n_targets: int, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.n_inputs = n_inputs
        self.n_targets = n_targets
        self.hidden = hidden
        self.seed = seed
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        self.gru = nn.GRU(n_inputs, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 2 * n_targets)
        torch.random.set_rng_state(generator_state)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hidden)

    def predict(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the next event's targets from hidden states (..., hidden)."""
        out = self.head(h)
        mean, logvar = out[..., : self.n_targets], out[..., self.n_targets :]
        return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    @staticmethod
    def nll_terms(y: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """Per-target Gaussian negative log-likelihood."""
        return 0.5 * (logvar + (y - mean) ** 2 * torch.exp(-logvar) + _LOG_2PI)

    def step(
        self, h: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One event per stream: h (B, H), inputs x (B, I), targets y (B, T).

        Returns the NLL terms of y under the prediction from h, that prediction (mean, logvar)
        and the new hidden state after reading x.
        """
        mean, logvar = self.predict(h)
        terms = self.nll_terms(y, mean, logvar)
        _, h_new = self.gru(x.unsqueeze(1), h.unsqueeze(0).contiguous())
        return terms, mean, logvar, h_new.squeeze(0)

    def sequence(
        self, x: torch.Tensor, y: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Whole sequences: x (B, L, I), y (B, L, T). Returns terms, mean, logvar (B, L, ·) and h_L."""
        batch = x.shape[0]
        h0 = self.initial_state(batch) if h0 is None else h0
        outputs, h_last = self.gru(x, h0.unsqueeze(0).contiguous())
        # The prediction for event t comes from the state before it: h0, h1, …, h_{L-1}.
        before = torch.cat([h0.unsqueeze(1), outputs[:, :-1]], dim=1)
        mean, logvar = self.predict(before)
        return self.nll_terms(y, mean, logvar), mean, logvar, h_last.squeeze(0)
