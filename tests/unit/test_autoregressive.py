"""The autoregressive rule's jumps (models.autoregressive): a single value far from what the
stream's own last values predict."""

from __future__ import annotations

import numpy as np

from models.autoregressive import advance_autoregressive, autoregressive_size


def stepped(values: list[float]) -> tuple[list[float], np.ndarray]:
    """Each value's jump chance and prediction (NaN where the rule does not follow), one stream
    stepped from a fresh memory."""
    memory = np.zeros((1, autoregressive_size(1)))
    chances, predicted = [], []
    for seen, value in enumerate(values):
        # The level rule's autocorrelation: the values are judged by the level rule or not; the
        # jump does not depend on it.
        _, jump, prediction = advance_autoregressive(
            memory, np.array([[value]]), np.array([float(seen)]), np.array([[0.0]])
        )
        chances.append(float(jump[0]))
        predicted.append(float(prediction[0, 0]))
    return chances, np.array(predicted)


def test_a_jump_in_a_stream_of_whole_numbers_is_not_judged() -> None:
    """Counts are skewed: a Poisson count of 25 against a mean of 5 is not paged by the normal law
    (the level rule's CUSUM and the GRU judge counts). The same values off the whole numbers are
    judged, and 25.5 is a jump."""
    counts = [float(v) for v in np.random.default_rng(0).poisson(5.0, 300)] + [25.0]
    assert max(1.0 - c for c in stepped(counts)[0]) == 0.0
    shifted = stepped([v + 0.5 for v in counts])[0]
    assert shifted[-1] < 1e-6
    assert min(shifted[:-1]) > 1e-5


def test_jumps_that_recur_become_the_streams_habit() -> None:
    """A burst of 10 noise sds every 40 readings: the first two are jumps; from then on the
    stream's bursts are its habit, and the rule no longer judges them."""
    rng = np.random.default_rng(1)
    values = [50.0 + rng.normal() + (10.0 if i >= 100 and i % 40 == 0 else 0.0) for i in range(400)]
    chances, _ = stepped(values)
    bursts = [chances[i] for i in range(120, 400, 40)]
    assert bursts[0] < 1e-6 and bursts[1] < 1e-6
    assert all(c == 1.0 for c in bursts[2:])
    assert min(c for i, c in enumerate(chances) if i % 40 or i < 100) > 1e-5


def test_a_noiseless_square_wave_keeps_its_predictions_in_range() -> None:
    """A square wave without noise (NAB's art_daily_perfect_square_wave: 20 for 180 readings, 80
    for 108): its predictions are exact, so its deviations' spread all but vanishes, and each step
    of the wave is millions of spreads. Such a value is wild and is not kept as a lag; kept within
    10 spreads of its prediction instead, the lags followed the predictions, which ran to 1e100."""
    values = ([20.0] * 180 + [80.0] * 108) * 14
    _, predicted = stepped(values)
    assert np.nanmax(np.abs(predicted)) <= 100.0
    # Between the steps the rule follows the wave, and predicts it.
    assert np.nanmax(np.abs(predicted[-60:] - 20.0)) < 1e-6


def test_a_wild_value_does_not_bend_the_streams_predictions() -> None:
    """A sentinel of 1e300 in a noisy plateau: its own reading is a jump, and 20 readings on the
    predictions are back within a noise sd of the plateau."""
    values = list(50.0 + np.random.default_rng(2).normal(0.0, 1.0, 600))
    values[500] = 1e300
    chances, predicted = stepped(values)
    assert chances[500] < 1e-10
    assert np.nanmax(np.abs(predicted[520:] - 50.0)) < 2.0


def test_a_shift_and_its_end_are_one_excursion_of_jumps() -> None:
    """A level shift of 10 noise sds for 30 readings: its onset is a jump, and the jump back at its
    end is the same excursion, not a second, so the stream's jumps are not yet its habit and a
    spike 100 readings later is still judged. (Counted as two, the shift made jumps the habit.)"""
    rng = np.random.default_rng(2)
    values = [50.0 + rng.normal() + (10.0 if 200 <= i < 230 else 0.0) + (10.0 if i == 330 else 0.0) for i in range(400)]
    chances, _ = stepped(values)
    assert chances[200] < 1e-6 and chances[230] < 1e-5  # the onset and the end: both extreme
    assert chances[330] < 1e-6
