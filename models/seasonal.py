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
SEASONAL_DAYS days and the deviations have had cusum.DEVIATION_HISTORY events, and only where the level rule
cannot judge: the stream's standardised values are autocorrelated (lag 1 at cusum.RHO or more, so
the level rule is silent) but their deviations from its day are not (under cusum.RHO: a wandering
level is no steadier against its day than it was). Its chance is the sums' stationary tail,
2·exp(-2·s) per direction, as for the level rule.

Until the profile holds its days, the stream's day is a sinusoid fitted to its readings: level,
cosine and sine of the time of day, by exponentially weighted least squares. A stream read every
five minutes has three days of profile only after 864 readings, and a drift on its second day
would go unseen. The fit's deviations run through sums of their own, as the profile's do, and are
judged the same way, once the fit has seen _HARMONIC_SPAN of a day, but against a stricter bar on
their autocorrelation (_HARMONIC_RHO: a sinusoid is only near a real day's shape). The fit
(models.fitted) learns each reading clipped at 3 of its deviations' spreads, and nothing while
its sums build. Where a feature's profile judges, the fit's memory rests.

Memory per stream: the day of its last event (plus one; 0: none yet), the mean of its readings'
minute as a point on a circle (two floats) and the time of its first event; then per feature the
hourly means of the last SEASONAL_DAYS days (NaN until filled), the current day's hourly means
and counts, seven scalars (the deviations' mean square and count, their lag-1 autocorrelation
and its count, the last standardised deviation, the two sums), the fit's weighted sums (_FIT) and
the seven scalars of its deviations: ``seasonal_size``. The means and counts are held at float32
precision (``seasonal_single``), which is how a stored state keeps them.

>>> memory = np.zeros((1, seasonal_size(1)))
>>> rng, hour = np.random.default_rng(0), 3_600_000
>>> def step(i, shift):  # hourly readings at minute 10 of a daily cycle about 10, noise 0.2
...     ts = i * hour + 600_000
...     v = 10 + 3 * np.sin(2 * np.pi * (ts % DAY_MS) / DAY_MS) + rng.normal(0, 0.2) + shift
...     chance, usual = advance_seasonal(memory, np.array([[v]]), np.array([ts]), np.array([i]), np.array([[0.9]]))
...     return float(chance[0])
>>> quiet = [step(i, 0.0) for i in range(24 * 10)]
>>> min(quiet) > 1e-4
True
>>> shifted = [step(i, 1.0) for i in range(24 * 10, 24 * 10 + 12)]  # a shift of 5 noise sds
>>> min(shifted) < 1e-6
True
"""

from __future__ import annotations

import numpy as np

from models import cusum, fitted

__all__ = ["DAY_MS", "SEASONAL_DAYS", "advance_seasonal", "seasonal_single", "seasonal_size"]

DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
BINS = 24
# Days a profile's hours take their median over: three outvote one day's incident.
SEASONAL_DAYS = 3
# Deviations before a stream's sums start (their spread and autocorrelation need a history).
_ALPHA = 0.01  # the minute's mean: exact while young, then ~the last 100 events
_SCALARS = cusum.DEVIATION_SCALARS


# An hour's readings agree on their minute when the circular mean of their minutes is this long.
_ONE_MINUTE = 0.9
_STREAM = 4  # per-stream floats: day, minute (cos, sin), the time of the first event
# Before the profile holds its days, the fitted sinusoid (the module's docstring). Its weighted
# sums (the three-by-three matrix's six distinct entries, then the right-hand side) forget over
# ~500 events. Chosen on development seeds 9-11 (a 5-minute stream there spans ~1.4 days, so the
# profile never judges it): +16 incidents of 652, daily drifts and count streams' shifts, for +2
# false alerts. On seed 9, a bar at cusum.RHO (0.3) gave 3 more false alerts and no more
# incidents; judging from 1 day rather than 0.75, the same incidents.
_FIT = fitted.fit_size(3)
_HARMONIC_FORGET = 0.998
_HARMONIC_SPAN = 0.75 * DAY_MS
_HARMONIC_RHO = 0.2
_FIT_WARMUP = 9.0  # ~10 readings' weight
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def seasonal_size(features: int) -> int:
    """Floats of stream memory the rule keeps for ``features`` values."""
    return _STREAM + features * (BINS * SEASONAL_DAYS + 2 * BINS + 2 * _SCALARS + _FIT)


def seasonal_single(features: int) -> slice:
    """The part of the rule's memory that holds float32 values only (the days' and today's hourly
    means, and today's counts): a stored state keeps it in half the bytes."""
    return slice(_STREAM, _STREAM + features * (BINS * SEASONAL_DAYS + 2 * BINS))


def _parts(memory: np.ndarray, features: int) -> tuple[np.ndarray, ...]:
    """Views into ``memory`` (B, seasonal_size): day, minute (B, 2), first time, days (B, f, BINS,
    SEASONAL_DAYS), today's means and counts (B, f, BINS), scalars (B, f, _SCALARS), the harmonic's
    weighted sums (B, f, _FIT) and its deviations' scalars (B, f, _SCALARS)."""
    b = len(memory)
    days_end = _STREAM + features * BINS * SEASONAL_DAYS
    today_end = days_end + features * BINS
    counts_end = today_end + features * BINS
    scalars_end = counts_end + features * _SCALARS
    fit_end = scalars_end + features * _FIT
    parts = (
        memory[:, 0],
        memory[:, 1:3],
        memory[:, 3],
        memory[:, _STREAM:days_end].reshape(b, features, BINS, SEASONAL_DAYS),
        memory[:, days_end:today_end].reshape(b, features, BINS),
        memory[:, today_end:counts_end].reshape(b, features, BINS),
        memory[:, counts_end:scalars_end].reshape(b, features, _SCALARS),
        memory[:, scalars_end:fit_end].reshape(b, features, _FIT),
        memory[:, fit_end:].reshape(b, features, _SCALARS),
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
    day_plus_one, minute, first, days, today, counts, scalars, fit, harmonic_scalars = _parts(memory, features)
    day = ts // DAY_MS
    fresh = day_plus_one == 0
    days[fresh] = np.nan
    first[fresh] = ts[fresh]
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
    tail, expected = np.ones(values.shape), np.full(values.shape, np.nan)
    if complete.any():
        expected = np.median(either[0], axis=-1) * (1.0 - share) + np.median(either[1], axis=-1) * share
        tail = cusum.advance_deviations(scalars, values - expected, complete, level_autocorrelation, cusum.RHO)
    # Where the profile cannot judge yet, the fitted sinusoid does (its memory rests once the
    # profile judges every feature).
    pending = np.flatnonzero(~complete.all(axis=1))
    if len(pending):
        sinusoid = np.where(complete, expected, np.nan)
        harmonic_tail = tail.copy()
        rows_fit, rows_scalars = fit[pending], harmonic_scalars[pending]
        sinusoid[pending], harmonic_tail[pending] = _advance_harmonic(
            rows_fit,
            rows_scalars,
            values[pending],
            ts[pending] - first[pending],
            ts[pending],
            level_autocorrelation[pending],
        )
        fit[pending], harmonic_scalars[pending] = rows_fit, rows_scalars
        fit_ready = ~complete & ~np.isnan(sinusoid)
        tail = np.where(fit_ready, harmonic_tail, tail)
        expected = np.where(complete, expected, sinusoid)
    bin_now = np.floor(hour).astype(np.int64) % BINS
    n = counts[rows, :, bin_now] + 1.0
    counts[rows, :, bin_now] = n
    mean = today[rows, :, bin_now]
    # Held at float32 precision: a stored state keeps the hours' means as float32 (half the bytes
    # of most of its memory), and rounding here keeps a stream scored offline and one scored by a
    # worker, through Redis, bit for bit the same.
    updated = np.clip(mean + (values - mean) / n, -_FLOAT32_MAX, _FLOAT32_MAX)  # a 1e300 reading
    today[rows, :, bin_now] = updated.astype(np.float32)
    chance = np.minimum(1.0, tail.min(axis=1) * 2 * features)
    return chance, expected


def _advance_harmonic(
    fit: np.ndarray,
    scalars: np.ndarray,
    values: np.ndarray,
    age: np.ndarray,
    ts: np.ndarray,
    level_autocorrelation: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Advance the fitted sinusoids of streams (``fit`` (B, f, _FIT) and ``scalars`` (B, f,
    _SCALARS), updated in place) by one event each, ``age`` ms after their first. Returns each value's fit
    before it (B, f; NaN until the fit speaks) and each feature's tail (B, f)."""
    angle = 2.0 * np.pi * (ts % DAY_MS) / DAY_MS
    basis = np.stack([np.ones(len(ts)), np.cos(angle), np.sin(angle)], axis=1)[:, None, :]  # (B, 1, 3)
    prediction = fitted.predict(fit, basis)
    # The deviations' spread, autocorrelation and sums follow from the fit's _FIT_WARMUP-th reading
    # (an incident in its first day is then held out of it as later ones are); they judge once it
    # has seen _HARMONIC_SPAN.
    follows = (fit[..., 0] >= _FIT_WARMUP) & np.isfinite(prediction)
    deviation = np.where(follows, values - np.where(follows, prediction, 0.0), 0.0)
    tail = cusum.advance_deviations(scalars, deviation, follows, level_autocorrelation, _HARMONIC_RHO)
    speaks = follows & (age >= _HARMONIC_SPAN)[:, None]
    # (Learning held until the sums drain instead: 2 more false alerts on seed 9.)
    fitted.learn(fit, basis, values, prediction, scalars, follows, _HARMONIC_FORGET)
    return np.where(speaks, prediction, np.nan), np.where(speaks, tail, 1.0)
