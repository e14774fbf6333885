"""The seasonal rule: a level that has moved against what the stream's own days look like.

The level rule (FeatureSpec.level_rule) catches a slow drift or a shift in a stream of
independent noise about a level; in a daily cycle it stays silent, since the cycle makes the
stream's values autocorrelated, and the GRU, a one-step predictor, follows a slow ramp step by
step. Against the stream's own typical day, though, the cycle cancels and what is left is noise:
a drift or a shift then stands out as a run of deviations on one side. Per stream and feature the
rule keeps a profile of the day, hour by hour (UTC), and runs the level rule's two-sided CUSUM on
each value's deviation from it (linearly interpolated between the hours' readings), standardised
by the deviations' own running spread. An hour's mean stands at the time within the hour its
readings come: the middle for a stream read every few minutes, its minute for one read once an
hour (the circular mean of the minutes, where they agree).

The profile is, per hour, the median of the last SEASONAL_DAYS days' means for that hour: an
incident on one day (synthetic streams have many: one reading in ten is anomalous on the
training data) does not come back as a false alarm at the same time the next day, which an
averaged profile made it do. An event is judged once the hours either side of it hold
SEASONAL_DAYS days and the deviations have had _HISTORY events, and only where the level rule
cannot judge: the stream's standardised values are autocorrelated (lag 1 at cusum.RHO or more, so
the level rule is silent) but their deviations from its day are not (under cusum.RHO: a wandering
level is no steadier against its day than it was). Its chance is the sums' stationary tail,
2·exp(-2·s) per direction, as for the level rule.

Memory per stream: the day of its last event (plus one; 0: none yet) and the mean of its
readings' minute as a point on a circle (two floats); then per feature the hourly means of the
last SEASONAL_DAYS days (NaN until filled), the current day's hourly means and counts, and seven
scalars (the deviations' mean square and count, their lag-1 autocorrelation and its count, the
last standardised deviation, the two sums): ``seasonal_size``. The means and counts are held at
float32 precision (``seasonal_single``), which is how a stored state keeps them.

>>> memory = np.zeros((1, seasonal_size(1)))
>>> rng, hour = np.random.default_rng(0), 3_600_000
>>> def step(i, shift):  # hourly readings at minute 10 of a daily cycle about 10, noise 0.2
...     ts = i * hour + 600_000
...     v = 10 + 3 * np.sin(2 * np.pi * (ts % DAY_MS) / DAY_MS) + rng.normal(0, 0.2) + shift
...     chance, usual = advance_seasonal(memory, np.array([[v]]), np.array([ts]), np.array([i]), np.array([[0.9]]))
...     return float(chance[0])
>>> quiet = [step(i, 0.0) for i in range(24 * 10)]
>>> min(quiet) > 1e-4, quiet[24 * 3]  # nothing judged before the profile holds three days
(True, 1.0)
>>> shifted = [step(i, 1.0) for i in range(24 * 10, 24 * 10 + 12)]  # a shift of 5 noise sds
>>> min(shifted) < 1e-6
True
"""

from __future__ import annotations

import numpy as np

from models import cusum

__all__ = ["DAY_MS", "SEASONAL_DAYS", "advance_seasonal", "seasonal_single", "seasonal_size"]

DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
BINS = 24
# Days a profile's hours take their median over: three outvote one day's incident.
SEASONAL_DAYS = 3
# Deviations before a stream's sums start (their spread and autocorrelation need a history).
_HISTORY = 50
_ALPHA = 0.01  # spread and autocorrelation: exact means while young, then ~the last 100 events
_SCALARS = 7


# An hour's readings agree on their minute when the circular mean of their minutes is this long.
_ONE_MINUTE = 0.9
_STREAM = 3  # per-stream floats: day, minute (cos, sin)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def seasonal_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return _STREAM + features * (BINS * SEASONAL_DAYS + 2 * BINS + _SCALARS)


def seasonal_single(features: int) -> slice:
    """The part of the rule's memory that holds float32 values only (the days' and today's hourly
    means, and today's counts): a stored state keeps it in half the bytes."""
    return slice(_STREAM, _STREAM + features * (BINS * SEASONAL_DAYS + 2 * BINS))


def _parts(memory: np.ndarray, features: int) -> tuple[np.ndarray, ...]:
    """Views into ``memory`` (B, seasonal_size): day, minute (B, 2), days (B, f, BINS, SEASONAL_DAYS), today's
    means and counts (B, f, BINS), scalars (B, f, _SCALARS)."""
    b = len(memory)
    days_end = _STREAM + features * BINS * SEASONAL_DAYS
    today_end = days_end + features * BINS
    counts_end = today_end + features * BINS
    parts = (
        memory[:, 0],
        memory[:, 1:_STREAM],
        memory[:, _STREAM:days_end].reshape(b, features, BINS, SEASONAL_DAYS),
        memory[:, days_end:today_end].reshape(b, features, BINS),
        memory[:, today_end:counts_end].reshape(b, features, BINS),
        memory[:, counts_end:].reshape(b, features, _SCALARS),
    )
    # Updated in place: a reshape that had to copy would lose the update.
    if b and not all(np.shares_memory(part, memory) for part in parts):
        raise ValueError("the seasonal memory's rows must each be contiguous")
    return parts


def advance_seasonal(
    memory: np.ndarray, values: np.ndarray, ts: np.ndarray, seen: np.ndarray, level_autocorrelation: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, seasonal_size) is updated in place
    with the values (B, features) at times ``ts`` (B,, epoch ms); ``seen`` (B,): the events each
    stream had seen before; ``level_autocorrelation`` (B, features) is the level rule's lag-1
    autocorrelation of each stream's standardised values. Returns each event's chance (B,): the
    rarest feature's two-sided tail, times two directions and the number of features; 1 where
    the stream is not judged; and each value's usual level at that time of day, from the
    profile (B, features; NaN until its hours hold SEASONAL_DAYS days)."""
    values = np.asarray(values, dtype=np.float64)
    features = values.shape[1]
    day_plus_one, minute, days, today, counts, scalars = _parts(memory, features)
    day = ts // DAY_MS
    fresh = day_plus_one == 0
    days[fresh] = np.nan
    # A new day: each hour the stream was seen in yesterday joins its last days, the oldest out.
    # A late event from an earlier day counts in the current one: it does not start a day.
    rolled = np.flatnonzero(~fresh & (day + 1 > day_plus_one))
    if len(rolled):
        filled = counts[rolled] > 0
        kept = days[rolled]
        kept[filled] = np.concatenate([kept[..., 1:], today[rolled][..., None]], axis=-1)[filled]
        days[rolled] = kept
        today[rolled] = 0.0
        counts[rolled] = 0.0
    day_plus_one[:] = np.maximum(day_plus_one, day + 1)

    hour = (ts % DAY_MS) / _HOUR_MS
    angle = 2.0 * np.pi * (hour % 1.0)
    weight = np.maximum(1.0 / (np.asarray(seen, dtype=np.float64) + 1.0), _ALPHA)[:, None]
    minute += weight * (np.stack([np.cos(angle), np.sin(angle)], axis=1) - minute)
    agreed = np.hypot(minute[:, 0], minute[:, 1]) >= _ONE_MINUTE
    centre = np.where(agreed, (np.arctan2(minute[:, 1], minute[:, 0]) / (2.0 * np.pi)) % 1.0, 0.5)
    # The profile between the readings of the hours either side of this one: judged once both
    # hold SEASONAL_DAYS days (a stream read in working hours only is judged in them).
    position = hour - centre
    rows = np.arange(len(ts))
    before = np.floor(position).astype(np.int64) % BINS
    after = (before + 1) % BINS
    share = (position - np.floor(position))[:, None]
    either = days[rows, :, before], days[rows, :, after]  # (B, f, SEASONAL_DAYS) each
    complete = ~(np.isnan(either[0]).any(axis=-1) | np.isnan(either[1]).any(axis=-1))
    chance, expected = np.ones(len(ts)), np.full(values.shape, np.nan)
    if complete.any():
        expected = np.median(either[0], axis=-1) * (1.0 - share) + np.median(either[1], axis=-1) * share
        chance = _advance_sums(scalars, values - expected, complete, level_autocorrelation)
    bin_now = np.floor(hour).astype(np.int64) % BINS
    n = counts[rows, :, bin_now] + 1.0
    counts[rows, :, bin_now] = n
    mean = today[rows, :, bin_now]
    # Held at float32 precision: a stored state keeps the hours' means as float32 (half the bytes
    # of most of its memory), and rounding here keeps a stream scored offline and one scored by a
    # worker, through Redis, bit for bit the same.
    updated = np.clip(mean + (values - mean) / n, -_FLOAT32_MAX, _FLOAT32_MAX)  # a 1e300 reading
    today[rows, :, bin_now] = updated.astype(np.float32)
    return chance, np.where(complete, expected, np.nan)


def _advance_sums(
    scalars: np.ndarray, deviation: np.ndarray, complete: np.ndarray, level_autocorrelation: np.ndarray
) -> np.ndarray:
    """Advance the CUSUMs of the deviations from the profile (B, features; where ``complete``);
    returns the events' chances."""
    square, n, autocorrelation, judged_n, last, up, down = (scalars[..., k] for k in range(_SCALARS))
    spread = np.sqrt(np.maximum(square, 1e-300))
    standing = complete & (n >= 10)
    v = np.where(standing, cusum.clipped(deviation / spread), 0.0)
    summing = standing & (judged_n >= _HISTORY)
    new_up, new_down = cusum.advance(up, down, v)
    up[:] = np.where(summing, new_up, up)
    down[:] = np.where(summing, new_down, down)
    judged = summing & (autocorrelation < cusum.RHO) & (level_autocorrelation >= cusum.RHO)
    tail = np.where(judged, cusum.tail(up, down), 1.0)
    # The autocorrelation learns from every standing deviation but those of a shift under way.
    learning = standing & ~cusum.holding(autocorrelation, up, down)
    judged_n += learning
    weight = np.maximum(1.0 / np.maximum(judged_n, 1.0), _ALPHA)
    autocorrelation[:] = np.where(learning, autocorrelation + weight * (v * last - autocorrelation), autocorrelation)
    last[:] = np.where(standing, v, last)
    # The spread learns from deviations clipped at 3 of it: an incident does not teach it noise.
    clipped = np.where(n >= 10, np.clip(deviation, -3.0 * spread, 3.0 * spread), deviation)
    n += complete
    weight = np.maximum(1.0 / np.maximum(n, 1.0), _ALPHA)
    square[:] = np.where(complete, square + weight * (clipped * clipped - square), square)
    features = deviation.shape[1]
    return np.minimum(1.0, tail.min(axis=1) * 2 * features)
