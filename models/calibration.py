"""Calibration: raw score → tail probability, thresholds, warm-up and alert episodes.

The tail probability of a score is P(S ≥ s) for normal events, read from quantiles of the
validation scores, with an exponential tail past the highest quantile. A stream's own running
mean score (updated only by normal events) shifts its scores, so a stream that is always a
little harder to predict does not alert forever. An event is anomalous when its probability is
below the target false-alarm rate, or when the stream's recent scores (an exponentially weighted
mean over ~5 events, each clipped at the threshold) sit above its long-run mean by more than
normal streams ever do at that rate: slow faults (a drift, a stuck channel) make every event a
little surprising and no single one alarming. Both wait for the stream's warm-up. Two inputs
from a kind's per-stream memory, where its spec keeps them: the likelihood gate holds either back
when the stream's own history does not find it unusual (unless the stream is tame, its residuals
light-tailed, and the event well under the rate), the stuck rule flags an improbable
run of repeats, the level rule a level that has moved in a stream of independent noise, and
the coupling rule a feature broken away from the others it moves with.
Episodes turn runs of anomalous events into one alert: open → (update) → resolve after
``cooldown`` quiet events.

>>> cal = Calibration.fit([float(i) for i in range(1000)], far=0.01)
>>> cal.probability(2000.0) < 0.01 < cal.probability(500.0)
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from models.likelihood import gate_probabilities, gate_probability

__all__ = [
    "RULE_NAMES",
    "SEVERITY_NAMES",
    "BatchDecision",
    "Calibration",
    "Decision",
    "EpisodeArrays",
    "EpisodeState",
    "Rule",
    "Severity",
]

Severity = Literal["low", "medium", "high", "critical"]
SEVERITY_NAMES: tuple[Severity, ...] = ("low", "medium", "high", "critical")
# Episode transitions in a BatchDecision: none, or the index into this tuple.
EPISODE_NAMES: tuple[Literal["open", "update", "resolve"], ...] = ("open", "update", "resolve")
# Why an event is anomalous: its score (or one feature's term), a sustained lift of the recent
# scores, a run of repeats the stream's own repeat rate makes improbable (FeatureSpec.stuck_rule),
# a shift of level in a stream of independent noise (FeatureSpec.level_rule), a residual
# large against the stream's own residuals (FeatureSpec.residual_rule), or a feature broken away
# from the others it moves with (FeatureSpec.coupling_rule).
Rule = Literal["score", "sustained", "stuck", "level", "residual", "coupling"]
RULE_NAMES: tuple[Rule, ...] = ("score", "sustained", "stuck", "level", "residual", "coupling")
_LEVELS = np.concatenate([np.linspace(0.0, 0.99, 100), 1 - np.logspace(-2.5, -4, 4), [1.0]])
# The per-stream mean score adapts this fast (an exponentially weighted mean over ~200 events).
_STREAM_ALPHA = 0.005
# The recent mean score weighs the last ~5 events.
_RECENT_ALPHA = 0.2
# The sustained-lift rule gets this share of the false-alarm budget: lifts persist for several
# events, so each excursion flags more than one.
_SUSTAIN_SHARE = 0.05
# The level rule's share: its sums stay high for the length of a shift, so each flags many events.
_LEVEL_SHARE = 0.1
# The coupling rule's share: a broken relation lasts as long as its incident, as a shift does.
_COUPLING_SHARE = 0.1
# The rules read from a stream's memory after the gate, in the order they are weighed, each with
# its share of the budget (its chance over its share is the event's probability when smaller; the
# stuck rule's chance is already a run's tail at the stream's own repeat rate).
_MEMORY_RULES: tuple[tuple[Rule, float], ...] = (("stuck", 1.0), ("level", _LEVEL_SHARE), ("coupling", _COUPLING_SHARE))
# On a tame stream (models.residual: its residuals have proven light-tailed) the calibration's
# rate holds, so the gate need not hold back an event the calibration finds this far under it.
# Chosen on a development seed (9): at 1 (no margin) its short streams' alert precision fell from
# 0.926 to 0.877, at 0.3 to 0.917; its long streams' recall rose from 0.871 to 0.894 and 0.886.
_TAME_SHARE = 0.3


@dataclass
class Decision:
    probability: float
    anomalous: bool
    alert: bool  # this event opens an episode (or escalates it)
    severity: Severity | None
    episode: Literal["open", "update", "resolve"] | None
    rule: Rule | None = None  # why it is anomalous (RULE_NAMES)


@dataclass
class Calibration:
    levels: list[float]
    scores: list[float]
    far: float
    tail_scale: float
    warmup: int = 10
    cooldown: int = 20
    sustain_h: float = math.inf  # lift of recent over long-run scores that is anomalous (inf: off)
    # One calibration per feature term (None: off). An outlier in one feature is diluted in the
    # sum of all terms; each term also gets its own tail, and an event's probability is the
    # smaller of the sum's and the rarest term's (Bonferroni: times the number of terms, over
    # term_share of the false-alarm budget).
    terms: list[Calibration] | None = None
    term_share: float = 0.5
    # The residual rule's calibration (None: off): the tail of an event's largest residual
    # against its stream's own spread (models.residual), over normal events; it gets
    # residual_share of the false-alarm budget.
    residual: Calibration | None = None
    residual_share: float = 0.5
    # A stream in its warm-up alerts only on an event under this chance (0: never). A kind scaled
    # by its training data judges a young stream's readings against that scale from the first
    # (its warm-up waits for the GRU's state, whose cold start gives normal first readings
    # chances down to ~1e-7 there); a spike in a stream's 3rd reading is no less a spike.
    warmup_far: float = 0.0

    def __post_init__(self) -> None:
        # Arrays once: np.interp on lists converts them on every call (the hot path's cost).
        self._levels = np.asarray(self.levels, dtype=np.float64)
        self._scores = np.asarray(self.scores, dtype=np.float64)
        self._median = float(np.interp(0.5, self._levels, self._scores))
        self._threshold = self.score_at(self.far)

    @classmethod
    def fit(
        cls,
        normal_scores: Sequence[float],
        far: float = 1e-3,
        warmup: int = 10,
        cooldown: int = 20,
        streams: Sequence[Sequence[float]] = (),
    ) -> Calibration:
        """Quantiles of normal scores; with ``streams`` (each normal stream's scores in order, from
        its first event) also the sustained-lift threshold normal streams pass at rate ``far``."""
        data = np.asarray(normal_scores, dtype=np.float64)
        if data.size < 10:
            raise ValueError("calibration needs at least 10 normal scores")
        quantiles = np.quantile(data, _LEVELS)
        top = data[data >= np.quantile(data, 0.99)]
        # Exponential tail: the mean excess over the 99th percentile.
        scale = float(max(np.mean(top - quantiles[99]), 1e-3))
        cal = cls([float(v) for v in _LEVELS], [float(q) for q in quantiles], far, scale, warmup, cooldown)
        lifts: list[float] = []
        for stream in streams:
            state = EpisodeState()
            for score in stream:
                cal._track(float(score), state, anomalous=False)
                if state.count > warmup:
                    lifts.append(state.recent - state.score_mean)
        if len(lifts) >= 1000:
            # The lift normal streams pass at rate far × share lies far past the data (1 in 200,000
            # events at the defaults): an exponential tail over the top 1 % extrapolates to it, where
            # the empirical quantile would just be the largest lift seen.
            lift = np.asarray(lifts)
            q99 = float(np.quantile(lift, 0.99))
            excess = max(float(np.mean(lift[lift >= q99] - q99)), 1e-3)
            cal.sustain_h = q99 + excess * math.log(0.01 / (far * _SUSTAIN_SHARE))
            cal.__post_init__()
        return cal

    @property
    def threshold(self) -> float:
        """The score whose tail probability is the target false-alarm rate."""
        return self.score_at(self.far)

    def score_at(self, probability: float) -> float:
        levels, scores = np.asarray(self.levels), np.asarray(self.scores)
        top_level = levels[-2]  # the last finite-tail quantile
        if 1 - probability <= top_level:
            return float(np.interp(1 - probability, levels, scores))
        return float(scores[-2] + self.tail_scale * math.log((1 - top_level) / probability))

    def probability(self, score: float) -> float:
        """P(S ≥ score) for a normal event."""
        return float(self.probabilities(np.array([score]))[0])

    def event_probabilities(self, shifted_scores: np.ndarray, terms: np.ndarray) -> np.ndarray:
        """Each event's tail probability: of its (shifted) score, or of its rarest feature term
        (``terms``: (events, features)), whichever is smaller."""
        probability = self.probabilities(shifted_scores)
        by_term = self.term_probabilities(terms)
        return probability if by_term is None else np.minimum(probability, by_term)

    def term_probabilities(self, terms: np.ndarray) -> np.ndarray | None:
        """The rarest feature term's tail probability per event, Bonferroni-scaled (None: rule off).
        It does not depend on the stream's shift, so a sequence computes it once."""
        if not self.terms:
            return None
        rarest = np.min([c.probabilities(terms[:, j]) for j, c in enumerate(self.terms)], axis=0)
        return np.asarray(rarest * len(self.terms) / self.term_share)

    def residual_probabilities(self, residuals: np.ndarray, law: np.ndarray | None = None) -> np.ndarray | None:
        """Per event, the chance of its largest rescaled residual (models.residual; 0 is no word:
        chance 1) — or, where smaller, its chance under a tame stream's light-tailed ``law``
        (models.residual.advance_residual) — over residual_share of the budget (None: rule off)."""
        if self.residual is None:
            return None
        chance = self.residual.probabilities(residuals)
        if law is not None:
            chance = np.minimum(chance, law)
        chance = chance / self.residual_share
        return np.where(residuals > 0, np.minimum(chance, 1.0), 1.0)

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """P(S ≥ s) for each score, vectorised."""
        top_score, top_level = self._scores[-2], self._levels[-2]
        body = 1 - np.interp(scores, self._scores, self._levels)
        tail = (1 - top_level) * np.exp(-(np.maximum(scores, top_score) - top_score) / self.tail_scale)
        return np.where(scores >= top_score, tail, body)

    @property
    def median(self) -> float:
        return self._median

    def shift(self, state: EpisodeState) -> float:
        """How much harder to predict this stream is than the training median (never negative)."""
        if state.count <= self.warmup:
            return 0.0
        return max(0.0, state.score_mean - self._median)

    def shifts(self, state: EpisodeArrays) -> np.ndarray:
        """``shift`` for several streams."""
        return np.where(state.count <= self.warmup, 0.0, np.maximum(0.0, state.score_mean - self._median))

    def severity(self, probability: float) -> Severity:
        if probability < self.far * 1e-3:
            return "critical"
        if probability < self.far * 1e-2:
            return "high"
        if probability < self.far * 1e-1:
            return "medium"
        return "low"

    def decide(self, score: float, state: EpisodeState) -> Decision:
        """Calibrate one score of a stream and advance its episode (mutates ``state``)."""
        return self.advance(score, self.probability(score - self.shift(state)), state)

    def _track(self, score: float, state: EpisodeState, anomalous: bool) -> None:
        """Advance a stream's running means: long-run (normal events only) and recent (clipped)."""
        state.count += 1
        clipped = min(score, self._threshold)
        if state.count == 1:
            state.score_mean = state.recent = clipped
            return
        state.recent += _RECENT_ALPHA * (clipped - state.recent)
        if not anomalous:
            # An exact running mean while the stream is young, then exponentially weighted.
            state.score_mean += max(1.0 / state.count, _STREAM_ALPHA) * (clipped - state.score_mean)

    def advance(
        self,
        score: float,
        probability: float,
        state: EpisodeState,
        stuck: float = 1.0,
        gate_z: float = math.inf,
        gate_open: bool = False,
        level: float = 1.0,
        residual: float = 1.0,
        residual_tame: bool = False,
        coupling: float = 1.0,
    ) -> Decision:
        """Advance a stream's episode with a calibrated score (mutates ``state``). ``stuck``: the
        chance of the run of repeats this event extends (FeatureSpec.stuck_probabilities);
        ``gate_z`` and ``gate_open``: the likelihood gate's word on it (models.likelihood), which
        holds back an anomalous score or sustained lift its stream's own history does not back;
        ``level``: the tail of its stream's level-shift sums (FeatureSpec.level_probabilities);
        ``residual``: the chance of its residual against its stream's own (residual_probabilities),
        gated like the score unless ``residual_tame`` (its stream's residual tail has proven light,
        models.residual; then a score or lift under _TAME_SHARE of the rate passes the gate too);
        ``coupling``: the chance of its features' relation to each other (models.coupling)."""
        warm = state.count >= self.warmup
        rule: Rule = "score"
        if warm and math.isfinite(self.sustain_h) and probability >= self.far:
            recent = state.recent + _RECENT_ALPHA * (min(score, self._threshold) - state.recent)
            lift = recent - state.score_mean
            if lift > self.sustain_h:
                # A sustained lift counts as one event that improbable.
                probability = min(probability, self.far * math.exp(-(lift - self.sustain_h)))
                rule = "sustained"
        if residual < probability and not residual_tame:
            probability, rule = residual, "residual"
        sure = residual_tame and probability < self.far * _TAME_SHARE
        probability = gate_probability(probability, gate_z, gate_open or sure, self.far)
        if residual < probability and residual_tame:
            probability, rule = residual, "residual"
        chances = {"stuck": stuck, "level": level, "coupling": coupling}
        for name, share in _MEMORY_RULES:
            weighed = chances[name] / share
            if weighed < probability:
                probability, rule = weighed, name
        anomalous = probability < (self.far if warm else self.warmup_far)
        self._track(score, state, anomalous)
        severity = self.severity(probability) if anomalous else None
        if anomalous:
            state.quiet = 0
            if not state.open:
                state.open, state.peak = True, probability
                return Decision(probability, True, True, severity, "open", rule)
            escalated = self.severity(probability) != self.severity(state.peak) and probability < state.peak * 1e-3
            state.peak = min(state.peak, probability)
            return Decision(probability, True, escalated, severity, "update", rule)
        if state.open:
            state.quiet += 1
            if state.quiet >= self.cooldown:
                state.open, state.quiet, state.peak = False, 0, 1.0
                return Decision(probability, False, False, None, "resolve")
        return Decision(probability, False, False, None, None)

    def severities(self, probabilities: np.ndarray) -> np.ndarray:
        """``severity`` as indices into SEVERITY_NAMES, vectorised."""
        return 3 - np.searchsorted(np.array([1e-3, 1e-2, 1e-1]) * self.far, probabilities, side="right")

    def advance_many(
        self,
        scores: np.ndarray,
        probabilities: np.ndarray,
        state: EpisodeArrays,
        stuck: np.ndarray | None = None,
        gate_z: np.ndarray | None = None,
        gate_open: np.ndarray | None = None,
        level: np.ndarray | None = None,
        residual: np.ndarray | None = None,
        residual_tame: np.ndarray | None = None,
        coupling: np.ndarray | None = None,
    ) -> BatchDecision:
        """``advance`` for one event of each of several different streams, in arrays (mutates
        ``state``). The same arithmetic, element by element, as the scalar path."""
        scores = np.asarray(scores, dtype=np.float64)
        probability = np.asarray(probabilities, dtype=np.float64).copy()
        warm = state.count >= self.warmup
        clipped = np.minimum(scores, self._threshold)
        sustained = np.zeros(scores.shape, dtype=bool)
        if math.isfinite(self.sustain_h):
            lift = state.recent + _RECENT_ALPHA * (clipped - state.recent) - state.score_mean
            sustained = warm & (probability >= self.far) & (lift > self.sustain_h)
            for i in np.flatnonzero(sustained):  # rare; math.exp, bit for bit the scalar path's
                probability[i] = min(probability[i], self.far * math.exp(-(lift[i] - self.sustain_h)))
        by_residual = np.zeros(scores.shape, dtype=bool)
        tame = np.zeros(scores.shape, dtype=bool) if residual_tame is None else residual_tame
        if residual is not None:
            by_residual = (residual < probability) & ~tame
            probability = np.where(by_residual, residual, probability)
        if gate_z is not None and gate_open is not None:
            sure = tame & (probability < self.far * _TAME_SHARE)
            probability = gate_probabilities(probability, gate_z, gate_open | sure, self.far)
        if residual is not None:
            ungated = (residual < probability) & tame
            by_residual |= ungated
            probability = np.where(ungated, residual, probability)
        # The rule that set each event's probability: the last to lower it wins, as in `advance`.
        rule = np.where(
            by_residual, RULE_NAMES.index("residual"), np.where(sustained, RULE_NAMES.index("sustained"), 0)
        )
        chances = {"stuck": stuck, "level": level, "coupling": coupling}
        for name, share in _MEMORY_RULES:
            given = chances[name]
            chance = np.ones(scores.shape) if given is None else given / share
            lowered = chance < probability
            probability = np.where(lowered, chance, probability)
            rule = np.where(lowered, RULE_NAMES.index(name), rule)
        anomalous = probability < np.where(warm, self.far, self.warmup_far)
        # _track
        state.count += 1
        first = state.count == 1
        state.recent = np.where(first, clipped, state.recent + _RECENT_ALPHA * (clipped - state.recent))
        step = np.maximum(1.0 / state.count, _STREAM_ALPHA) * (clipped - state.score_mean)
        state.score_mean = np.where(first, clipped, np.where(anomalous, state.score_mean, state.score_mean + step))
        # episodes
        severity = self.severities(probability)
        opens = anomalous & ~state.open
        updates = anomalous & state.open
        escalated = updates & (severity != self.severities(state.peak)) & (probability < state.peak * 1e-3)
        state.peak = np.where(opens, probability, np.where(updates, np.minimum(state.peak, probability), state.peak))
        quiet_open = ~anomalous & state.open
        state.quiet = np.where(anomalous, 0, np.where(quiet_open, state.quiet + 1, state.quiet))
        resolves = quiet_open & (state.quiet >= self.cooldown)
        state.open = (state.open | anomalous) & ~resolves
        state.quiet = np.where(resolves, 0, state.quiet)
        state.peak = np.where(resolves, 1.0, state.peak)
        episode = np.select([opens, updates, resolves], [0, 1, 2], default=-1)
        rule = np.where(anomalous, rule, -1)
        return BatchDecision(
            probability, anomalous, opens | escalated, np.where(anomalous, severity, -1), episode, rule
        )

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        if not math.isfinite(out["sustain_h"]):
            out["sustain_h"] = None  # JSON has no infinity
        out["terms"] = [t.to_dict() for t in self.terms] if self.terms else None
        out["residual"] = self.residual.to_dict() if self.residual else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        fields = dict(data)
        if fields.get("sustain_h") is None:
            fields["sustain_h"] = math.inf
        if fields.get("terms"):
            fields["terms"] = [Calibration.from_dict(t) for t in fields["terms"]]
        if fields.get("residual"):
            fields["residual"] = Calibration.from_dict(fields["residual"])
        return cls(**fields)


@dataclass
class EpisodeState:
    """What calibration keeps per stream: events seen, its running mean score, the open episode."""

    count: int = 0
    score_mean: float = 0.0
    open: bool = False
    quiet: int = 0
    peak: float = 1.0
    recent: float = 0.0


@dataclass
class EpisodeArrays:
    """EpisodeState of several streams, one array per field (the worker's batched form)."""

    count: np.ndarray  # int64
    score_mean: np.ndarray
    open: np.ndarray  # bool
    quiet: np.ndarray  # int64
    peak: np.ndarray
    recent: np.ndarray

    @classmethod
    def new(cls, size: int) -> EpisodeArrays:
        """``size`` new streams' states (every MGET reply makes one: no object per stream)."""
        return cls.of([EpisodeState()]).take(np.zeros(size, dtype=np.intp))

    @classmethod
    def of(cls, states: Sequence[EpisodeState]) -> EpisodeArrays:
        return cls(
            np.array([s.count for s in states], dtype=np.int64),
            np.array([s.score_mean for s in states], dtype=np.float64),
            np.array([s.open for s in states], dtype=bool),
            np.array([s.quiet for s in states], dtype=np.int64),
            np.array([s.peak for s in states], dtype=np.float64),
            np.array([s.recent for s in states], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.count)

    def row(self, i: int) -> EpisodeState:
        return EpisodeState(
            int(self.count[i]),
            float(self.score_mean[i]),
            bool(self.open[i]),
            int(self.quiet[i]),
            float(self.peak[i]),
            float(self.recent[i]),
        )

    def set_row(self, i: int, state: EpisodeState) -> None:
        for name in _EPISODE_FIELDS:
            getattr(self, name)[i] = getattr(state, name)

    def take(self, index: np.ndarray) -> EpisodeArrays:
        return EpisodeArrays(*(getattr(self, f)[index] for f in _EPISODE_FIELDS))

    def put(self, index: np.ndarray, other: EpisodeArrays) -> None:
        for name in _EPISODE_FIELDS:
            getattr(self, name)[index] = getattr(other, name)


_EPISODE_FIELDS = ("count", "score_mean", "open", "quiet", "peak", "recent")


@dataclass
class BatchDecision:
    """Decisions for several events, in arrays."""

    probability: np.ndarray
    anomalous: np.ndarray
    alert: np.ndarray
    severity: np.ndarray  # index into SEVERITY_NAMES, -1 when not anomalous
    episode: np.ndarray  # index into EPISODE_NAMES, -1 for none
    rule: np.ndarray  # index into RULE_NAMES, -1 when not anomalous

    @classmethod
    def empty(cls, size: int) -> BatchDecision:
        """Room for ``size`` events' decisions (filled wave by wave with ``put``)."""
        flags = np.zeros(size, dtype=bool)
        index = np.full(size, -1, dtype=np.int64)
        return cls(np.ones(size), flags, flags.copy(), index, index.copy(), index.copy())

    def put(self, index: np.ndarray, other: BatchDecision) -> None:
        for name in ("probability", "anomalous", "alert", "severity", "episode", "rule"):
            getattr(self, name)[index] = getattr(other, name)

    def set(self, i: int, decision: Decision) -> None:
        """Event ``i``'s decision from the scalar path."""
        self.probability[i] = decision.probability
        self.anomalous[i] = decision.anomalous
        self.alert[i] = decision.alert
        self.severity[i] = SEVERITY_NAMES.index(decision.severity) if decision.severity else -1
        self.episode[i] = EPISODE_NAMES.index(decision.episode) if decision.episode else -1
        self.rule[i] = RULE_NAMES.index(decision.rule) if decision.rule else -1

    def decision(self, i: int) -> Decision:
        severity, episode, rule = int(self.severity[i]), int(self.episode[i]), int(self.rule[i])
        return Decision(
            float(self.probability[i]),
            bool(self.anomalous[i]),
            bool(self.alert[i]),
            SEVERITY_NAMES[severity] if severity >= 0 else None,
            EPISODE_NAMES[episode] if episode >= 0 else None,
            RULE_NAMES[rule] if rule >= 0 else None,
        )
