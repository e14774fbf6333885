"""A linear fit per stream and feature, whose deviations the level rule's sums judge: the seasonal
rule's daily sinusoid before its profile holds its days (models.seasonal) and the autoregressive
rule's prediction from a stream's last values (models.autoregressive).

Each fit regresses a value on a few regressors (its *basis*) by exponentially weighted least
squares, and keeps only its weighted sums: the matrix of the regressors' products (its upper
triangle) and their products with the value (``fit_size``). The fit learns each reading clipped
at 3 of its deviations' spreads once that spread is known, and nothing while the deviations'
sums build (an incident does not bend the expectation it is judged against) until they are full:
the alarm has then been raised, and a lasting change has to be learnt.

>>> fit, scalars = np.zeros((1, 1, fit_size(2))), np.zeros((1, 1, cusum.DEVIATION_SCALARS))
>>> for x in np.linspace(0.0, 1.0, 20):  # a line, 3 + 2x
...     basis = np.array([[[1.0, x]]])
...     learn(fit, basis, np.array([[3.0 + 2.0 * x]]), predict(fit, basis), scalars, np.ones((1, 1), bool), 1.0)
>>> round(float(predict(fit, np.array([[[1.0, 2.0]]]))[0, 0]), 6)
7.0
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from models import cusum

__all__ = ["VALUE_MAX", "fit_size", "learn", "predict"]

# Readings enter a fit clipped here: its sums hold no infinity, whatever a stream sends.
VALUE_MAX = 1e100
# A small ridge, each regressor's relative to its own scale (so it biases none of them more than
# another, whatever their units), keeps a young or degenerate fit finite.
_RIDGE = 1e-9


def fit_size(dimension: int) -> int:
    """Floats a fit on ``dimension`` regressors keeps: its matrix's upper triangle, then the
    regressors' products with the value."""
    return dimension * (dimension + 1) // 2 + dimension


@functools.cache
def _upper(dimension: int) -> tuple[np.ndarray, np.ndarray]:
    """The upper triangle's (row, column) indices, in the order a fit keeps them."""
    return np.triu_indices(dimension)


def predict(fit: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """Each fit's value (B, f) at regressors ``basis`` (B, f or 1, d), from its sums ``fit``
    (B, f, fit_size(d)); NaN where the sums are not finite."""
    dimension = basis.shape[-1]
    rows, columns = _upper(dimension)
    triangle = len(rows)
    finite = np.isfinite(fit).all(axis=-1)
    sums = np.where(finite[..., None], fit, 0.0)
    entry = {(int(i), int(j)): sums[..., k] for k, (i, j) in enumerate(zip(rows, columns, strict=True))}
    weights = _solve_symmetric(
        lambda i, j: entry[min(i, j), max(i, j)] * (1.0 + _RIDGE if i == j else 1.0),
        [sums[..., triangle + i] for i in range(dimension)],
    )
    prediction = sum(np.broadcast_to(basis[..., i], finite.shape) * weights[i] for i in range(dimension))
    return np.where(finite, prediction, np.nan)


def _solve_symmetric(entry: Callable[[int, int], np.ndarray], rhs: list[np.ndarray]) -> list[np.ndarray]:
    """Solve symmetric positive definite systems, one per element of the arrays: ``entry(i, j)``
    is the matrices' (i, j) entries, ``rhs`` the right-hand sides'. By Cholesky, in element-wise
    arithmetic: each system is solved on its own, so a stream reads the same whichever batch it is
    stepped in, and a batch of small systems costs a few dozen array operations, not one LAPACK
    call each."""
    d = len(rhs)
    lower: dict[tuple[int, int], np.ndarray] = {}
    for j in range(d):
        pivot = entry(j, j) - sum((lower[j, k] ** 2 for k in range(j)), np.zeros_like(rhs[0]))
        lower[j, j] = np.sqrt(np.maximum(pivot, 1e-300))
        for i in range(j + 1, d):
            off = entry(i, j) - sum((lower[i, k] * lower[j, k] for k in range(j)), np.zeros_like(rhs[0]))
            lower[i, j] = off / lower[j, j]
    forward: list[np.ndarray] = []
    for i in range(d):
        forward.append(
            (rhs[i] - sum((lower[i, k] * forward[k] for k in range(i)), np.zeros_like(rhs[0]))) / lower[i, i]
        )
    solution: list[np.ndarray] = [np.zeros_like(rhs[0])] * d
    for i in reversed(range(d)):
        later = sum((lower[k, i] * solution[k] for k in range(i + 1, d)), np.zeros_like(rhs[0]))
        solution[i] = (forward[i] - later) / lower[i, i]
    return solution


def learn(
    fit: np.ndarray,
    basis: np.ndarray,
    values: np.ndarray,
    prediction: np.ndarray,
    scalars: np.ndarray,
    follows: np.ndarray,
    forget: float,
    teach: np.ndarray | None = None,
) -> None:
    """Teach each fit (``fit``, B x f x fit_size, updated in place) the value at regressors
    ``basis`` (B, f or 1, d): ``prediction`` was its value before, ``scalars`` its deviations' sums
    (cusum.advance_deviations) and ``follows`` where those follow it; ``teach`` (B, f), where it
    learns at all (everywhere when None). Older readings weigh ``forget`` times less with each new
    one."""
    spread, known = cusum.deviation_spread(scalars)
    known &= follows
    taught = np.clip(values, -VALUE_MAX, VALUE_MAX)
    off = np.where(known, values - np.where(known, prediction, 0.0), 0.0)
    taught = np.where(known, prediction + np.clip(off, -3.0 * spread, 3.0 * spread), taught)
    learning = ~cusum.building(scalars)
    if teach is not None:
        learning &= teach
    rows, columns = _upper(basis.shape[-1])
    basis = np.broadcast_to(basis, (*taught.shape, basis.shape[-1]))
    updated = np.concatenate([basis[..., rows] * basis[..., columns], basis * taught[..., None]], axis=-1)
    fit[:] = np.where(learning[..., None], forget * fit + updated, fit)
