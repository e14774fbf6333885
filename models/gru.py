"""The GRU detector: predicts the next event's features as a Gaussian with a full covariance.

Score of an event = its negative log-likelihood under the prediction made from the stream's
previous hidden state. The covariance is ``L Lᵀ`` with ``L`` lower-triangular, so channels that
move together (a machine's temperature and current) are expected to keep doing so: an event
whose features break that pattern scores high even when each feature alone looks plausible.
Whitening the residual with ``L`` splits the score into one term per feature (feature j given
the features before it), which is the explanation; the whitened residual is its z.

Training runs the torch module (``GRUDetector.sequence``: float32 ``nn.GRU``); scoring runs
``models.scorer.GRUScorer``, the trained weights frozen into numpy, with three APIs that agree: ``step`` (one
event for each of a batch of streams), ``runs`` (several events for each of several streams: the
worker's batches) and ``sequence`` (one stream, offline).

The hidden state a stream carries is rounded to float16 after every step (the recurrence itself
runs in float64, so the rounding does not depend on how streams were batched). A state is then
stored losslessly in 128 bytes instead of 256 — the difference between a stream costing more or
less than 400 bytes of Redis — and a stream replayed after a crash, in other batches, reaches
the same state as an uninterrupted one. The rounding changes scores by ~1e-3 relative against
the float32 training pass.

>>> import numpy as np
>>> scorer = GRUDetector(n_inputs=3, n_targets=2, hidden=8, seed=0).scorer()
>>> h = scorer.initial_state(2)
>>> terms, mean, z, h2 = scorer.step(h, np.zeros((2, 3)), np.zeros((2, 2)))
>>> terms.shape, z.shape, h2.shape, h2.dtype.name
((2, 2), (2, 2), (2, 8), 'float32')
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from models.scorer import _HALF_LOG_2PI, LOG_SCALE_MAX, LOG_SCALE_MIN, GRUScorer

__all__ = ["GRUDetector"]


class GRUDetector(nn.Module):
    """GRU over event inputs with a full-covariance Gaussian head for the next event's targets."""

    def __init__(
        self,
        n_inputs: int,
        n_targets: int,
        hidden: int = 64,
        seed: int = 0,
        log_scale_min: Sequence[float] | float = LOG_SCALE_MIN,
    ) -> None:
        """``log_scale_min``: the least predicted log-scale, one for all targets or one each
        (FeatureSpec.log_scale_floor)."""
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
        self.log_scale_min = log_scale_min
        self._floor = torch.tensor(log_scale_min, dtype=torch.float32).expand(n_targets)

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.hidden)

    def scorer(self) -> GRUScorer:
        """The weights as they are now, frozen into numpy for scoring."""
        weights = {name: p.detach().numpy() for name, p in self.named_parameters()}
        return GRUScorer(weights, self.n_targets, self.log_scale_min)

    def predict(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (…, T) and Cholesky factor L (…, T, T) of the next event's targets."""
        out = self.head(h)
        t = self.n_targets
        mean = out[..., :t]
        log_scale = torch.maximum(out[..., t : 2 * t], self._floor).clamp(max=LOG_SCALE_MAX)
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


def _fill_lower(chol: torch.Tensor, values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``chol`` with its strictly lower triangle set from ``values`` (differentiably)."""
    lower = torch.zeros_like(chol)
    lower[..., rows, cols] = values
    return chol + lower
