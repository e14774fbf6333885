"""`gruwatch evaluate nab`: the generic detector over every NAB file, scored the NAB way.

Each file is one stream scored from its first record with a fresh state: the hidden state, the
stream's running normalisation and its anomaly likelihood adapt as it goes; nothing is looked at
ahead of time. A record's NAB score is the anomaly likelihood of the GRU's surprise
(``models.likelihood``): NAB sweeps one threshold over all 58 files, so scores must mean the same
on every stream, which the raw surprise does not.

Scored the same way, apart (``alerts``): the detector's own alerts, 1 where an episode opens and 0
elsewhere — what a worker would page for on these series, at the model's threshold rather than
the best one the sweep finds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.detector import Detector
from models.likelihood import AnomalyLikelihood
from models.nab import corpus_scores, load_profiles, load_windows, parse_nab_time
from pipeline.errors import InputFileError
from producers.files import read_nab

__all__ = ["NabFile", "NabRun", "run_nab"]


@dataclass(frozen=True)
class NabFile:
    """One NAB file as the detector saw it: its records' times and values, their NAB scores and
    where the detector alerted."""

    timestamps: list[datetime]
    values: np.ndarray
    scores: np.ndarray
    alerts: np.ndarray


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
    on_file: Callable[[str, int], None] = lambda name, rows: None,
    likelihood: AnomalyLikelihood | None = None,
) -> NabRun:
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
    scored: dict[str, NabFile] = {}
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
        results, _ = detector.score_sequence(events)
        values = np.array([v["value"] for _, v in events])
        scored[name] = NabFile(
            timestamps,
            values,
            likelihood.score_series([r.surprise for r in results], values),
            np.array([1.0 if r.alert else 0.0 for r in results]),
        )
        on_file(name, len(events))
    profiles = load_profiles(profiles_file)
    scores = corpus_scores({n: (f.timestamps, list(f.scores)) for n, f in scored.items()}, windows, profiles)
    paged = corpus_scores({n: (f.timestamps, list(f.alerts)) for n, f in scored.items()}, windows, profiles)
    result = {
        "model": detector.ident,
        "files": len(scored),
        "records": sum(len(f.timestamps) for f in scored.values()),
        **{profile: round(v["score"], 2) for profile, v in scores.items()},
        "details": scores,
        "alerts": {
            "count": int(sum(f.alerts.sum() for f in scored.values())),
            **{profile: round(v["score"], 2) for profile, v in paged.items()},
            "details": paged,
        },
    }
    return NabRun(scored, {n: windows[n] for n in scored}, result)
