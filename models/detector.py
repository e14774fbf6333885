"""A detector = feature spec + GRU + calibration, with per-stream state.

``step`` scores one event for each of several streams (objects in, objects out);
``step_batch`` does the same in arrays and takes runs — several events of each stream, the
worker's batches — in one call; ``score_sequence`` scores one stream's events offline, and
``score_streams`` many streams' offline, as one batch. All give the same scores to float
tolerance and bit-identical states, however events are batched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from models.autoregressive import advance_autoregressive
from models.bounds import DEVIATION_MAX
from models.calibration import BatchDecision, Calibration, Decision, EpisodeArrays, EpisodeState, Rule, Severity
from models.coupling import advance_coupling
from models.features import FeatureSpec, latest_before
from models.hindsight import advance_hindsight
from models.likelihood import AnomalyLikelihood, advance_gate
from models.residual import TAME_VERDICT, advance_residual
from models.scorer import GRUScorer
from models.seasonal import advance_seasonal

if TYPE_CHECKING:
    from models.gru import GRUDetector

__all__ = ["BatchScores", "Detector", "Scored", "StateBatch", "StreamState"]

TOP_FEATURES = 3
# The likelihood gate (FeatureSpec.likelihood_gate): the statistics `evaluate nab` scores with.
GATE = AnomalyLikelihood()
# Waves with at most this many streams are decided stream by stream (the scalar path is cheaper).
_FEW_STREAMS = 8


def _waves(
    size: int, events: int, counts: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    """How ``step_batch`` walks ``size`` streams' runs of ``counts`` events (None: one each):
    the counts, where each stream's run starts, the streams longest run first, where their runs
    start in that order, and the waves (the w-th event of every stream that has one: with runs
    longest first, a prefix of them)."""
    if counts is None:  # the common case (``step``, a worker batch of distinct streams): one wave
        if events != size:
            raise ValueError(f"{events} events for {size} streams")
        one = np.arange(size)
        return np.ones(size, dtype=np.int64), one, one, one, [one] if size else []
    counts = np.asarray(counts, dtype=np.int64)
    if int(counts.sum()) != events or (size and counts.min() < 1):
        raise ValueError(f"counts {counts.tolist()[:10]} do not cover {events} events")
    starts = np.cumsum(counts) - counts
    order = np.argsort(-counts, kind="stable")
    first_of = starts[order]
    longest = int(counts.max()) if size else 0
    active = np.searchsorted(-counts[order], -np.arange(1, longest + 1), side="right")
    return counts, starts, order, first_of, [first_of[: active[w]] + w for w in range(longest)]


def _latest_before(ts: np.ndarray, starts: np.ndarray, counts: np.ndarray, last_ts: np.ndarray) -> np.ndarray:
    """``latest_before`` of each stream's run, for runs laid out stream after stream (``starts``,
    ``counts``) after the streams' ``last_ts``."""
    previous = np.empty(len(ts), dtype=np.int64)
    previous[1:] = ts[:-1]
    previous[starts] = last_ts
    # Events in time order (the common case, and every event of a run of one) are their own answer.
    behind = np.flatnonzero(ts < previous)
    if not len(behind):
        return previous
    for stream in np.unique(np.searchsorted(starts, behind, side="right") - 1):
        run = slice(int(starts[stream]), int(starts[stream] + counts[stream]))
        previous[run] = latest_before(ts[run], int(last_ts[stream]))
    return previous


@dataclass
class StreamState:
    """What the model keeps per stream between events."""

    h: np.ndarray  # float32 (hidden,)
    last_ts: int = -1  # epoch ms of the last applied event; -1 before the first
    episode: EpisodeState = field(default_factory=EpisodeState)
    norm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per-stream statistics (stream_norm)


@dataclass
class StateBatch:
    """The states of several streams of one detector, one array per field (the worker's form:
    no object per stream on the hot path)."""

    h: np.ndarray  # float32 (B, hidden)
    last_ts: np.ndarray  # int64 (B,)
    norm: np.ndarray  # float64 (B, norm size)
    episode: EpisodeArrays

    @classmethod
    def of(cls, states: Sequence[StreamState], hidden: int, norm_size: int) -> StateBatch:
        return cls(
            np.stack([s.h for s in states]) if states else np.zeros((0, hidden), dtype=np.float32),
            np.array([s.last_ts for s in states], dtype=np.int64),
            np.stack([s.norm for s in states]) if states else np.zeros((0, norm_size)),
            EpisodeArrays.of([s.episode for s in states]),
        )

    def __len__(self) -> int:
        return len(self.last_ts)

    def row(self, i: int) -> StreamState:
        return StreamState(h=self.h[i], last_ts=int(self.last_ts[i]), episode=self.episode.row(i), norm=self.norm[i])

    def take(self, index: np.ndarray) -> StateBatch:
        return StateBatch(self.h[index], self.last_ts[index], self.norm[index], self.episode.take(index))

    def put(self, index: np.ndarray, other: StateBatch) -> None:
        self.h[index] = other.h
        self.last_ts[index] = other.last_ts
        self.norm[index] = other.norm
        self.episode.put(index, other.episode)


@dataclass
class BatchScores:
    """What ``step_batch`` found, in arrays; ``scored(i)`` is one event's full result (with the
    explanation when anomalous) — built only for the events that need one, such as alerts."""

    score: np.ndarray
    surprise: np.ndarray
    terms: np.ndarray
    mean: np.ndarray
    z: np.ndarray
    y: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    values: Sequence[Mapping[str, float]]
    stuck: np.ndarray  # per event, the chance of the run of repeats it extends (1: none)
    level: np.ndarray  # per event, the tail of its stream's level-shift sums (1: none)
    # Per event, the likelihood gate's word (models.likelihood.advance_gate): z of its stream's
    # recent surprise (inf: no gate, or still learning) and whether its value opens the gate.
    gate_z: np.ndarray
    gate_open: np.ndarray
    # Per event and feature, the whitened residual against its stream's own spread (the residual
    # rule, models.residual: 0 while the stream is young; no columns when the rule is off), and
    # whether its stream was tame then (its residual rule ungated).
    stream_z: np.ndarray
    residual_tame: np.ndarray
    # The chance of its largest residual under a tame stream's light-tailed law (1: none).
    residual_law: np.ndarray
    # Per event and feature, its usual value: at that time of day (models.seasonal) or after the
    # stream's last values (models.autoregressive), the rarer rule's; NaN while neither has one;
    # no columns when both rules are off.
    usual: np.ndarray
    # Per event and feature, its residual against the value its stream's other features expect
    # and that value (the coupling rule, models.coupling: 0 and NaN while the stream is young; no
    # columns when the rule is off), and per event the chance of the largest residual (1: none).
    coupled: np.ndarray
    coupled_usual: np.ndarray
    coupling: np.ndarray
    # Per event and feature, where the hindsight rule's word on the stream's previous reading is
    # the rarest of the expectation rules': that reading and what it was judged against
    # (models.hindsight); NaN elsewhere; no columns when the rule is off.
    previous: np.ndarray
    previous_expected: np.ndarray

    @classmethod
    def of(
        cls,
        terms: np.ndarray,
        mean: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        values: Sequence[Mapping[str, float]],
        stuck: np.ndarray | None = None,
        level: np.ndarray | None = None,
    ) -> BatchScores:
        """From the model's per-target terms: the score is the sum of the event's own (the time
        gap left out: it is judged by its own term's calibration); the surprise the length of the
        whitened residual without the time gap."""
        # A missed reading makes a gap term of 100+ nats (a Gaussian head cannot price a 4x gap
        # that comes once in 200 readings); in the sum, those stretched the score's calibrated
        # tail (mean excess over the 99th percentile 34 nats, not 1.4) and hid values 5 sigma out.
        score = terms[:, :-1].astype(np.float64).sum(axis=1)
        surprise = np.sqrt(np.square(z[:, :-1].astype(np.float64)).sum(axis=1))
        stuck = np.ones(len(score)) if stuck is None else stuck
        level = np.ones(len(score)) if level is None else level
        gate_z, gate_open = np.full(len(score), np.inf), np.zeros(len(score), dtype=bool)
        stream_z, tame = np.zeros((len(score), 0)), np.zeros(len(score), dtype=bool)
        return cls(
            score,
            surprise,
            terms,
            mean,
            z,
            y,
            center,
            scale,
            values,
            stuck,
            level,
            gate_z,
            gate_open,
            stream_z,
            tame,
            np.ones(len(score)),
            np.zeros((len(score), 0)),
            np.zeros((len(score), 0)),
            np.zeros((len(score), 0)),
            np.ones(len(score)),
            np.zeros((len(score), 0)),
            np.zeros((len(score), 0)),
        )

    @property
    def residual(self) -> np.ndarray:
        """Per event, its largest |residual| against its stream's own spread (0: none)."""
        if not self.stream_z.shape[1]:
            return np.zeros(len(self.score))
        return np.asarray(np.abs(self.stream_z).max(axis=1))

    def scored(self, detector: Detector, i: int, decision: Decision) -> Scored:
        """Event ``i``'s full result, given its calibrated decision."""
        explanation = None
        if decision.anomalous:
            explanation = detector.explain(
                self.terms[i],
                self.mean[i],
                self.z[i],
                self.y[i],
                self.values[i],
                self.center[i],
                self.scale[i],
                self.stream_z[i],
                self.usual[i],
                self.coupled[i],
                self.coupled_usual[i],
                self.previous[i],
                self.previous_expected[i],
                lead_coupled=decision.rule == "coupling",
            )
        return Scored(
            float(self.score[i]),
            decision.probability,
            decision.anomalous,
            decision.alert,
            decision.severity,
            decision.episode,
            explanation,
            decision.rule,
            float(self.surprise[i]),
        )


@dataclass
class Scored:
    score: float
    probability: float
    anomalous: bool
    alert: bool
    severity: Severity | None
    episode: str | None
    explanation: list[dict[str, Any]] | None = None
    rule: Rule | None = None  # why it is anomalous (calibration.RULE_NAMES)
    # Length of the whitened residual of the features (the time gap left out): how far this event
    # is from what the model expected, on a common scale; the input of models.likelihood.
    surprise: float = 0.0


class Detector:
    """Scores events of one kind. ``name@version`` identifies it in alerts and state keys."""

    def __init__(
        self,
        spec: FeatureSpec,
        model: GRUDetector | None,
        calibration: Calibration,
        name: str,
        version: str,
        scorer: GRUScorer | None = None,
    ) -> None:
        """``model``: the torch module (training, saving); None for a scoring-only detector, which
        then needs ``scorer`` (a worker never imports torch)."""
        if scorer is None:
            if model is None:
                raise ValueError("a detector needs a model or a scorer")
            scorer = model.scorer()  # the weights as they are now: scoring never trains
        self.spec = spec
        self.model = model.eval() if model is not None else None
        self.scorer = scorer
        self.calibration = calibration
        self.name = name
        self.version = version

    @property
    def hidden(self) -> int:
        return self.scorer.hidden

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    def new_state(self) -> StreamState:
        return StreamState(h=np.zeros(self.hidden, dtype=np.float32), norm=self.spec.new_norm())

    def _targets(self, ts: np.ndarray, values: Sequence[Mapping[str, float]], last_ts: np.ndarray) -> np.ndarray:
        """Targets of events at ``ts`` whose streams' latest times before them are ``last_ts``."""
        return self.spec.targets(values, self.spec.gaps(ts, last_ts))

    def step(
        self, states: Sequence[StreamState], events: Sequence[tuple[int, Mapping[str, float]]]
    ) -> tuple[list[Scored], list[StreamState]]:
        """One event for each of ``len(states)`` different streams; returns results and new states.

        Objects in, objects out: ``step_batch`` (the worker's form, in arrays) on a batch of these
        states, one event each; ``states`` are left as they were."""
        if len(states) != len(events):
            raise ValueError(f"{len(states)} states for {len(events)} events")
        if not events:
            return [], []
        batch = StateBatch.of(states, self.hidden, self.spec.norm_size)
        ts = np.array([t for t, _ in events], dtype=np.int64)
        out, decision, new = self.step_batch(batch, ts, [v for _, v in events])
        results = [out.scored(self, i, decision.decision(i)) for i in range(len(events))]
        return results, [new.row(i) for i in range(len(events))]

    def step_batch(
        self,
        states: StateBatch,
        ts: np.ndarray,
        values: Sequence[Mapping[str, float]],
        counts: np.ndarray | None = None,
    ) -> tuple[BatchScores, BatchDecision, StateBatch]:
        """``step`` in arrays, for runs of events: stream ``s`` of ``states`` has ``counts[s]`` (≥ 1;
        default 1) events, in order; the events (``ts``, ``values``) are stream after stream.
        Returns every event's scores and decision, in that order, and the streams' new states.

        Features, the input projection, the prediction head and the per-feature tail
        probabilities run once over all events; only what carries from one event of a stream to
        the next (the recurrence, per-stream statistics, episodes) steps wave by wave, the w-th
        event of every stream that has one. ``states`` is left as it was."""
        size = len(states)
        counts, starts, order, first_of, waves = _waves(size, len(ts), counts)
        batch = states.take(order)

        previous = _latest_before(ts, starts, counts, states.last_ts)
        targets = self._targets(ts, values, previous)
        spec = self.spec
        cal = self.calibration
        stuck, level = np.ones(len(ts)), np.ones(len(ts))
        # Per event, the level rule's autocorrelation after it (the seasonal rule's word on where
        # it judges), kept as the normalisation passes wave by wave.
        level_ac = np.zeros((len(ts), len(spec.names))) if spec.expectation_rules else None
        # Events each stream had seen (stream_norm's count): the residual rule's and the gate's,
        # wave by wave.
        seen = batch.norm[:, 0].copy() if spec.stream_norm else np.zeros(len(batch))
        if spec.sequential_norm:
            n_targets = spec.n_targets
            y, center, scale = (np.empty((len(ts), n_targets)) for _ in range(3))
            for index in waves:
                prefix = slice(0, len(index))
                y[index], center[index], scale[index], batch.norm[prefix] = spec.normalise_batch(
                    targets[index], batch.norm[prefix]
                )
                stuck[index], level[index] = self._rule_chances(batch.norm[prefix])
                if level_ac is not None:
                    level_ac[index] = spec.level_autocorrelation(batch.norm[prefix])
        else:
            y, center, scale, _ = spec.normalise_batch(targets, batch.norm[:0])
        terms, mean, z, batch.h = self.scorer.runs(batch.h, spec.inputs(y, ts), y, waves)
        out = BatchScores.of(terms, mean, z, y, center, scale, values, stuck, level)
        if spec.residual_rule:
            out.stream_z = np.zeros((len(ts), len(spec.names)))
        if level_ac is not None:
            out.usual = np.full((len(ts), len(spec.names)), np.nan)
            out.previous, out.previous_expected = (np.full((len(ts), len(spec.names)), np.nan) for _ in range(2))
        if spec.coupling_rule:
            out.coupled = np.zeros((len(ts), len(spec.names)))
            out.coupled_usual = np.full((len(ts), len(spec.names)), np.nan)
        if spec.residual_rule or spec.likelihood_gate or level_ac is not None or spec.coupling_rule:
            # What they say of an event depends on the stream's earlier events: wave by wave.
            n = len(spec.names)
            for wave, index in enumerate(waves):
                memory, count = batch.norm[: len(index)], seen[: len(index)] + wave
                if spec.residual_rule:
                    out.stream_z[index], out.residual_tame[index], out.residual_law[index] = self._advance_residual(
                        memory, z[index], scale[index], count
                    )
                if spec.likelihood_gate:
                    out.gate_z[index], out.gate_open[index] = self._advance_gate(
                        memory, out.surprise[index], targets[index, :n], count
                    )
                if level_ac is not None:
                    chance, out.usual[index], out.previous[index], out.previous_expected[index] = (
                        self._advance_expectations(
                            memory,
                            targets[index, :n],
                            ts[index],
                            count,
                            level_ac[index],
                            out.residual_tame[index],
                            center[index, :n],
                            scale[index, :n],
                        )
                    )
                    out.level[index] = np.minimum(out.level[index], chance)
                if spec.coupling_rule:
                    out.coupled[index], out.coupling[index], out.coupled_usual[index] = advance_coupling(
                        memory[:, spec.coupling_slice], targets[index, :n]
                    )

        chances = self._chances(out)
        by_term, by_residual = chances
        decision = BatchDecision.empty(len(ts))
        for index in waves:
            if len(index) <= _FEW_STREAMS:
                # A few long runs left (a busy stream): stream by stream on the scalar path, ~6 µs an
                # event, rather than ~55 µs of array calls per wave.
                ends = first_of + counts[order]
                for row in range(len(index)):
                    episode_row = batch.episode.row(row)
                    run = range(int(index[row]), int(ends[row]))
                    for j, made in zip(run, self._decide_run(out, chances, run, episode_row), strict=True):
                        decision.set(j, made)
                    batch.episode.set_row(row, episode_row)
                break
            rows = np.arange(len(index))
            episode = batch.episode.take(rows)
            probability = cal.probabilities(out.score[index] - cal.shifts(episode))
            if by_term is not None:
                probability = np.minimum(probability, by_term[index])
            decision.put(
                index,
                cal.advance_many(
                    out.score[index],
                    probability,
                    episode,
                    out.stuck[index],
                    out.gate_z[index],
                    out.gate_open[index],
                    out.level[index],
                    None if by_residual is None else by_residual[index],
                    out.residual_tame[index],
                    out.coupling[index],
                ),
            )
            batch.episode.put(rows, episode)
        batch.last_ts = np.maximum(previous[starts + counts - 1], ts[starts + counts - 1])[order]
        if len(waves) <= 1:  # one event per stream: the batch is in the given order already
            return out, decision, batch
        back = np.empty_like(order)
        back[order] = np.arange(size)
        return out, decision, batch.take(back)

    def _rule_chances(self, memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The stuck and level rules' chances of events, from their streams' memories after them
        (rows of ``memory``); ones for a rule the spec does not have."""
        return self.spec.stuck_probabilities(memory, self.calibration.warmup), self.spec.level_probabilities(memory)

    def score_sequence(
        self, events: Sequence[tuple[int, Mapping[str, float]]], state: StreamState | None = None
    ) -> tuple[list[Scored], StreamState]:
        """All events of one stream in order, in one forward pass."""
        state = state or self.new_state()
        if not events:
            return [], state
        out, h_last, norm = self._sequence_forward(events, state)
        if self.spec.likelihood_gate:
            x = self.spec.transform_values([v for _, v in events])
            row = norm[None, :]
            for i in range(len(events)):
                at = slice(i, i + 1)
                out.gate_z[at], out.gate_open[at] = self._advance_gate(row, out.surprise[at], x[at], state.norm[:1] + i)
        results = self._decide_sequence(out, state.episode)
        latest = max(state.last_ts, max(t for t, _ in events))
        return results, StreamState(h=h_last, last_ts=int(latest), episode=state.episode, norm=norm)

    def score_streams(
        self,
        streams: Sequence[Sequence[tuple[int, Mapping[str, float]]]],
        chunk: int = 256,
        on_progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> list[list[Scored]]:
        """``score_sequence`` of several streams from fresh states, as one batch: ``chunk`` events
        of every stream that has them a ``step_batch`` call, so each step of the recurrence and
        the per-stream rules serves every stream at once (NAB's 58 files: ~9x faster than one
        after another; 300 synthetic streams of 400 events: ~10x). The same results (scores to
        float tolerance, decisions exactly); ``on_progress(events scored, events in all)``
        after each call (``chunk`` is its grain: the calls cost no more at 256 than at 2,048)."""
        lengths = np.array([len(events) for events in streams], dtype=np.int64)
        total = int(lengths.sum())
        states = StateBatch.of([self.new_state() for _ in streams], self.hidden, self.spec.norm_size)
        results: list[list[Scored]] = [[] for _ in streams]
        done = np.zeros(len(streams), dtype=np.int64)
        while np.any(done < lengths):
            live = np.flatnonzero(done < lengths)
            counts = np.minimum(lengths[live] - done[live], chunk)
            events = [
                e
                for i, n in zip(live.tolist(), counts.tolist(), strict=True)
                for e in streams[i][done[i] : done[i] + n]
            ]
            ts = np.array([t for t, _ in events], dtype=np.int64)
            out, decision, new = self.step_batch(states.take(live), ts, [v for _, v in events], counts)
            states.put(live, new)
            at = 0
            for i, n in zip(live.tolist(), counts.tolist(), strict=True):
                results[i] += [out.scored(self, j, decision.decision(j)) for j in range(at, at + n)]
                at += n
                done[i] += n
            on_progress(int(done.sum()), total)
        return results

    def _advance_residual(
        self, memory: np.ndarray, z: np.ndarray, scale: np.ndarray, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Advance the residual rule of streams whose memories are the rows of ``memory`` (updated in
        place) by one event each, from the model's whitened residuals ``z`` and the scales their
        values were normalised by; ``seen``: the events each stream had seen before it. Returns r,
        whether each stream is tame and the chance of r under a tame stream's law
        (models.residual.advance_residual).

        The rule takes each residual in its stream's own units (z times the scale): a stream's
        running scale swells during an incident (a drift's ramp, a shift), and in z the reading
        that ends it would shrink with it."""
        names = len(self.spec.names)
        stream_scale = scale[:, :names]
        # Bounded as the hindsight rule's deviations are: a stream whose first reading is 1e308 has
        # a scale of ~1e305 until that reading is dropped, and squares past that made the rule's
        # memory inf, then NaN (inf - inf), for good.
        residual = np.clip(z[:, :names].astype(np.float64) * stream_scale, -DEVIATION_MAX, DEVIATION_MAX)
        return advance_residual(
            memory[:, self.spec.residual_slice], residual, np.asarray(seen, dtype=np.float64), stream_scale
        )

    def _advance_expectations(
        self,
        memory: np.ndarray,
        values: np.ndarray,
        ts: np.ndarray,
        seen: np.ndarray,
        level_ac: np.ndarray,
        tame: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Advance the seasonal, autoregressive and hindsight rules (those on) of streams whose
        memories are the rows of ``memory`` (updated in place) by one event each: their transformed
        values, times, the events each had seen before, the level rule's autocorrelation after it,
        whether the stream is tame (the residual rule's word) and the running centre and scale the
        values were normalised by (which find out a wild spread of the hindsight rule's). Returns
        the events' chances, the rarest rule's, heeded on tame streams only (1 elsewhere: real
        series' days differ, and their values' steps are heavy-tailed) but for the autoregressive
        rule's jumps and the hindsight rule, heeded on streams too young for that word as well;
        their values' usual levels: the
        expectation of the rarest rule (models.seasonal.advance_seasonal, models.autoregressive);
        and, where the hindsight rule is the rarest, the previous reading and what it was judged
        against (models.hindsight; NaN elsewhere)."""
        seen = np.asarray(seen, dtype=np.float64)
        chance, usual = np.ones(len(values)), np.full(values.shape, np.nan)
        previous, previous_expected = np.full(values.shape, np.nan), np.full(values.shape, np.nan)
        if self.spec.seasonal_rule:
            chance, usual = advance_seasonal(memory[:, self.spec.seasonal_slice], values, ts, seen, level_ac)
        ungated = tame | (seen < TAME_VERDICT)  # the rules a young stream heeds as well as a tame one
        if self.spec.autoregressive_rule:
            lagged, jump, predicted = advance_autoregressive(
                memory[:, self.spec.autoregressive_slice], values, seen, level_ac
            )
            rarer = lagged < chance
            usual = np.where(rarer[:, None] | np.isnan(usual), predicted, usual)
            chance = np.where(tame, np.minimum(chance, lagged), 1.0)
            jump = np.where(ungated, jump, 1.0)
            usual = np.where((jump < chance)[:, None], predicted, usual)
            chance = np.minimum(chance, jump)
        else:
            chance = np.where(tame, chance, 1.0)
        if self.spec.hindsight_rule:
            hindsight, reading, judged_against = advance_hindsight(
                memory[:, self.spec.hindsight_slice], values, seen, center, scale
            )
            hindsight = np.where(ungated, hindsight, 1.0)
            rarest = (hindsight < chance)[:, None]
            previous = np.where(rarest, reading, np.nan)
            previous_expected = np.where(rarest, judged_against, np.nan)
            chance = np.minimum(chance, hindsight)
        return chance, usual, previous, previous_expected

    def _chances(self, out: BatchScores) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Per event, the rarest feature term's and the residual rule's chances (None: rule off);
        neither depends on the episode, so a run computes them once."""
        cal = self.calibration
        return cal.term_probabilities(out.terms), cal.residual_probabilities(out.residual, out.residual_law)

    def _advance_gate(
        self, memory: np.ndarray, surprise: np.ndarray, values: np.ndarray, seen: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Advance the likelihood gate of streams whose memories are the rows of ``memory`` (updated
        in place) by one event each; ``seen``: the events each stream had seen before it. Returns
        its z and open flags (models.likelihood.advance_gate)."""
        gate = memory[:, self.spec.gate_slice]  # a view: in place
        return advance_gate(GATE, gate, surprise, values, np.asarray(seen, dtype=np.float64))

    def sequence_scores(self, events: Sequence[tuple[int, Mapping[str, float]]]) -> BatchScores:
        """One stream's scores and per-feature terms from a fresh state, before calibration (what
        calibrating takes; ``events`` must not be empty)."""
        return self._sequence_forward(events, self.new_state())[0]

    def _sequence_forward(
        self, events: Sequence[tuple[int, Mapping[str, float]]], state: StreamState
    ) -> tuple[BatchScores, np.ndarray, np.ndarray]:
        ts = np.array([t for t, _ in events], dtype=np.int64)
        targets = self._targets(ts, [v for _, v in events], latest_before(ts, state.last_ts))
        y, center, scale, memory = self.spec.normalise_sequence(targets, state.norm)
        x = self.spec.inputs(y, ts)
        terms, mean, z, h_last = self.scorer.sequence(x, y, state.h)
        stuck, level = self._rule_chances(memory)
        out = BatchScores.of(terms, mean, z, y, center, scale, [v for _, v in events], stuck, level)
        last = memory[-1].copy()
        row = last[None, :]
        if self.spec.residual_rule:  # what it says of an event depends on the stream's earlier events
            out.stream_z = np.zeros((len(events), len(self.spec.names)))
            for i in range(len(events)):
                out.stream_z[i : i + 1], out.residual_tame[i : i + 1], out.residual_law[i : i + 1] = (
                    self._advance_residual(row, z[i : i + 1], scale[i : i + 1], state.norm[:1] + i)
                )
        if self.spec.expectation_rules:  # what they say of an event depends on the stream's earlier events
            values = targets[:, : len(self.spec.names)]
            level_ac = self.spec.level_autocorrelation(memory)
            out.usual = np.full(values.shape, np.nan)
            out.previous, out.previous_expected = np.full(values.shape, np.nan), np.full(values.shape, np.nan)
            for i in range(len(events)):
                at = slice(i, i + 1)
                chance, out.usual[at], out.previous[at], out.previous_expected[at] = self._advance_expectations(
                    row,
                    values[at],
                    ts[at],
                    state.norm[:1] + i,
                    level_ac[at],
                    out.residual_tame[at],
                    center[at, : len(self.spec.names)],
                    scale[at, : len(self.spec.names)],
                )
                out.level[at] = np.minimum(out.level[at], chance)
        if self.spec.coupling_rule:  # what it says of an event depends on the stream's earlier events
            values = targets[:, : len(self.spec.names)]
            out.coupled, out.coupled_usual = np.zeros(values.shape), np.full(values.shape, np.nan)
            for i in range(len(events)):
                at = slice(i, i + 1)
                out.coupled[at], out.coupling[at], out.coupled_usual[at] = advance_coupling(
                    row[:, self.spec.coupling_slice], values[at]
                )
        return out, h_last, last

    def _decide_sequence(self, out: BatchScores, episode: EpisodeState) -> list[Scored]:
        """One stream's events in order: each shift depends on the decisions before it."""
        decisions = self._decide_run(out, self._chances(out), range(len(out.score)), episode)
        return [out.scored(self, i, d) for i, d in enumerate(decisions)]

    def _decide_run(
        self,
        out: BatchScores,
        chances: tuple[np.ndarray | None, np.ndarray | None],
        events: range,
        episode: EpisodeState,
    ) -> list[Decision]:
        """Decisions for events ``events`` (indices into ``out``) of one stream, in order, by the
        scalar path (mutates ``episode``); ``chances`` as ``_chances`` gives them."""
        cal = self.calibration
        by_term, by_residual = chances
        decisions = []
        for i in events:
            score = float(out.score[i])
            probability = cal.probability(score - cal.shift(episode))
            if by_term is not None:
                probability = min(probability, float(by_term[i]))
            decisions.append(
                cal.advance(
                    score,
                    probability,
                    episode,
                    float(out.stuck[i]),
                    float(out.gate_z[i]),
                    bool(out.gate_open[i]),
                    float(out.level[i]),
                    1.0 if by_residual is None else float(by_residual[i]),
                    bool(out.residual_tame[i]),
                    float(out.coupling[i]),
                )
            )
        return decisions

    def explain(
        self,
        terms: np.ndarray,
        mean: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        values: Mapping[str, float],
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
        stream_z: np.ndarray | None = None,
        usual: np.ndarray | None = None,
        coupled: np.ndarray | None = None,
        coupled_usual: np.ndarray | None = None,
        previous: np.ndarray | None = None,
        previous_expected: np.ndarray | None = None,
        lead_coupled: bool = False,
    ) -> list[dict[str, Any]]:
        """The targets that cost the most likelihood: actual and expected (raw units) and z (the
        residual whitened by the predicted covariance: given the features before it); with the
        residual rule, a feature's ``z_stream`` too (that residual against its stream's own); with
        the seasonal rule, its ``usual`` value at that time of day, once its stream has one; with
        the coupling rule, its ``z_coupling`` (its residual against what the stream's other
        features expect) and ``expected_by_others`` (that value), and with ``lead_coupled`` (the
        rule flagged it) the features that broke away most come first; with the hindsight rule,
        where it flagged the previous reading, that reading as ``previous`` and what it was judged
        against as ``previous_expected``."""
        expected = self.spec.denormalise(mean.astype(np.float64), center, scale)
        actual = self.spec.denormalise(y, center, scale)
        coupled = np.zeros(0) if coupled is None else coupled
        by_others = self.spec.untransform(coupled_usual) if coupled_usual is not None and len(coupled) else np.zeros(0)
        if lead_coupled and len(coupled):
            order = np.argsort(-np.abs(coupled))[:TOP_FEATURES]
        else:
            order = np.argsort(-terms)[:TOP_FEATURES]
        names = self.spec.target_names
        stream_z = np.zeros(0) if stream_z is None else stream_z
        usual = self.spec.untransform(usual) if usual is not None and len(usual) else np.zeros(0)
        previous = self.spec.untransform(previous) if previous is not None and len(previous) else np.zeros(0)
        previous_expected = (
            self.spec.untransform(previous_expected)
            if previous_expected is not None and len(previous_expected)
            else np.zeros(0)
        )
        out: list[dict[str, Any]] = []
        for j in order:
            item = {
                "feature": names[j],
                "actual": float(values[names[j]]) if names[j] in values else round(float(actual[j]), 3),
                "expected": round(float(expected[j]), 4),
                "z": round(float(z[j]), 2),
            }
            if j < len(stream_z) and stream_z[j]:
                item["z_stream"] = round(float(stream_z[j]), 2)
            if j < len(usual) and math.isfinite(usual[j]):
                item["usual"] = round(float(usual[j]), 4)
            if j < len(previous) and math.isfinite(previous[j]):
                item["previous"] = round(float(previous[j]), 4)
                item["previous_expected"] = round(float(previous_expected[j]), 4)
            if j < len(coupled) and coupled[j]:
                item["z_coupling"] = round(float(coupled[j]), 2)
                item["expected_by_others"] = round(float(by_others[j]), 4)
            out.append(item)
        return out
