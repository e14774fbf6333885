"""`gruwatch evaluate nab`: the generic detector over every NAB file, scored the NAB way.

Each file is one stream scored from its first record with a fresh state: the hidden state, the
stream's running normalisation and its anomaly likelihood adapt as it goes; nothing is looked at
ahead of time. The files step together, as one batch of streams (the worker's path). A record's
NAB score is the anomaly likelihood of the GRU's surprise (``models.likelihood``): NAB sweeps one
threshold over all 58 files, so scores must mean the same on every stream, which the raw
surprise does not. Its spatial check scores a novel value over every likelihood; the detector's
``stuck`` rule adds novel spells (``spell_starts``).

Scored the same way, apart (``alerts``): the detector's own alerts, 1 where an episode opens and 0
elsewhere — what a worker would page for on these series, at the model's threshold rather than
the best one the sweep finds.

And the baseline (``baseline``), measured in the same run: the same anomaly likelihood over a
running z-score instead of the GRU's surprise — each value against its stream's running
statistics, the ones the model's inputs are standardised by — without the detector's spells.
What the detector adds on NAB is the gap between the two.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.detector import Detector
from models.features import FeatureSpec
from models.likelihood import AnomalyLikelihood
from models.nab import CorpusScorer, load_profiles, load_windows, parse_nab_time
from models.waves import Waves
from pipeline.errors import InputFileError
from producers.files import read_nab

__all__ = ["BASELINE", "NabFile", "NabRun", "run_nab", "running_z", "spell_starts"]

BASELINE = "running z-score"
Event = tuple[int, dict[str, float]]
# Per-stream running statistics and nothing else: the standardisation the generic model's inputs
# go through (FeatureSpec.stream_norm), without its rules. Computed here rather than taken from the
# detector's pass (~6 s over NAB's 365,558 records): the baseline must not depend on the model
# under test, and `--model` may name one whose spec standardises differently or not at all.
_RUNNING = FeatureSpec("baseline", ("value",), ("identity",), stream_norm=True)


@dataclass(frozen=True)
class NabFile:
    """One NAB file as the detector saw it: its records' times and values, their NAB scores and
    where the detector alerted."""

    timestamps: list[datetime]
    values: np.ndarray
    scores: np.ndarray
    alerts: np.ndarray
    baseline: np.ndarray  # the baseline's NAB scores


@dataclass(frozen=True)
class NabRun:
    """The scored corpus (``files``, by NAB's file name), its labelled windows and ``result``: the
    scores by profile (what ``evaluate nab --json`` prints)."""

    files: dict[str, NabFile]
    windows: dict[str, list[tuple[datetime, datetime]]]
    result: dict[str, Any]


def run_nab(
    detector: Detector,
    nab_dir: Path,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    likelihood: AnomalyLikelihood | None = None,
) -> NabRun:
    """Score every labelled NAB file; ``on_progress(records scored, records in all)``."""
    likelihood = likelihood or AnomalyLikelihood()
    data_dir, labels, profiles_file = (
        nab_dir / "data",
        nab_dir / "labels" / "combined_windows.json",
        nab_dir / "config" / "profiles.json",
    )
    for needed in (data_dir, labels, profiles_file):
        if not needed.exists():
            raise InputFileError(f"{nab_dir} is not a NAB checkout: {needed.relative_to(nab_dir)} is missing")
    windows = load_windows(labels)
    files: dict[str, tuple[list[datetime], list[Event]]] = {}
    for path in sorted(data_dir.glob("*/*.csv")):
        name = str(path.relative_to(data_dir))
        if name not in windows:
            continue
        rows = list(read_nab(path, data_dir))
        bad = [r for r in rows if r.error or r.obj is None]
        if bad:
            raise InputFileError(f"{path}:{bad[0].line}: {bad[0].error}")
        timestamps = [parse_nab_time(str(r.obj["ts"])) for r in rows if r.obj]
        events = [
            (int(t.timestamp() * 1000), {"value": float(r.obj["values"]["value"])})
            for t, r in zip(timestamps, rows, strict=True)
            if r.obj
        ]
        files[name] = (timestamps, events)
    # Every file a stream of one batch (Detector.score_streams): ~9x faster than file after file.
    results = detector.score_streams([events for _, events in files.values()], on_progress=on_progress)
    values = [np.array([v["value"] for _, v in events]) for _, events in files.values()]
    surprise = [[r.surprise for r in scored] for scored in results]
    spells = [spell_starts([r.anomalous and r.rule == "stuck" for r in scored]) for scored in results]
    scores = likelihood.score_streams(surprise, values, spells)
    baseline = likelihood.score_streams(running_z(values), values)
    scored = {
        name: NabFile(timestamps, values[i], scores[i], np.array([float(r.alert) for r in results[i]]), baseline[i])
        for i, (name, (timestamps, _)) in enumerate(files.items())
    }
    scorer = CorpusScorer({n: f.timestamps for n, f in scored.items()}, windows, load_profiles(profiles_file))

    def summary(column: Callable[[NabFile], np.ndarray]) -> dict[str, Any]:
        """One column of every file scored as NAB does: each profile's score and its details."""
        details = scorer.scores({n: column(f).tolist() for n, f in scored.items()})
        return {**{profile: round(v["score"], 2) for profile, v in details.items()}, "details": details}

    result = {
        "model": detector.ident,
        "files": len(scored),
        "records": sum(len(f.timestamps) for f in scored.values()),
        **summary(lambda f: f.scores),
        "alerts": {"count": int(sum(f.alerts.sum() for f in scored.values())), **summary(lambda f: f.alerts)},
        "baseline": {"detector": BASELINE, **summary(lambda f: f.baseline)},
    }
    return NabRun(scored, {n: windows[n] for n in scored}, result)


def spell_starts(stuck: Sequence[bool] | np.ndarray) -> np.ndarray:
    """Per event, whether it starts a run of events the detector's ``stuck`` rule finds anomalous
    (``stuck``): a spell of repeats longer than any its stream has shown and improbable at its own
    repeat rate. The first event of the run, as a novel value scores once per novelty.

    >>> spell_starts([False, True, True, False, True, False, True]).tolist()
    [False, True, False, False, True, False, True]
    """
    stuck = np.asarray(stuck, dtype=bool)
    return stuck & ~np.concatenate([[False], stuck[:-1]])


def running_z(streams: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per stream, |z| of each value against the stream's running statistics before it (0 for
    the first). The streams step together, wave by wave (models.waves): ~16x fewer calls than
    stream after stream on NAB's 58 files.

    >>> [[round(float(z), 2) for z in zs] for zs in running_z([np.array([1.0, 3.0, 2.0, 10.0]), np.array([5.0])])]
    [[0.0, 50.0, 0.0, 9.8], [0.0]]
    """
    waves = Waves(np.array([len(values) for values in streams]))
    values, norms = waves.pad(streams), np.repeat(_RUNNING.new_norm()[None, :], len(streams), axis=0)
    z = np.zeros_like(values)
    for t in range(waves.count):
        going = waves.going(t)
        # The time gap: not judged here.
        targets = np.stack([values[:going, t], np.zeros(going)], axis=1)
        y, _, _, norms[:going] = _RUNNING.normalise_batch(targets, norms[:going])
        z[:going, t] = np.abs(y[:, 0])
    return waves.unpad(z)
