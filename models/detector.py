"""A detector = feature spec + GRU + calibration, with per-stream state.

``step`` scores one event for each of several streams (the worker's hot path, one batched
model call); ``score_sequence`` scores one stream's events offline in one forward pass. Both give
the same scores to float tolerance, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from models.calibration import Calibration, EpisodeState, Severity
from models.features import FeatureSpec
from models.gru import GRUDetector

__all__ = ["Detector", "Scored", "StreamState"]

TOP_FEATURES = 3


@dataclass
class StreamState:
    """What the model keeps per stream between events."""

    h: np.ndarray  # float32 (hidden,)
    last_ts: int = -1  # epoch ms of the last applied event; -1 before the first
    episode: EpisodeState = field(default_factory=EpisodeState)
    norm: np.ndarray = field(default_factory=lambda: np.zeros(0))  # per-stream statistics (stream_norm)


@dataclass
class Scored:
    score: float
    probability: float
    anomalous: bool
    alert: bool
    severity: Severity | None
    episode: str | None
    explanation: list[dict[str, Any]] | None = None
    rule: str | None = None  # "score" (this event) or "sustained" (a run of them), when anomalous
    # Length of the whitened residual of the features (the time gap left out): how far this event
    # is from what the model expected, on a common scale; the input of models.likelihood.
    surprise: float = 0.0


class Detector:
    """Scores events of one kind. ``name@version`` identifies it in alerts and state keys."""

    def __init__(
        self,
        spec: FeatureSpec,
        model: GRUDetector,
        calibration: Calibration,
        name: str,
        version: str,
    ) -> None:
        self.spec = spec
        self.model = model.eval()
        self.calibration = calibration
        self.name = name
        self.version = version

    @property
    def ident(self) -> str:
        return f"{self.name}@{self.version}"

    def new_state(self) -> StreamState:
        return StreamState(h=np.zeros(self.model.hidden, dtype=np.float32), norm=self.spec.new_norm())

    def _targets(self, ts: np.ndarray, values: Sequence[Mapping[str, float]], last_ts: np.ndarray) -> np.ndarray:
        gaps = np.where(last_ts >= 0, (ts - last_ts) / 1000.0, 0.0)
        return self.spec.targets(values, gaps)

    def step(
        self, states: Sequence[StreamState], events: Sequence[tuple[int, Mapping[str, float]]]
    ) -> tuple[list[Scored], list[StreamState]]:
        """One event for each of ``len(states)`` different streams; returns results and new states."""
        if len(states) != len(events):
            raise ValueError(f"{len(states)} states for {len(events)} events")
        if not events:
            return [], []
        ts = np.array([t for t, _ in events], dtype=np.int64)
        last = np.array([s.last_ts for s in states], dtype=np.int64)
        targets = self._targets(ts, [v for _, v in events], last)
        norms = np.stack([s.norm for s in states]) if self.spec.stream_norm else np.zeros((len(states), 0))
        y, center, scale, new_norms = self.spec.normalise_batch(targets, norms)
        x = self.spec.inputs(y, ts)
        h = torch.from_numpy(np.stack([s.h for s in states]))
        with torch.inference_mode():
            terms, mean, z, h_new = self.model.step(h, torch.from_numpy(x).float(), torch.from_numpy(y).float())
        results = self._decide(
            terms.numpy(),
            mean.numpy(),
            z.numpy(),
            y,
            center,
            scale,
            [s.episode for s in states],
            [v for _, v in events],
        )
        h_out = h_new.numpy()
        new_states = [
            StreamState(h=h_out[i], last_ts=int(ts[i]), episode=states[i].episode, norm=new_norms[i])
            for i in range(len(states))
        ]
        return results, new_states

    def score_sequence(
        self, events: Sequence[tuple[int, Mapping[str, float]]], state: StreamState | None = None
    ) -> tuple[list[Scored], StreamState]:
        """All events of one stream in order, in one forward pass."""
        state = state or self.new_state()
        if not events:
            return [], state
        ts = np.array([t for t, _ in events], dtype=np.int64)
        last = np.concatenate([[state.last_ts], ts[:-1]])
        targets = self._targets(ts, [v for _, v in events], last)
        y, center, scale, norm = self.spec.normalise_sequence(targets, state.norm)
        x = self.spec.inputs(y, ts)
        with torch.inference_mode():
            terms, mean, z, h_last = self.model.sequence(
                torch.from_numpy(x).float().unsqueeze(0),
                torch.from_numpy(y).float().unsqueeze(0),
                torch.from_numpy(state.h).unsqueeze(0),
            )
        episode = state.episode
        results = self._decide(
            terms[0].numpy(),
            mean[0].numpy(),
            z[0].numpy(),
            y,
            center,
            scale,
            [episode] * len(events),
            [v for _, v in events],
        )
        return results, StreamState(h=h_last[0].numpy().copy(), last_ts=int(ts[-1]), episode=episode, norm=norm)

    def _decide(
        self,
        terms: np.ndarray,
        mean: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        center: np.ndarray,
        scale: np.ndarray,
        episodes: Sequence[EpisodeState],
        values: Sequence[Mapping[str, float]],
    ) -> list[Scored]:
        scores = terms.astype(np.float64).sum(axis=1)
        surprises = np.sqrt(np.square(z[:, :-1].astype(np.float64)).sum(axis=1))
        cal = self.calibration
        sequential = len(episodes) > 1 and episodes[0] is episodes[-1]
        if not sequential:  # different streams: every shift is known now, calibrate in one call
            probabilities = cal.probabilities(scores - np.array([cal.shift(e) for e in episodes]))
        out = []
        for i, score in enumerate(scores):
            # One stream: each shift depends on the decisions before it.
            probability = cal.probability(score - cal.shift(episodes[i])) if sequential else probabilities[i]
            decision = cal.advance(float(score), float(probability), episodes[i])
            explanation = None
            if decision.anomalous:
                explanation = self.explain(terms[i], mean[i], z[i], y[i], values[i], center[i], scale[i])
            out.append(
                Scored(
                    float(score),
                    decision.probability,
                    decision.anomalous,
                    decision.alert,
                    decision.severity,
                    decision.episode,
                    explanation,
                    decision.rule if decision.anomalous else None,
                    float(surprises[i]),
                )
            )
        return out

    def explain(
        self,
        terms: np.ndarray,
        mean: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        values: Mapping[str, float],
        center: np.ndarray | None = None,
        scale: np.ndarray | None = None,
    ) -> list[dict[str, Any]]:
        """The targets that cost the most likelihood: actual and expected (raw units) and z (the
        residual whitened by the predicted covariance: given the features before it)."""
        expected = self.spec.denormalise(mean.astype(np.float64), center, scale)
        actual = self.spec.denormalise(y, center, scale)
        order = np.argsort(-terms)[:TOP_FEATURES]
        names = self.spec.target_names
        return [
            {
                "feature": names[j],
                "actual": float(values[names[j]]) if names[j] in values else round(float(actual[j]), 3),
                "expected": round(float(expected[j]), 4),
                "z": round(float(z[j]), 2),
            }
            for j in order
        ]
