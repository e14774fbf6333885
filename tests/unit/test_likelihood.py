"""The anomaly likelihood over a stream's surprise (models.likelihood), and the docstring examples
of the model modules."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.likelihood import AnomalyLikelihood


def _noise(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(size=n)), rng.normal(10.0, 1.0, size=(n, 1))


def test_nothing_is_scored_while_learning() -> None:
    surprise, values = _noise(100)
    scores = AnomalyLikelihood(learning=100).score_series(surprise, values)
    assert np.all(scores == 0.5)


def test_a_run_of_surprise_scores_far_above_noise() -> None:
    surprise, values = _noise(3000)
    surprise[2500:2510] += 6.0  # ten events the model did not expect, values within range
    scores = AnomalyLikelihood(spatial=False).score_series(surprise, values)
    assert scores[2500:2510].max() > 0.5
    assert scores[400:2500].max() < scores[2500:2510].max()
    # a red likelihood is near-certain once: its successors are demoted
    red = scores[288:] > 0.5  # likelihood ≥ 0.99999 (0.5 itself is "still learning")
    assert red.sum() >= 1 and not np.any(red[1:] & red[:-1])


def test_a_value_outside_the_seen_range_scores_one() -> None:
    surprise, values = _noise(1000)
    values[900, 0] = values[:900, 0].max() + 0.5
    scores = AnomalyLikelihood().score_series(surprise, values)
    assert scores[900] == 1.0
    assert AnomalyLikelihood(spatial=False).score_series(surprise, values)[900] < 1.0


def test_an_excursion_scores_one_once() -> None:
    """A ramp past the range sets a new extreme every event: one top score for it, not fifty; a new
    excursion after the stream has been back in range scores again."""
    surprise, values = _noise(1200)
    top = values[:900, 0].max()
    values[900:950, 0] = top + np.linspace(0.1, 5.0, 50)
    values[950:1100, 0] = values[:150, 0]
    values[1100, 0] = top + 10.0
    scores = AnomalyLikelihood(spatial_quiet=20).score_series(surprise, values)
    assert scores[900] == 1.0 and np.all(scores[901:950] < 1.0)
    assert scores[1100] == 1.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=400), st.integers(0, 50))
@example([1.0, 1.0, 0.0], 0)  # a likelihood of exactly 0: the log scale gave -4e-12
def test_scores_are_in_the_unit_interval_and_stepwise_equals_series(surprise: list[float], learning: int) -> None:
    lk = AnomalyLikelihood(learning=learning)
    values = np.arange(len(surprise), dtype=np.float64)[:, None] % 7
    series = lk.score_series(surprise, values)
    state = lk.new_state(1)
    stepwise = [lk.update(s, v, state) for s, v in zip(surprise, values, strict=True)]
    assert np.all((series >= 0.0) & (series <= 1.0))
    assert np.array_equal(series, np.array(stepwise))


@pytest.mark.parametrize("module", ["models.likelihood", "models.features", "models.nab"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
