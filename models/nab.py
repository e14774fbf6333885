"""The Numenta Anomaly Benchmark's scoring, written from its published description and code.

Per data file: anomaly windows from the labels; every record after the probationary period
(15 % of the file, at most 750 records) gets a sweep score: inside a window, a scaled sigmoid of
its position (earlier is better, normalised so the earliest record is worth ``tp`` weight);
outside, a false-positive cost that fades with the distance past the previous window. For a
threshold, a window counts its best detected record (or −``fn`` weight when none is detected)
and every detected record outside windows adds its cost. The corpus score is the best total
over every threshold (the exhaustive sweep); it is normalised to 100 × (raw − null) /
(perfect − null), where null is the constant-score detector and perfect detects every window
at its start. At the chosen threshold, each profile also counts what was detected: windows
caught and missed, and detections outside every window (false positives), in all and per file.

>>> round(scaled_sigmoid(-1.0), 5), round(scaled_sigmoid(0.0), 5), scaled_sigmoid(3.0)
(0.98661, 0.0, -1.0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = [
    "PROBATION_PERCENT",
    "CorpusScorer",
    "CostMatrix",
    "Detections",
    "SweepRow",
    "best_threshold",
    "corpus_scores",
    "count_detections",
    "load_profiles",
    "load_windows",
    "parse_nab_time",
    "probation_length",
    "scaled_sigmoid",
    "sweep_file",
]

PROBATION_PERCENT = 0.15
_PROBATION_CAP = 5000  # the probationary period is at most 15 % of 5,000 records
_NULL_SCORE = 0.5


@dataclass(frozen=True)
class CostMatrix:
    tp: float
    fp: float
    fn: float

    @classmethod
    def from_profile(cls, profile: Mapping[str, Mapping[str, float]]) -> CostMatrix:
        cost = profile["CostMatrix"]
        return cls(tp=cost["tpWeight"], fp=cost["fpWeight"], fn=cost["fnWeight"])


@dataclass(frozen=True, slots=True)
class SweepRow:
    anomaly_score: float
    sweep_score: float
    window: str | None  # None outside windows; "probationary" records are never scored


@dataclass(frozen=True)
class Detections:
    """What a threshold detects in scored records: windows with a detection, false positives,
    and what the records add to the raw score (``score``): each window its best detected
    record's weight, or −``fn`` weight when none is detected, plus the cost of every detection
    outside windows — a file's "Score" in NAB's per-file results."""

    windows: int = 0
    detected: int = 0
    false_positives: int = 0
    score: float = 0.0

    @property
    def missed(self) -> int:
        return self.windows - self.detected

    def __add__(self, other: Detections) -> Detections:
        return Detections(
            self.windows + other.windows,
            self.detected + other.detected,
            self.false_positives + other.false_positives,
            self.score + other.score,
        )


def count_detections(rows: Sequence[SweepRow], threshold: float, cost: CostMatrix) -> Detections:
    """Detection is score ≥ threshold (as in ``best_threshold``); probationary records never count."""
    windows: dict[str, float] = {}  # each window's best detected weight so far
    detected: set[str] = set()
    false_positives = 0
    outside = 0.0
    for r in rows:
        if r.window == "probationary":
            continue
        hit = r.anomaly_score >= threshold
        if r.window is None:
            false_positives += hit
            outside += r.sweep_score if hit else 0.0
            continue
        best = windows.setdefault(r.window, -cost.fn)
        if hit:
            detected.add(r.window)
            windows[r.window] = max(best, r.sweep_score)
    return Detections(len(windows), len(detected), false_positives, sum(windows.values()) + outside)


def scaled_sigmoid(position: float) -> float:
    """+0.987 at a window's left edge, 0 at its right edge, → −1 far past it."""
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def parse_nab_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


def load_windows(labels_file: Path) -> dict[str, list[tuple[datetime, datetime]]]:
    raw = json.loads(labels_file.read_text())
    return {name: [(parse_nab_time(a), parse_nab_time(b)) for a, b in windows] for name, windows in raw.items()}


def load_profiles(profiles_file: Path) -> dict[str, CostMatrix]:
    return {name: CostMatrix.from_profile(p) for name, p in json.loads(profiles_file.read_text()).items()}


def probation_length(rows: int) -> int:
    """How many of a file's first records are probationary (never scored)."""
    return math.ceil(min(math.floor(PROBATION_PERCENT * rows), PROBATION_PERCENT * _PROBATION_CAP))


def sweep_file(
    timestamps: Sequence[datetime],
    scores: Sequence[float],
    windows: Sequence[tuple[datetime, datetime]],
    name: str,
    cost: CostMatrix,
) -> list[SweepRow]:
    """Every record's contribution if it were detected (the sweep score), with its window."""
    if len(timestamps) != len(scores):
        raise ValueError(f"{name}: {len(timestamps)} timestamps but {len(scores)} scores")
    index = {ts: i for i, ts in reversed(list(enumerate(timestamps)))}  # first occurrence
    pending = list(windows)
    max_tp = scaled_sigmoid(-1.0)
    probation = probation_length(len(timestamps))
    rows: list[SweepRow] = []
    window_name: str | None = None
    window_end: datetime | None = None
    right = width = 0.0
    prev_right: int | None = None
    prev_width = 0.0
    for i, (ts, score) in enumerate(zip(timestamps, scores, strict=True)):
        if pending and ts == pending[0][0]:
            start, window_end = pending.pop(0)
            window_name = f"{name}|{start.isoformat()}"
            right = float(index[window_end])
            width = float(right - index[start] + 1)
        if window_name is not None:
            position = -(right - i + 1) / width
            weighted = scaled_sigmoid(position) * cost.tp / max_tp
        else:
            position = 3.0 if prev_right is None else abs(prev_right - i) / (prev_width - 1)
            weighted = scaled_sigmoid(position) * cost.fp
        rows.append(SweepRow(float(score), weighted, window_name if i >= probation else "probationary"))
        if window_name is not None and ts == window_end:
            prev_right, prev_width = i, width
            window_name, window_end = None, None
    return rows


def best_threshold(rows: Sequence[SweepRow], cost: CostMatrix) -> tuple[float, float]:
    """(threshold, score) with the highest total over every threshold; detection is score ≥ threshold."""
    scorable = sorted((r for r in rows if r.window != "probationary"), key=lambda r: r.anomaly_score, reverse=True)
    best_in: dict[str, float] = {}  # each window's best detected weight, −fn weight while none is
    for r in scorable:
        if r.window is not None:
            best_in[r.window] = -cost.fn
    current = 1.1  # above every score: nothing detected
    # The total is kept as it changes: summing every window's part at each threshold made the
    # sweep O(records × windows).
    total = sum(best_in.values())
    best = (current, total)
    for r in scorable:
        if r.anomaly_score != current:
            if total > best[1]:
                best = (current, total)
            current = r.anomaly_score
        if r.window is None:
            total += r.sweep_score
        elif r.sweep_score > best_in[r.window]:
            total += r.sweep_score - best_in[r.window]
            best_in[r.window] = r.sweep_score
    if total > best[1]:
        best = (current, total)
    return best


def corpus_scores(
    files: Mapping[str, tuple[Sequence[datetime], Sequence[float]]],
    windows: Mapping[str, Sequence[tuple[datetime, datetime]]],
    profiles: Mapping[str, CostMatrix],
) -> dict[str, dict[str, Any]]:
    """``CorpusScorer.scores`` of one detector's scores (``files``: per file, its timestamps and
    scores)."""
    scorer = CorpusScorer({name: timestamps for name, (timestamps, _) in files.items()}, windows, profiles)
    return scorer.scores({name: scores for name, (_, scores) in files.items()})


class CorpusScorer:
    """NAB's scoring of a corpus, for as many detectors' scores as are asked: each record's sweep
    weight and window, and the null detector's score, depend on the labels alone, so they are
    worked out once per profile."""

    def __init__(
        self,
        timestamps: Mapping[str, Sequence[datetime]],
        windows: Mapping[str, Sequence[tuple[datetime, datetime]]],
        profiles: Mapping[str, CostMatrix],
    ) -> None:
        self.profiles = profiles
        self.window_count = sum(len(windows.get(name, [])) for name in timestamps)
        # The null detector's rows: a constant score beside every record's weight and window.
        self._null_rows = {
            profile: {
                name: sweep_file(ts, [_NULL_SCORE] * len(ts), windows.get(name, []), name, cost)
                for name, ts in timestamps.items()
            }
            for profile, cost in profiles.items()
        }
        self._null = {
            profile: best_threshold([r for rows in per_file.values() for r in rows], profiles[profile])[1]
            for profile, per_file in self._null_rows.items()
        }

    def scores(self, scores: Mapping[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
        """Per profile: the normalised score, the raw score, its threshold, the null/perfect
        anchors, and what that threshold detects (``windows_detected``, ``windows_missed``,
        ``false_positives``; ``files``: per file, [detected, windows, false positives];
        ``file_scores``: per file, its share of ``raw``)."""
        out: dict[str, dict[str, Any]] = {}
        for profile, cost in self.profiles.items():
            per_file: dict[str, list[SweepRow]] = {}
            for name, null_rows in self._null_rows[profile].items():
                if len(scores[name]) != len(null_rows):
                    raise ValueError(f"{name}: {len(null_rows)} timestamps but {len(scores[name])} scores")
                per_file[name] = [
                    SweepRow(float(s), r.sweep_score, r.window) for s, r in zip(scores[name], null_rows, strict=True)
                ]
            threshold, raw = best_threshold([r for rows in per_file.values() for r in rows], cost)
            null = self._null[profile]
            perfect = self.window_count * cost.tp
            found = {name: count_detections(rows, threshold, cost) for name, rows in per_file.items()}
            total = sum(found.values(), Detections())
            out[profile] = {
                "score": 100.0 * (raw - null) / (perfect - null),
                "raw": raw,
                "threshold": threshold,
                "null": null,
                "perfect": perfect,
                "windows_detected": total.detected,
                "windows_missed": total.missed,
                "false_positives": total.false_positives,
                "files": {name: [d.detected, d.windows, d.false_positives] for name, d in found.items()},
                "file_scores": {name: d.score for name, d in found.items()},
            }
        return out
