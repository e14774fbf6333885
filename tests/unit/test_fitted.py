"""Per-stream linear fits (models.fitted): what the seasonal rule's sinusoid and the
autoregressive rule predict from."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from models import cusum, fitted


def sums_of(regressors: np.ndarray, values: np.ndarray, forget: float) -> np.ndarray:
    """The weighted sums a fit keeps after ``regressors`` (n, d) and ``values`` (n,), by
    ``fitted.learn`` with nothing clipped or held (no deviations followed)."""
    fit = np.zeros((1, 1, fitted.fit_size(regressors.shape[1])))
    scalars = np.zeros((1, 1, cusum.DEVIATION_SCALARS))
    follows = np.zeros((1, 1), dtype=bool)
    for row, value in zip(regressors, values, strict=True):
        basis = row[None, None, :]
        fitted.learn(fit, basis, np.array([[value]]), fitted.predict(fit, basis), scalars, follows, forget)
    return fit


@settings(max_examples=40, deadline=None)
@given(
    dimension=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
    offset=st.floats(-10.0, 10.0),
    spread=st.floats(1e-2, 1e4),
    forget=st.sampled_from([1.0, 0.998, 0.95]),
)
def test_a_fit_predicts_the_weighted_least_squares_solution(
    dimension: int, seed: int, offset: float, spread: float, forget: float
) -> None:
    """Whatever the scale of the values and regressors (within 10 of their spreads of 0, as the
    autoregressive rule keeps them, relative to a stream's first value), the fit's prediction is
    the weighted least-squares one to 1e-6 of the values' size, and a stream's prediction is the
    same, bit for bit, alone or in a batch of others."""
    rng = np.random.default_rng(seed)
    level = offset * spread
    n = 60
    regressors = np.column_stack([np.ones(n), level + spread * rng.normal(size=(n, dimension - 1))])
    values = regressors @ rng.normal(size=dimension) + spread * rng.normal(size=n)
    fit = sums_of(regressors, values, forget)

    query = np.concatenate([[1.0], level + spread * rng.normal(size=dimension - 1)])
    weights = np.sqrt(forget ** np.arange(n - 1, -1, -1))
    solution, *_ = np.linalg.lstsq(regressors * weights[:, None], values * weights, rcond=None)
    predicted = fitted.predict(fit, query[None, None, :])[0, 0]
    assert abs(predicted - query @ solution) <= 1e-6 * (spread + abs(query @ solution))

    others = np.concatenate([fit, 3.0 * fit, np.full_like(fit, np.inf)], axis=0)
    batch = fitted.predict(others, np.broadcast_to(query, (3, 1, dimension)))
    assert batch[0, 0] == predicted
    assert np.isnan(batch[2, 0])  # sums gone to infinity predict nothing, and warn of nothing


def test_a_fit_holds_while_its_sums_build_and_learns_once_they_are_full() -> None:
    """Nothing is learnt while a deviation sum is between cusum.HOLD and cusum.CAP (an incident
    does not bend the expectation it is judged against); at CAP, learning resumes."""
    basis = np.array([[[1.0]]])
    fit = sums_of(np.ones((20, 1)), np.full(20, 5.0), 1.0)
    before = fit.copy()
    scalars = np.zeros((1, 1, cusum.DEVIATION_SCALARS))
    scalars[..., 5] = cusum.HOLD + 1.0
    follows = np.ones((1, 1), dtype=bool)
    fitted.learn(fit, basis, np.array([[50.0]]), fitted.predict(fit, basis), scalars, follows, 1.0)
    np.testing.assert_array_equal(fit, before)
    scalars[..., 5] = cusum.CAP
    fitted.learn(fit, basis, np.array([[50.0]]), fitted.predict(fit, basis), scalars, follows, 1.0)
    assert fitted.predict(fit, basis)[0, 0] > 5.0
