"""Anomaly likelihood: how unusual a stream's *recent* surprise is against its own history.

The GRU's surprise (the whitened residual of the predicted features) is on a scale that differs
from stream to stream: a noisy stream is always a little surprising. Following Numenta's anomaly
likelihood (Ahmad et al., 2017), the score of an event is the Gaussian tail of the short-term
average of surprise against the long-term distribution of that average — both kept as
exponentially weighted statistics, so the state is a handful of floats and everything is online.
Three additions (the first and the last from the same detector family):

- a *spatial* check: a novel value scores over every likelihood at once. Novel is outside every
  value the stream has shown so far, or inside that range but at a level it has never been at:
  nothing it has shown lies within ``NOVELTY_REACH`` (1 %) of the range either side — a square
  wave that stops halfway, a plateau at a new height. Levels are judged on a signed log scale
  (``_level``), where a heavy tail of counts is not a string of new levels. The stream's levels
  are kept as one bit per 64th of its range (redrawn as the range grows), so the check costs a
  few floats of memory. Once per novelty: while a stream keeps setting new extremes (a trend, a
  ramp) or exploring new levels, it scores so again only after ``spatial_quiet`` events that are
  not novel. Such scores are ranked by how far the value is from the range, or from the nearest
  level held, as a share of the range: a record beaten by a hair is the commonest false alarm on
  real series (NAB: median 0.3 % of the range outside its windows, 13 % inside), so a threshold
  set to page less drops those first. Records are judged from a stream's ``record_learning``-th
  event, before the likelihood has learned: a range needs fewer events than a history of
  surprise. On NAB, judging levels inside the range as well took the standard score from 58.0
  to 67.5 (94 windows caught, not 88; 171 false positives, not 282), judging them on the log
  scale to 68.8 (142), 10 events of quiet, not 20, to 69.7 (119), and records from the 100th
  event to 70.4 (a record low at event 267 of a file whose scoring starts at 243);
- novel spells: the caller may mark where a run of repeats longer than any the stream has
  shown starts (a detector's ``stuck`` rule judges that, ``score_series``); it scores as a novel
  value a whole range away. On NAB: 72.0, from 70.4 (98 windows, not 95; 148 outside, not 121);
- a red filter: only the first of consecutive near-certain scores stays near-certain, so one
  incident is one top score rather than a plateau of them.

The output is a score in [0, 1], comparable across streams: the likelihood log-scaled (1 − 1e-10
likelihood ↦ 1.0) and held under ``LIKELIHOOD_TOP``; a novel value scores from
``LIKELIHOOD_TOP`` (a hair from what the stream has shown) towards 1.0 (far from it).

>>> lk = AnomalyLikelihood(learning=3, record_learning=3)
>>> state = lk.new_state(1)
>>> [round(lk.update(s, [v], state), 4) for s, v in [(1, 5), (1, 6), (1, 5), (1, 6), (1, 9)]]
[0.5, 0.5, 0.5, 0.0301, 0.9997]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from models.waves import Waves

__all__ = [
    "GATE_FIELDS",
    "LIKELIHOOD_TOP",
    "SPELL_SCORE",
    "AnomalyLikelihood",
    "LikelihoodState",
    "advance_gate",
    "gate_probabilities",
    "gate_probability",
    "gate_size",
]

_RED = 0.99999  # a likelihood this close to 1 is "red"; a second red in a row is demoted
_DEMOTED = 0.999
_LOG_BASE = math.log(1.0 - 0.9999999999)
# The likelihood's scores stay under this; a novel value (the spatial check) scores above it.
LIKELIHOOD_TOP = 0.999
# A novel spell's score: a novel value's a whole range away from what the stream has shown.
SPELL_SCORE = 1.0 - (1.0 - LIKELIHOOD_TOP) / 2.0


@dataclass
class LikelihoodState:
    """One stream's likelihood: the statistics ``advance_gate`` keeps (a row of ``memory``), the
    events seen, and whether the last score was red."""

    memory: np.ndarray  # (1, gate_size(features))
    count: int = 0
    prev_red: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=bool))


@dataclass(frozen=True)
class AnomalyLikelihood:
    learning: int = 288  # events before a stream's likelihood is scored (0.5 = "don't know" until then)
    # Events before a record (a value outside the range) is novel: a range needs fewer than a
    # history of surprise does. A level inside the range waits for ``learning``: its bins fill slower.
    record_learning: int = 100
    short_alpha: float = 0.2  # ~ the last 10 events
    long_alpha: float = 1 / 2000  # the slowest weight of the long-term statistics
    spatial: bool = True
    spatial_quiet: int = 10  # events that are not novel before a novelty scores over the likelihood again

    def new_state(self, features: int) -> LikelihoodState:
        return LikelihoodState(np.zeros((1, gate_size(features))))

    def update(
        self, surprise: float, values: Sequence[float] | np.ndarray, state: LikelihoodState, spell: bool = False
    ) -> float:
        """Score one event of the stream (its surprise and raw feature values), then learn it.
        ``spell``: the event starts a novel spell (a detector's ``stuck`` rule, as ``score_series``)."""
        x = np.asarray(values, dtype=np.float64).reshape(1, -1)
        score = self._wave(state.memory, np.array([float(surprise)]), x, state.count, state.prev_red, np.array([spell]))
        state.count += 1
        return float(score[0])

    def score_series(
        self, surprises: Sequence[float] | np.ndarray, values: np.ndarray, spells: Sequence[bool] | None = None
    ) -> np.ndarray:
        """One stream, in order: ``values`` is (events, features). ``spells``: per event, whether it
        starts a novel spell — a run of repeats longer than any its stream has shown, improbable
        at the stream's own repeat rate (a detector's ``stuck`` rule, which judges that). Such an
        event scores over every likelihood like a novel value, a whole range away: a duration the
        stream has never held, as a level it has never been at."""
        return self.score_streams([surprises], [values], None if spells is None else [spells])[0]

    def score_streams(
        self,
        surprises: Sequence[Sequence[float] | np.ndarray],
        values: Sequence[np.ndarray],
        spells: Sequence[Sequence[bool] | np.ndarray] | None = None,
    ) -> list[np.ndarray]:
        """``score_series`` of several streams at once (the same scores): wave by wave, the t-th
        event of every stream that has one, so a corpus of files costs one gate step per wave
        rather than one per event (NAB: ~23,000 waves for 365,558 events)."""
        lengths = np.array([len(s) for s in surprises], dtype=np.int64)
        rows = [np.asarray(v, dtype=np.float64) for v in values]
        # An empty stream's width: its columns if it has them (reshape cannot infer it from 0 values).
        rows = [
            r.reshape(n, -1) if n else r.reshape(0, r.shape[1] if r.ndim == 2 else 1)
            for n, r in zip(lengths, rows, strict=True)
        ]
        widths = {r.shape[1] for r in rows}
        if len(widths) > 1:
            raise ValueError(f"streams of different numbers of features: {sorted(widths)}")
        features = widths.pop() if widths else 1
        waves = Waves(lengths)
        surprise, value = waves.pad(surprises), waves.pad(rows, (features,))
        size = len(lengths)
        spell = waves.pad(spells, dtype=bool) if spells is not None else np.zeros((size, waves.count), dtype=bool)
        memory, prev_red = np.zeros((size, gate_size(features))), np.zeros(size, dtype=bool)
        scores = np.zeros((size, waves.count))
        for t in range(waves.count):
            k = waves.going(t)
            scores[:k, t] = self._wave(memory[:k], surprise[:k, t], value[:k, t], t, prev_red[:k], spell[:k, t])
        return waves.unpad(scores)

    def _wave(
        self,
        memory: np.ndarray,
        surprise: np.ndarray,
        values: np.ndarray,
        seen: int,
        prev_red: np.ndarray,
        spells: np.ndarray,
    ) -> np.ndarray:
        """Score and learn the event after the first ``seen`` of each stream whose statistics are a
        row of ``memory`` (updated in place, as ``prev_red``: whether its last score was red)."""
        before = memory.copy()  # the ranges and bins before these events: the gate updates them
        z, opened = advance_gate(self, memory, surprise, values, np.full(len(memory), float(seen)))
        if seen + 1 > self.learning:
            scores = np.minimum(self._scores(z, prev_red), LIKELIHOOD_TOP)
        else:
            scores = np.full(len(memory), 0.5)
        if self.spatial:
            scores = np.where(spells, SPELL_SCORE, scores)
        for i in np.flatnonzero(opened):  # rare: a novelty's share is worked out one by one
            scores[i] = 1.0 - (1.0 - LIKELIHOOD_TOP) / (1.0 + _novelty_share(before[i : i + 1], values[i]))
        return scores

    @staticmethod
    def _scores(z: np.ndarray, prev_red: np.ndarray) -> np.ndarray:
        likelihood = 1.0 - 0.5 * np.asarray(_erfc(z / math.sqrt(2.0)), dtype=np.float64)
        red = likelihood >= _RED
        likelihood = np.where(red & prev_red, _DEMOTED, likelihood)
        prev_red[:] = red
        # Log scale as Numenta's; a likelihood of 0 would give -4e-12: clamp to the unit interval.
        return np.clip(np.log(1.0000000001 - likelihood) / _LOG_BASE, 0.0, 1.0)


_erfc = np.frompyfunc(math.erfc, 1, 1)  # numpy has no erfc; a wave is at most a few hundred streams


# The likelihood's statistics for many streams at once (``AnomalyLikelihood.update`` keeps one
# stream's with them too), and the likelihood as a gate on a detector's per-event decisions
# (FeatureSpec.likelihood_gate). Each stream's are a row of floats of its memory — short, mean,
# var, the last novel event (plus one; 0 for none), then per feature the low and high of its
# range and which of its NOVELTY_BINS equal stretches have held a value, as two 32-bit words
# (meaningful once the stream has seen an event). How many events each stream has seen is the
# caller's (a detector's running statistics count them already).
GATE_FIELDS = 4
NOVELTY_BINS = 64
# A value inside the range is novel when nothing the stream has shown lies within this share of
# its range either side of it (in bins: the ones that stretch overlaps).
NOVELTY_REACH = 0.01
_WORDS = 2  # floats a feature's bins take: 32 bits each, exact in a float64
_ALL_BINS = np.uint64(2**NOVELTY_BINS - 1)


def gate_size(features: int) -> int:
    """Floats of stream memory the gate keeps for ``features`` values."""
    return GATE_FIELDS + (2 + _WORDS) * features


def advance_gate(
    likelihood: AnomalyLikelihood, memory: np.ndarray, surprise: np.ndarray, values: np.ndarray, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One event for each of several streams: ``memory`` (B, gate_size) is updated in place;
    ``seen`` (B,) is how many events each stream had seen before this one.

    Returns, per event, the z of its stream's recent surprise against the stream's history, and
    whether the gate is open regardless of z: a novel value (once per novelty, as ``update``).
    z is +inf while the stream is learning: the gate lets every decision through until the
    stream has a history to be unusual against."""
    n = values.shape[1]
    values = _level(values)
    count = np.asarray(seen, dtype=np.float64)
    short, mean, var, novel_at = (memory[:, k] for k in range(GATE_FIELDS))
    low, high, words = _range_parts(memory, n)
    first = count == 0
    short[:] = np.where(first, surprise, short + likelihood.short_alpha * (surprise - short))
    learned = count >= likelihood.learning
    z = np.where(learned, (short - mean) / np.sqrt(np.maximum(var, 1e-12)), np.inf)
    opened = np.zeros(len(count), dtype=bool)
    bins = _join(words)
    if likelihood.spatial:
        # No range before the first value (low and high are meaningless then).
        outside, new_level = _novel(values, low, high, bins)
        records = count >= likelihood.record_learning
        novel = ~first & np.any((outside & records[:, None]) | (new_level & learned[:, None]), axis=1)
        # novel_at holds the last such event's count plus one: 0 is "none yet".
        opened = novel & ((novel_at == 0) | (count - (novel_at - 1) > likelihood.spatial_quiet))
        novel_at[:] = np.where(novel, count + 1, novel_at)
    weight = np.maximum(1.0 / (count + 1.0), likelihood.long_alpha)
    delta = short - mean
    mean += weight * delta
    var[:] = (1.0 - weight) * (var + weight * delta * delta)
    new_low = np.where(first[:, None], values, np.minimum(low, values))
    new_high = np.where(first[:, None], values, np.maximum(high, values))
    bins = np.where(first[:, None], np.uint64(0), _rebin(bins, low, high, new_low, new_high))
    bins |= _bin_of(values, new_low, new_high)
    low[:], high[:] = new_low, new_high
    _store(words, bins)
    return z, opened


def _level(values: np.ndarray) -> np.ndarray:
    """Values as the spatial check sees them: on a signed log scale (sign · log(1 + |v|)), where the
    heavy tail of a count or a load is not a string of new levels; nearly linear over a range
    narrow for its values (a temperature about 1,000 ± 5)."""
    return np.sign(values) * np.log1p(np.abs(values))


def _range_parts(memory: np.ndarray, features: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views into a gate ``memory`` (B, gate_size): lows and highs (B, features), and the bins'
    words (B, features, 2)."""
    low = memory[:, GATE_FIELDS : GATE_FIELDS + features]
    high = memory[:, GATE_FIELDS + features : GATE_FIELDS + 2 * features]
    words = memory[:, GATE_FIELDS + 2 * features :].reshape(len(memory), features, _WORDS)
    return low, high, words


def _join(words: np.ndarray) -> np.ndarray:
    as_int = words.astype(np.uint64)
    return as_int[..., 0] | (as_int[..., 1] << np.uint64(32))


def _store(words: np.ndarray, bins: np.ndarray) -> None:
    """Write ``bins`` into the memory's ``words`` in place, low 32 bits first (``_join``'s inverse)."""
    words[..., 0] = bins & np.uint64(0xFFFFFFFF)
    words[..., 1] = bins >> np.uint64(32)


def _span(first_bin: np.ndarray, last_bin: np.ndarray) -> np.ndarray:
    """Bit masks of the bins ``first_bin`` to ``last_bin`` (int arrays, 0 <= first <= last < 64)."""
    width = (last_bin - first_bin + 1).astype(np.uint64)
    # A shift by 64 is undefined: the full span is written out.
    ones = np.where(width >= NOVELTY_BINS, _ALL_BINS, (np.uint64(1) << np.minimum(width, 63)) - np.uint64(1))
    return ones << first_bin.astype(np.uint64)


def _position(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Where values lie in their range, in bins (a float; a range of one value is all bin 0)."""
    # A range of a few ulps overflows to ±inf: the first or the last bin, as _bin clamps it.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.where(high > low, (values - low) / (high - low) * NOVELTY_BINS, 0.0)


def _bin(position: np.ndarray) -> np.ndarray:
    # fmin / fmax: ufuncs, cheaper per call than np.clip on the one-stream path; ±inf (a range of
    # a few ulps, _position) lands in the last or first bin.
    return np.fmax(np.fmin(np.floor(position), NOVELTY_BINS - 1), 0).astype(np.int64)


def _bin_of(values: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.uint64(1) << _bin(_position(values, low, high)).astype(np.uint64)


def _novel(values: np.ndarray, low: np.ndarray, high: np.ndarray, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature: whether the value lies outside the range (a record), and whether it lies inside
    it with no value the stream has shown within NOVELTY_REACH of the range either side (a level
    it has never been at: a plateau in the middle of a square wave, a dip that stops halfway)."""
    outside = (values > high) | (values < low)
    reach = NOVELTY_REACH * NOVELTY_BINS
    position = _position(values, low, high)
    near = _span(_bin(position - reach), _bin(position + reach))
    return outside, ~outside & (high > low) & ((bins & near) == 0)


def _rebin(
    bins: np.ndarray, low: np.ndarray, high: np.ndarray, new_low: np.ndarray, new_high: np.ndarray
) -> np.ndarray:
    """The bins over a range that grew: each held bin marks every new bin it overlaps, so a
    stretch that held values never reads as empty (a growing range blurs the bins rather than
    opening holes in them). A range of one value held it in its only point."""
    grown = np.nonzero((new_low < low) | (new_high > high))
    if not len(grown[0]):
        return bins
    out = bins.copy()
    b, lo, hi, new_lo, new_hi = bins[grown], low[grown], high[grown], new_low[grown], new_high[grown]
    held = _held(b)
    starts, width = _bin_starts(lo, hi)
    first_bin = _bin(_position(starts, new_lo[:, None], new_hi[:, None]))
    ends = _position(starts + width, new_lo[:, None], new_hi[:, None])
    last_bin = np.maximum(first_bin, _bin(np.ceil(ends) - 1))
    marks = np.where(held, _span(first_bin, last_bin), np.uint64(0))
    point = _bin_of(lo, new_lo, new_hi)  # a range of one value
    out[grown] = np.where(hi > lo, np.bitwise_or.reduce(marks, axis=1), point)
    return out


def _novelty_share(memory: np.ndarray, values: np.ndarray) -> float:
    """How novel an event's raw ``values`` are, on the gate's scale (``_level``), against its
    stream's gate ``memory`` (1, gate_size) before it: how far outside the range, or for a value
    inside it, how far from the nearest bin that held a value, as a share of the range; the
    largest over its features (inf for a range of one value). Asked only of a novel event, not
    of every event."""
    x = _level(np.asarray(values, dtype=np.float64))
    low, high, words = (part[0] for part in _range_parts(memory, len(x)))
    span = high - low
    starts, width = _bin_starts(low, high)
    gaps = np.maximum(np.maximum(starts - x[:, None], x[:, None] - (starts + width)), 0.0)
    # No bin held (a range that has only just opened): the whole range away.
    nearest = np.minimum(np.where(_held(_join(words)), gaps, np.inf).min(axis=1), span)
    outside = np.maximum(x - high, low - x)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(outside > 0, outside, nearest) / span
    return float(np.where(span > 0, share, np.where(x != low, np.inf, 0.0)).max())


def _held(bins: np.ndarray) -> np.ndarray:
    """Which of NOVELTY_BINS bins each mask of ``bins`` holds: bool (..., NOVELTY_BINS)."""
    return ((bins[..., None] >> np.arange(NOVELTY_BINS, dtype=np.uint64)) & np.uint64(1)).astype(bool)


def _bin_starts(low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each bin of a range starts (..., NOVELTY_BINS), and the bins' width (..., 1)."""
    width = (high - low)[..., None] / NOVELTY_BINS
    return low[..., None] + np.arange(NOVELTY_BINS) * width, width


def gate_probabilities(probability: np.ndarray, z: np.ndarray, opened: np.ndarray, far: float) -> np.ndarray:
    """A detector's per-event probabilities, gated: an event below the false-alarm rate ``far``
    stays as improbable only as the Gaussian tail of its stream's recent surprise allows, unless
    the gate is open. Events at or above ``far`` are left as they are."""
    gated = probability.copy()
    for i in np.flatnonzero((probability < far) & ~opened):  # rare: a loop of math.erfc is cheapest
        gated[i] = gate_probability(float(gated[i]), float(z[i]), False, far)
    return gated


def gate_probability(probability: float, z: float, opened: bool, far: float) -> float:
    """``gate_probabilities`` for one event."""
    if probability >= far or opened:
        return probability
    return max(probability, 0.5 * math.erfc(z / math.sqrt(2.0)))
