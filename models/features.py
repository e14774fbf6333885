"""Feature specs: which values a kind scores, how each is transformed, and their normalisation.

The model sees, per event: the transformed, normalised features; the log time since the
stream's previous event; optionally the hour of day as sin/cos. It predicts the features and
the time gap of the next event (calendar inputs are not predicted).

>>> spec = FeatureSpec(kind="demo", names=("bytes",), transforms=("log1p",))
>>> round(float(spec.transform_values([{"bytes": 0.0}])[0, 0]), 3)
0.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from operator import itemgetter
from typing import Any, Literal

import numpy as np

from models import cusum
from models.autoregressive import autoregressive_size
from models.bounds import DEVIATION_MAX, ROBUST_FROM
from models.coupling import coupling_size
from models.hindsight import hindsight_size
from models.likelihood import gate_size
from models.residual import residual_size
from models.scorer import LOG_SCALE_MIN
from models.seasonal import seasonal_single, seasonal_size

__all__ = ["DEFAULT_SPECS", "FeatureSpec", "Transform", "latest_before"]

Transform = Literal["identity", "log1p", "signed_log"]
_DAY_MS = 86_400_000
# Per-stream statistics: the slowest weight of a new event (a memory of ~200 events), a variance
# floor relative to the level (a flat line is not infinitely precise), and a clip on z.
_NORM_ALPHA = 0.005
_VAR_FLOOR = 1e-6
_Z_CLIP = 50.0
# Once a stream has ROBUST_FROM events (models.bounds), each one moves its statistics by at most
# _DELTA_CLIP of its scale: one wild reading (a glitch, a sentinel such as 1e308) used to swell the
# variance so far that the stream was blind for thousands of events, or for good once the square
# overflowed. A real change of level still gets through: each clipped step widens the scale, and
# the next steps with it. Lenient enough to leave synthetic streams' incidents (at most ~15 sd) alone.
_DELTA_CLIP = 20.0
# Before then a stream has no scale to clip by, so it keeps its first ROBUST_FROM values: with
# the last of them it drops any _WILD robust spreads (1.4826 MAD) or more from their median — a
# sentinel or a glitch, orders of magnitude off — and restarts its statistics of the values from
# the rest (the time gap's scale has a floor). A sentinel among the first readings (1e6, or -1e9 at
# boot) used to swell the variance so far that a 15 sd spike 600 readings later went unseen, or
# leave the mean so far off that every reading from the 50th was anomalous. Nothing is dropped
# when the last two values are that far out (the stream has moved) or when the MAD is 0 (most of
# the first values one value: there is no spread to judge by). At 20 spreads, quantised series
# lost ordinary readings (NAB's grok_asg_anomaly: 33.56 against a MAD of 0.002, over ten values).
# Five values rather than ten: a generic state fits the Redis allocation it had (1,128 bytes)
# rather than the next (1,384), and the clip from the 5th event, not the 10th, changes nothing
# on the synthetic files and one NAB file (ec2_disk_write_bytes_c0d644: zeros, then 4e8 at its
# 10th reading; 10 false alerts rather than 23).
_WILD = 1000.0
_MAD_SD = 1.4826
# A spec without stream_norm normalises by its kind's scale, against which one wild reading (a
# sentinel such as 65535 or -9999, a glitch of 1e6) is thousands of sds out: fed whole, it
# saturated the GRU, and a sensor stream stayed anomalous for ~200 readings after one 1e6 (40
# after a -9999). Its inputs are clipped at _INPUT_CLIP sds; its targets, which it is scored
# against, at _Z_CLIP. At 10 a wild reading is the one anomalous reading, and no incident of seed
# 9's network, financial or sensor files was lost. (Stream-normalised values are clipped at
# _Z_CLIP already; a further clip at 10 cost the generic kind 2 incidents on seeds 9-11.)
_INPUT_CLIP = 10.0
# The time gap (log1p seconds) of a stream normalised by its own statistics is never known to
# better than this: regular sampling has a running variance near zero, so one missed reading
# (a gap four times the usual) was a 40-150σ event, and on long streams nearly every false
# alert (318 of 329 over 60 × 3,000 synthetic readings).
_GAP_SCALE_FLOOR = 0.25
# A feature that has shown one value this many events in a row is stuck (stuck_targets).
STUCK_RUN = 3
# The run memory's parts (FeatureSpec._run_memory), in order.
_RUN_PARTS = ("last", "run", "repeats", "longest", "held", "pairs", "zero_repeats", "zero_pairs")
# A spell of repeats less likely than this at its stream's repeat rate is an incident, not a habit:
# it does not raise the record later spells must outlast (FeatureSpec.stuck_rule). Synthetic
# flatlines come out below 1e-20; real series' idle spells (NAB's disks and tweet counts at 0)
# above it, or at a value they have held before.
_STUCK_HABIT_CHANCE = 1e-10
# A spell of zeros is judged by how often 0 follows 0 in its stream, once the stream has shown this
# many pairs starting at 0 before it: a count stream with a daily cycle idles at 0 through its
# trough, far more often than its readings repeat overall, and each night's spell a little longer
# than the last was a false alert (6-7 of the 17-20 on 400-reading synthetic files).
_ZERO_HISTORY = 5
# A stuck flag's predicted scale stays ≥ 0.1: a firing flag then costs ~49 nats, plenty over any
# threshold, and a flag that stays 0 cannot buy likelihood without limit.
FLAG_LOG_SCALE_MIN = math.log(0.1)
# The level rule (level_rule): a two-sided CUSUM of each feature's standardised value
# (models.cusum). It judges only streams whose standardised values are close to independent: a
# lag-1 autocorrelation (an exponentially weighted mean over ~100 events) under cusum.RHO, after
# _LEVEL_HISTORY events. A daily cycle or a wandering level is autocorrelated, and their
# excursions are what the GRU is for. Both were set on development seed 9:
# - over ~50 events, a drift's first readings (each product of standardised values up to 16)
#   lifted the autocorrelation past cusum.RHO before the sum reached cusum.HOLD, and the rule
#   fell silent for the rest of the drift: long streams caught 34 of 62 drifts, now 42;
# - from 50 events, a daily stream younger than a day trails its own cycle with a running mean
#   that looks like a shift: 8 of the rule's 12 false alerts on 300 normal streams came from
#   ages 50-100; from 75, 2 of 10 (from 100, none, but seed 9 caught 2 fewer incidents).
_LEVEL_AC_ALPHA = 0.01
_LEVEL_HISTORY = 75
# A stream's first events teach the autocorrelation nothing: its statistics are still settling.
_LEVEL_WARMUP = 10


def _forward(kind: str, x: np.ndarray) -> np.ndarray:
    if kind == "log1p":
        return np.asarray(np.log1p(np.maximum(x, 0.0)))
    if kind == "signed_log":
        return np.asarray(np.sign(x) * np.log1p(np.abs(x)))
    return x


def _inverse(kind: str, y: np.ndarray) -> np.ndarray:
    if kind == "log1p":
        return np.asarray(np.expm1(y))
    if kind == "signed_log":
        return np.asarray(np.sign(y) * np.expm1(np.abs(y)))
    return y


@dataclass
class FeatureSpec:
    """Names and transforms of a kind's values, plus normalisation fitted on training data."""

    kind: str
    names: tuple[str, ...]
    transforms: tuple[Transform, ...]
    calendar: bool = False
    # Per-stream running statistics instead of one normalisation for all streams: for kinds whose
    # streams live on unrelated scales (NAB's: CPU %, request counts, temperatures).
    stream_norm: bool = False
    # A predicted column per feature: 1 once it has repeated one value STUCK_RUN events in a row.
    # A stuck channel does; a live one with any noise never does, so the model learns to expect
    # 0, and a stuck channel costs likelihood like any other surprise (and its explanation names
    # it). The GRU cannot see exact repeats by itself: its state holds float16, not a reading to
    # four decimals. Costs two floats per feature of stream state (last value, run length).
    stuck_targets: bool = False
    # The least log-scale the model may predict for a stuck flag (None: LOG_SCALE_MIN, as for
    # any column). A flag is 0 almost always, so without a floor its predicted scale collapses
    # to the bound and one firing flag costs hundreds of nats: training then swings with
    # whichever streams hold a stuck channel (validation NLL 0.7 to 166 on sensor).
    flag_log_scale_min: float | None = None
    # A decision rule rather than a target: a run of repeats longer than any the stream has shown
    # scores its chance under the stream's own repeat rate (``stuck_probabilities``). For kinds
    # whose streams differ in how often a value repeats (a count at night, a temperature to four
    # decimals), where one trained flag cannot fit all. Costs five floats per feature and one more
    # of stream state.
    stuck_rule: bool = False
    # Per-stream statistics of the model's surprise (models.likelihood): an event the calibration
    # finds anomalous must also be unusual against its own stream's history, or a value outside
    # every one the stream has shown. For kinds whose streams differ in how predictable they are
    # (real metrics: the calibration's false-alarm rate holds on the training data, not on them).
    # The detector advances them after each step; the spec only keeps their place in the memory.
    # Needs stream_norm (whose count it reads).
    likelihood_gate: bool = False
    # A decision rule for slow changes of level: a drift or a shift the GRU follows step by step
    # (``level_probabilities``), in streams whose values are independent noise about a level.
    # Needs stream_norm. Costs four floats per feature of stream state.
    level_rule: bool = False
    # A decision rule on the model's residuals: each feature's residual rescaled by the spread of
    # its own stream's residuals (models.residual), for kinds whose streams are steadier than the
    # model's predicted spread says (a spike in a quiet stream, the steps of a drift).
    # The detector advances it after each step; the spec only keeps its place in the memory.
    # Needs stream_norm (whose count it reads). Costs two floats per feature of stream state (the
    # spread, and the tail that makes a stream tame).
    residual_rule: bool = False
    # A decision rule for a level that has moved against the stream's own days (models.seasonal):
    # a drift or a shift in a daily cycle, where the level rule is silent. The detector advances
    # it after each step, and heeds it on tame streams only (models.residual: real series, whose
    # days differ, were paged 136 more times on NAB without that); the spec only keeps its place
    # in the memory. Needs the level rule (it judges only where that cannot) and the residual
    # rule (whose word on tameness it takes). Costs 130 floats per feature of stream state, most
    # of them three days of hourly means.
    seasonal_rule: bool = False
    # A decision rule for a level that has moved against what the stream's own last values predict
    # (models.autoregressive): a drift or a shift in a wandering level, where the level rule is
    # silent and the GRU's residuals are autocorrelated. Heeded, advanced and placed as the
    # seasonal rule is, with the same needs. Costs 25 floats per feature of stream state.
    autoregressive_rule: bool = False
    # A decision rule for a reading judged once the next one is in (models.hindsight): a spike
    # that came straight back, or the start of a step the next reading stayed with, which the
    # GRU's spread for a wandering or young stream holds. Heeded, advanced and placed as the
    # seasonal rule is, with the same needs. Costs 6 floats per feature of stream state.
    hindsight_rule: bool = False
    # A decision rule for a feature that breaks away from the others it moves with
    # (models.coupling): a channel drifting off its siblings, or following their load inverted,
    # which the GRU predicts from the channel's own recent values and so follows step by step.
    # For kinds whose features share a driver (a machine's load). The detector advances it after
    # each step; the spec only keeps its place in the memory. Costs 2 + n + n² floats of stream
    # state for n features.
    coupling_rule: bool = False
    mean: list[float] = field(default_factory=list)  # per predicted column (features + gap)
    std: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.names = tuple(self.names)
        self.transforms = tuple(self.transforms)
        if len(self.names) != len(self.transforms):
            raise ValueError("one transform per feature name")
        if self.level_rule and not self.stream_norm:
            raise ValueError("the level rule needs per-stream statistics (stream_norm)")
        if self.residual_rule and not self.stream_norm:
            raise ValueError("the residual rule needs per-stream statistics (stream_norm)")
        if self.likelihood_gate and not self.stream_norm:
            raise ValueError("the likelihood gate needs per-stream statistics (stream_norm)")
        rules = (
            ("seasonal", self.seasonal_rule),
            ("autoregressive", self.autoregressive_rule),
            ("hindsight", self.hindsight_rule),
        )
        for rule, on in rules:
            if on and not (self.level_rule and self.residual_rule):
                raise ValueError(
                    f"the {rule} rule needs the level rule (it judges where that cannot) and the residual rule"
                )

    @property
    def n_targets(self) -> int:
        """Predicted columns: every feature (and its stuck flag, with stuck_targets), then the time gap."""
        return len(self.names) * (2 if self.stuck_targets else 1) + 1

    @property
    def n_inputs(self) -> int:
        return self.n_targets + (2 if self.calendar else 0)

    @property
    def log_scale_floor(self) -> list[float]:
        """The least log-scale predicted for each target (models.scorer.LOG_SCALE_MIN, or the
        flags' own floor)."""
        n = len(self.names)
        floors = [LOG_SCALE_MIN] * self.n_targets
        if self.stuck_targets and self.flag_log_scale_min is not None:
            floors[n : 2 * n] = [self.flag_log_scale_min] * n
        return floors

    @property
    def target_names(self) -> tuple[str, ...]:
        stuck = tuple(f"{name}_stuck" for name in self.names) if self.stuck_targets else ()
        return (*self.names, *stuck, "gap_s")

    @property
    def fitted(self) -> bool:
        return len(self.mean) == self.n_targets

    def transform_values(self, values: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Raw value dicts → transformed (not yet normalised) feature matrix, shape (n, features)."""
        # Column by column through C iterators: ~3x a list of per-event tuples (the hot path).
        raw = np.empty((len(values), len(self.names)), dtype=np.float64)
        for j, name in enumerate(self.names):
            raw[:, j] = np.fromiter(map(itemgetter(name), values), dtype=np.float64, count=len(values))
        for j, kind in enumerate(self.transforms):
            raw[:, j] = _forward(kind, raw[:, j])
        return raw

    @staticmethod
    def gap_column(gaps_s: np.ndarray) -> np.ndarray:
        """Seconds since the stream's previous event (0 for its first), log-compressed."""
        return np.log1p(np.maximum(gaps_s, 0.0))

    @staticmethod
    def gaps(ts: np.ndarray, latest: np.ndarray) -> np.ndarray:
        """Seconds from each event's stream's latest time before it (epoch ms, ``latest_before``;
        -1: none, a gap of 0) to the event. An event no newer than that (late, or a duplicate: a source resending its
        last readings, a second producer) has no gap to judge: NaN, which normalising reads as the
        stream's usual gap."""
        gaps = np.where(latest >= 0, (ts - latest) / 1000.0, 0.0)
        return np.where((latest >= 0) & (gaps <= 0), np.nan, gaps)

    def targets(self, values: Sequence[Mapping[str, float]], gaps_s: np.ndarray) -> np.ndarray:
        """Transformed features and gap, shape (n, features + 1), before normalisation (the stuck
        flags, which depend on the stream's past, are added by ``normalise_batch``)."""
        return np.concatenate([self.transform_values(values), self.gap_column(gaps_s)[:, None]], axis=1)

    def fit(self, targets: np.ndarray) -> None:
        if self.stream_norm:  # each stream normalises itself; nothing global to fit
            self.mean, self.std = [0.0] * self.n_targets, [1.0] * self.n_targets
            return
        self.mean = [float(v) for v in np.nanmean(targets, axis=0)]  # NaN: a late event's gap
        # A constant column gets unit scale rather than a division by zero.
        self.std = [float(s) if s > 1e-6 else 1.0 for s in np.nanstd(targets, axis=0)]
        if self.stuck_targets:  # flags stay 0/1: no shift, unit scale
            n = len(self.names)
            self.mean[n:n] = [0.0] * n
            self.std[n:n] = [1.0] * n

    @property
    def sequential_norm(self) -> bool:
        """Whether normalising an event depends on the stream's earlier events (its running
        statistics, its stuck-value runs): then a stream's events normalise one after another."""
        return self.stream_norm or self._tracks_runs

    @property
    def _tracks_runs(self) -> bool:
        return self.stuck_targets or self.stuck_rule

    @property
    def _stats_size(self) -> int:
        return 1 + 2 * self.n_targets + ROBUST_FROM * len(self.names) if self.stream_norm else 0

    @property
    def norm_size(self) -> int:
        """Floats of per-stream memory a stream state carries: running statistics and the first
        ROBUST_FROM values (stream_norm), then each feature's last value and how many events in a
        row it has held it (stuck_targets, stuck_rule), then each feature's repeats so far, longest
        run before the current one and the value of its last improbable spell, the pairs of events
        seen, and its repeats of 0 and pairs starting at 0 (stuck_rule), then each feature's two
        CUSUMs, lag-1 autocorrelation and last standardised value (level_rule), then the residual
        rule's spreads, excursion counts and last excursions (residual_rule), then the seasonal
        rule's days (seasonal_rule), then the autoregressive rule's fits (autoregressive_rule), then
        the hindsight rule's last values, spreads and units (hindsight_rule), then the coupling rule's mean
        and covariance (coupling_rule), then the likelihood gate's statistics (likelihood_gate)."""
        n = len(self.names)
        return self.coupling_slice.stop + (gate_size(n) if self.likelihood_gate else 0)

    @property
    def _runs_end(self) -> int:
        """Where the statistics and run memory end (what ``_normalise_runs`` keeps)."""
        return self._stats_size + sum(self._run_widths)

    @property
    def _run_widths(self) -> tuple[int, ...]:
        """The widths of the run memory's parts this spec keeps, in _RUN_PARTS' order: each
        feature's last value and run (stuck_targets, stuck_rule), then its repeats, longest earlier
        run and the value of its last improbable spell, the pairs seen, and its repeats of 0 and
        pairs starting at 0 (stuck_rule)."""
        n = len(self.names)
        return ((n, n) if self._tracks_runs else ()) + ((n, n, n, 1, n, n) if self.stuck_rule else ())

    @property
    def gate_slice(self) -> slice:
        """Where the likelihood gate's statistics sit in a stream's memory (the end)."""
        return slice(self.norm_size - gate_size(len(self.names)) if self.likelihood_gate else self.norm_size, None)

    @property
    def _level_slice(self) -> slice:
        return slice(self._runs_end, self._runs_end + (4 * len(self.names) if self.level_rule else 0))

    @property
    def residual_slice(self) -> slice:
        """Where the residual rule's memory sits in a stream's memory (empty when off)."""
        start = self._level_slice.stop
        return slice(start, start + (residual_size(len(self.names)) if self.residual_rule else 0))

    @property
    def seasonal_slice(self) -> slice:
        """Where the seasonal rule's memory sits in a stream's memory (empty when off)."""
        start = self.residual_slice.stop
        return slice(start, start + (seasonal_size(len(self.names)) if self.seasonal_rule else 0))

    @property
    def expectation_rules(self) -> bool:
        """Whether a rule judges values against what the stream is expected to read (the seasonal,
        autoregressive and hindsight rules): the detector advances them together, after the residual
        rule."""
        return self.seasonal_rule or self.autoregressive_rule or self.hindsight_rule

    @property
    def autoregressive_slice(self) -> slice:
        """Where the autoregressive rule's memory sits in a stream's memory (empty when off)."""
        start = self.seasonal_slice.stop
        return slice(start, start + (autoregressive_size(len(self.names)) if self.autoregressive_rule else 0))

    @property
    def hindsight_slice(self) -> slice:
        """Where the hindsight rule's memory sits in a stream's memory (empty when off)."""
        start = self.autoregressive_slice.stop
        return slice(start, start + (hindsight_size(len(self.names)) if self.hindsight_rule else 0))

    @property
    def coupling_slice(self) -> slice:
        """Where the coupling rule's memory sits in a stream's memory (empty when off)."""
        start = self.hindsight_slice.stop
        return slice(start, start + (coupling_size(len(self.names)) if self.coupling_rule else 0))

    @property
    def single_slice(self) -> slice:
        """The part of a stream's memory that holds float32 values only (the seasonal rule's hourly
        means and counts; empty when the rule is off): a stored state keeps it as float32."""
        if not self.seasonal_rule:
            return slice(0, 0)
        start, part = self.seasonal_slice.start, seasonal_single(len(self.names))
        return slice(start + part.start, start + part.stop)

    def level_autocorrelation(self, norms: np.ndarray) -> np.ndarray:
        """Per stream and feature, the level rule's lag-1 autocorrelation of its standardised
        values, from its memory (B, norm_size); zeros when the rule is off."""
        if not self.level_rule:
            return np.zeros((len(norms), len(self.names)))
        return np.split(norms[:, self._level_slice], 4, axis=1)[2]

    def new_norm(self) -> np.ndarray:
        return np.zeros(self.norm_size, dtype=np.float64)

    def normalise_batch(
        self, targets: np.ndarray, norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One event for each of several streams: targets (B, T), norms (B, norm_size).

        Returns the normalised targets, the centre and scale used (for turning predictions back
        into raw units) and the streams' updated statistics.
        """
        if not (self.level_rule or self.residual_rule or self.likelihood_gate or self.coupling_rule):
            return self._normalise_runs(targets, norms)
        y, center, scale, runs = self._normalise_runs(targets, norms[:, : self._runs_end])
        memory = [runs]
        if self.level_rule:
            seen = norms[:, :1]  # events the stream's statistics had seen before this one
            memory.append(self._advance_level(y[:, : len(self.names)], seen, norms[:, self._level_slice]))
        # Carried through as they are: the detector advances them from the model's output.
        memory.append(norms[:, self.residual_slice.start :])
        return y, center, scale, np.concatenate(memory, axis=1)

    @staticmethod
    def _advance_level(y: np.ndarray, seen: np.ndarray, memory: np.ndarray) -> np.ndarray:
        """The level rule's memory (B, 4n: upward and downward sums, autocorrelation, last value)
        after standardised values ``y`` (B, n)."""
        up, down, autocorrelation, last = np.split(memory, 4, axis=1)
        v = cusum.clipped(y)
        young = seen < _LEVEL_WARMUP
        # The sums start once the autocorrelation has had its history: a young stream's own
        # statistics trail a trend, and its sums would start high.
        summing = seen >= _LEVEL_HISTORY - 1
        new_up, new_down = cusum.advance(up, down, v)
        up, down = np.where(summing, new_up, 0.0), np.where(summing, new_down, 0.0)
        judged = cusum.holding(autocorrelation, up, down)
        # An exact mean while the stream is young, then exponentially weighted.
        alpha = np.maximum(1.0 / np.maximum(seen - _LEVEL_WARMUP + 1.0, 1.0), _LEVEL_AC_ALPHA)
        autocorrelation = np.where(
            young | judged, autocorrelation, autocorrelation + alpha * (v * last - autocorrelation)
        )
        return np.concatenate([up, down, autocorrelation, v], axis=1)

    def level_probabilities(self, norms: np.ndarray) -> np.ndarray:
        """Per stream, from its memory after an event (B, norm_size): the stationary tail of its
        largest CUSUM, exp(-2 · cusum.K · s) per direction, the rarest feature's, times two
        directions and the number of features. 1 while the stream is young (_LEVEL_HISTORY
        events), for features whose values are autocorrelated, or when the rule is off.

        >>> spec = FeatureSpec("demo", ("v",), ("identity",), stream_norm=True, level_rule=True)
        >>> norm, rng = spec.new_norm()[None, :], np.random.default_rng(0)
        >>> chances = []
        >>> for i in range(200):  # noise about 10, then a drift of 0.2 sd a reading from event 160
        ...     v = 10 + rng.normal(0, 1) + max(0, i - 160) * 0.2
        ...     norm = spec.normalise_batch(np.array([[v, 0.0]]), norm)[3]
        ...     chances.append(float(spec.level_probabilities(norm)[0]))
        >>> min(chances[:160]) > 1e-3, min(chances[160:]) < 1e-6
        (True, True)
        """
        if not self.level_rule:
            return np.ones(len(norms))
        up, down, autocorrelation, _ = np.split(norms[:, self._level_slice], 4, axis=1)
        tail = np.where(autocorrelation < cusum.RHO, cusum.tail(up, down), 1.0)
        tail = np.where(norms[:, :1] >= _LEVEL_HISTORY, tail, 1.0)
        return np.minimum(1.0, tail.min(axis=1) * 2 * len(self.names))

    def _normalise_runs(
        self, targets: np.ndarray, norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self._tracks_runs:
            return self._normalise_stats(targets, norms)
        n = len(self.names)
        values = targets[:, :n]
        last, previous_run, repeats, longest, held, pairs, zero_repeats, zero_pairs = self._run_memory(norms)
        # A late or duplicate reading (no gap: Detector._targets) is out of the stream's sequence:
        # the runs neither count it nor end at it (a source resending its last reading twice used to
        # page as a value stuck for three readings).
        late = np.isnan(targets[:, -1:])
        repeat = (previous_run > 0) & (values == last) & ~late  # run 0: no value yet
        run = np.where(late, previous_run, np.where(repeat, previous_run + 1.0, 1.0))
        full = targets
        if self.stuck_targets:
            full = np.concatenate([values, (run >= STUCK_RUN).astype(np.float64), targets[:, n:]], axis=1)
        y, center, scale, new_stats = self._normalise_stats(full, norms[:, : self._stats_size])
        memory = [new_stats, np.where(late, last, values), run]
        if self.stuck_rule:
            paired = (previous_run[:, :1] > 0) & ~late  # a value before this one: a new pair
            # A spell that has just ended becomes the stream's habit (the record a later spell must
            # outlast) if it was plausible at the stream's repeat rate before it, or if the stream
            # has held this very value in an improbable spell before — or the value is 0, an idle
            # reading (a disk writing nothing, a count at night): the stream resting, not frozen.
            # Otherwise it was an incident — a reading frozen — and must not hide the next one.
            ended = ~repeat & ~late & (previous_run > 1)
            spell = np.maximum(previous_run - 1.0, 0.0)
            rate = (repeats - spell + 1.0) / (pairs - spell + 2.0)
            plausible = rate**spell >= _STUCK_HABIT_CHANCE
            again = last == held  # held starts at 0
            record = ended & (plausible | again)
            incident = ended & ~plausible & ~again
            after_zero = paired & (last == 0)
            zeros_forgotten = np.where(incident & (last == 0), spell, 0.0)
            memory += [
                repeats + repeat,
                np.where(record, np.maximum(longest, previous_run), longest),
                np.where(incident, last, held),
                pairs + paired,
                # An incident's spell of zeros does not teach the stream that zeros run on.
                zero_repeats + (after_zero & repeat) - zeros_forgotten,
                zero_pairs + after_zero - zeros_forgotten,
            ]
        return y, center, scale, np.concatenate(memory, axis=1)

    def stuck_probabilities(self, norms: np.ndarray, warmup: int) -> np.ndarray:
        """Per stream, from its memory after an event (B, norm_size): the chance of the run of
        repeats that event extends, had the stream kept repeating at its own rate — (r + 1) / (p + 2)
        per pair (r repeats in p consecutive pairs before it), to the power of the run's length − 1;
        the rarest feature's, times the number of features. 1 when nothing repeats, when the run is
        no longer than one the stream has shown before (real series hold values in spells: a
        spell as long as an earlier one is the stream's habit), while the stream has shown fewer
        than ``warmup`` pairs, or when the rule is off.

        >>> spec = FeatureSpec("demo", ("v",), ("identity",), stream_norm=True, stuck_rule=True)
        >>> norm = spec.new_norm()[None, :]
        >>> chances = []
        >>> for v in [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0, 6.0]:
        ...     norm = spec.normalise_batch(np.array([[v, 0.0]]), norm)[3]
        ...     chances.append(round(float(spec.stuck_probabilities(norm, warmup=3)[0]), 3))
        >>> chances[:7]  # after four pairs without a repeat, a repeat has chance 1/6; a second (2/7)²
        [1.0, 1.0, 1.0, 1.0, 1.0, 0.167, 0.082]
        >>> chances[7:]  # a second spell counts only once it outlasts the first
        [1.0, 1.0, 1.0, 0.094]
        """
        if not self.stuck_rule:
            return np.ones(len(norms))
        last, run, repeats, longest, _, pairs, zero_repeats, zero_pairs = self._run_memory(norms)
        repeating = run > 1
        # The rate before this event's pair: take it back out.
        rate = (repeats - repeating + 1.0) / (pairs - 1.0 + 2.0)
        # A spell of zeros: how often 0 followed 0 before this spell (its own pairs taken out).
        spell = np.maximum(run - 1.0, 0.0)
        zeros_before = np.maximum(zero_pairs - spell, 0.0)  # (negative for a spell of another value)
        zero_rate = (np.maximum(zero_repeats - spell, 0.0) + 1.0) / (zeros_before + 2.0)
        rate = np.where((last == 0) & (zeros_before >= _ZERO_HISTORY), zero_rate, rate)
        chance = np.where(repeating & (run > longest), rate**spell, 1.0)
        chance = np.where(pairs - 1.0 >= warmup, chance, 1.0)
        return np.minimum(1.0, chance.min(axis=1) * len(self.names))

    def _run_memory(self, norms: np.ndarray) -> tuple[np.ndarray, ...]:
        """Views of the run-tracking part of streams' memories (B, norm_size), one per _RUN_PARTS
        (empty for the parts the spec does not keep). With ``_run_widths``, the one place that
        knows their offsets."""
        widths = self._run_widths
        ends = np.cumsum(widths, dtype=int) + self._stats_size
        views = tuple(norms[:, end - width : end] for width, end in zip(widths, ends, strict=True))
        return views + (norms[:, :0],) * (len(_RUN_PARTS) - len(views))

    def _normalise_stats(
        self, targets: np.ndarray, norms: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        if not self.stream_norm:
            center = np.broadcast_to(np.asarray(self.mean), targets.shape)
            scale = np.broadcast_to(np.asarray(self.std), targets.shape)
            targets = np.where(np.isnan(targets), center, targets)  # a late event's gap: the usual one
            # Clipped as stream-normalised values are: a 1e300 reading scores 1,250 nats, not inf.
            return np.clip((targets - center) / scale, -_Z_CLIP, _Z_CLIP), center, scale, norms
        t, n = self.n_targets, len(self.names)
        count, mean, var = norms[:, :1], norms[:, 1 : 1 + t], norms[:, 1 + t : 1 + 2 * t]
        # A late event's gap (NaN, Detector._targets): the stream's usual one, which moves nothing.
        targets = np.where(np.isnan(targets) & (count > 0), mean, targets)
        first = norms[:, 1 + 2 * t :].reshape(len(norms), ROBUST_FROM, n).copy()  # the first values
        seen = count > 0
        center = np.where(seen, mean, targets)
        # √(var + floor · centre²), as a hypotenuse: a first reading of 1e308 (the centre) squares
        # to inf, and an infinite scale made the residual rule's memory NaN (0 · inf) for good.
        scale = np.hypot(np.sqrt(np.maximum(var, _VAR_FLOOR)), _VAR_FLOOR**0.5 * center)
        scale[:, -1] = np.maximum(scale[:, -1], _GAP_SCALE_FLOOR)  # the gap is the last target
        y = np.clip((targets - center) / scale, -_Z_CLIP, _Z_CLIP)
        # Exponentially weighted mean and variance; an exact running mean while young.
        alpha = np.maximum(1.0 / (count + 1.0), _NORM_ALPHA)
        delta = np.clip(targets - mean, -DEVIATION_MAX, DEVIATION_MAX)
        bound = _DELTA_CLIP * scale
        delta = np.where(count >= ROBUST_FROM, np.clip(delta, -bound, bound), delta)
        new_mean = np.where(seen, mean + alpha * delta, targets)
        new_var = np.where(seen, (1 - alpha) * (var + alpha * delta**2), 0.0)
        young = np.flatnonzero(count[:, 0] < ROBUST_FROM)
        if len(young):
            first[young, count[young, 0].astype(np.int64)] = targets[young, :n]
            last = young[count[young, 0] == ROBUST_FROM - 1]
            if len(last):
                new_mean[last, :n], new_var[last, :n] = _without_wild(
                    first[last], new_mean[last, :n], new_var[last, :n]
                )
        stats = [count + 1.0, new_mean, new_var, first.reshape(len(norms), -1)]
        return y, center, scale, np.concatenate(stats, axis=1)

    def normalise_sequence(
        self, targets: np.ndarray, norm: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """One stream's events in order (L, T): what ``normalise_batch`` gives event by event, with
        the stream's memory after each event (L, norm_size)."""
        if not self.sequential_norm:
            y, center, scale, _ = self.normalise_batch(targets, norm[None, :])
            return y, center, scale, np.broadcast_to(norm, (len(targets), len(norm)))
        ys, centers, scales, states = [], [], [], []
        state = norm[None, :]
        for row in targets:
            y, center, scale, state = self.normalise_batch(row[None, :], state)
            ys.append(y[0])
            centers.append(center[0])
            scales.append(scale[0])
            states.append(state[0])
        return np.array(ys), np.array(centers), np.array(scales), np.array(states).reshape(len(targets), len(norm))

    def normalise(self, targets: np.ndarray) -> np.ndarray:
        """Global normalisation (a spec without stream_norm)."""
        return (targets - np.asarray(self.mean)) / np.asarray(self.std)

    def untransform(self, values: np.ndarray) -> np.ndarray:
        """Transformed feature values (..., features: the first len(names) columns; any others are
        copied as they are) → raw units."""
        out = np.array(values, dtype=np.float64)
        for j, kind in enumerate(self.transforms):
            out[..., j] = _inverse(kind, out[..., j])
        return out

    def denormalise(
        self, normalised: np.ndarray, center: np.ndarray | None = None, scale: np.ndarray | None = None
    ) -> np.ndarray:
        """Normalised predictions → raw units (inverse transform per column)."""
        center = np.asarray(self.mean) if center is None else center
        scale = np.asarray(self.std) if scale is None else scale
        transformed = normalised * scale + center
        out = self.untransform(transformed)  # stuck flags stay as they are
        out[..., -1] = np.expm1(transformed[..., -1])
        return out

    def inputs(self, normalised_targets: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
        """Model inputs: normalised targets (clipped at _INPUT_CLIP without stream_norm) plus,
        optionally, hour of day as sin/cos."""
        if not self.stream_norm:
            normalised_targets = np.clip(normalised_targets, -_INPUT_CLIP, _INPUT_CLIP)
        if not self.calendar:
            return normalised_targets
        angle = 2 * math.pi * (np.asarray(ts_ms, dtype=np.float64) % _DAY_MS) / _DAY_MS
        return np.concatenate([normalised_targets, np.sin(angle)[:, None], np.cos(angle)[:, None]], axis=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        return cls(**dict(data))


DEFAULT_SPECS: dict[str, FeatureSpec] = {
    "network": FeatureSpec(
        "network",
        ("bytes", "packets", "duration_ms", "dst_ports"),
        ("log1p", "log1p", "log1p", "log1p"),
        calendar=True,
    ),
    "financial": FeatureSpec(
        "financial",
        ("amount", "merchant_novelty", "distance_km"),
        ("log1p", "identity", "log1p"),
        calendar=True,
    ),
    "sensor": FeatureSpec(
        "sensor",
        ("temperature", "pressure", "vibration", "current"),
        ("identity",) * 4,
        calendar=True,
        stuck_targets=True,
        flag_log_scale_min=FLAG_LOG_SCALE_MIN,
        coupling_rule=True,
    ),
}


def latest_before(ts: np.ndarray, last_ts: int) -> np.ndarray:
    """Per event of one stream, in arrival order at epoch ms ``ts``, the stream's latest time
    before it: ``last_ts`` (-1: none yet) or a later time of an earlier event. A stream's clock
    never goes back, so a late event does not stretch the next one's gap."""
    return np.maximum.accumulate(np.concatenate([np.array([last_ts], dtype=np.int64), ts[:-1]]))


def _without_wild(first: np.ndarray, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Streams' statistics after their first values ``first`` (B, ROBUST_FROM, n), given the
    running ``mean`` and ``var`` over them (B, n): for a feature with wild values (_WILD robust
    spreads from their median; the last two values not both wild), the mean and variance of the
    others instead (what the running statistics give without them); as they were elsewhere."""
    median = np.median(first, axis=1, keepdims=True)
    spread = _MAD_SD * np.median(np.abs(first - median), axis=1, keepdims=True)
    wild = (spread > 0) & (np.abs(first - median) >= _WILD * spread)
    dropped = wild.any(axis=1) & ~(wild[:, -1] & wild[:, -2])
    if not dropped.any():
        return mean, var
    kept = np.where(wild, np.nan, first)
    return np.where(dropped, np.nanmean(kept, axis=1), mean), np.where(dropped, np.nanvar(kept, axis=1), var)
