"""The pipeline side of the model: load labelled JSONL into streams, load detectors, score files."""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from models.artifacts import ModelError, load_detector, shipped_model_dir
from models.detector import Detector, Scored
from models.features import DEFAULT_SPECS, FeatureSpec, Transform
from pipeline.errors import InputFileError, ModelLoadError
from pipeline.events import Event
from pipeline.replay import BadLine, iter_events

__all__ = ["Dataset", "anomaly_type", "load_dataset", "load_model", "score_dataset", "spec_for"]

logger = logging.getLogger(__name__)


@dataclass
class Dataset:
    """Events of a file set in input order, plus what was bad and a digest of the bytes read."""

    events: list[Event] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)
    digest: str = ""
    files: list[str] = field(default_factory=list)

    def streams(self) -> dict[str, list[int]]:
        """Indices into ``events`` per stream key, in order."""
        out: dict[str, list[int]] = {}
        for i, event in enumerate(self.events):
            out.setdefault(event.key, []).append(i)
        return out


def load_dataset(paths: Sequence[Path], on_bad: Callable[[BadLine], None] | None = None) -> Dataset:
    files, items = iter_events(list(paths), fmt="jsonl")
    data = Dataset(files=[str(f) for f in files])
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    data.digest = f"sha256:{digest.hexdigest()}"
    for item in items:
        if isinstance(item, BadLine):
            data.bad.append(item)
            if on_bad:
                on_bad(item)
        else:
            data.events.append(item)
    if not data.events:
        raise InputFileError(f"no valid events in {', '.join(data.files)}")
    return data


def spec_for(kind: str, data: Dataset) -> FeatureSpec:
    """The kind's feature spec; for generic, the names are inferred from the data."""
    if kind != "generic":
        return copy.deepcopy(DEFAULT_SPECS[kind])
    names = sorted({name for e in data.events for name in e.values})
    incomplete = sum(1 for e in data.events if len(e.values) != len(names))
    if incomplete:
        raise InputFileError(f"generic training data must name the same values in every event ({incomplete} differ)")
    # Each stream on its own scale: standardised by its own running statistics, not transformed;
    # a stuck value judged by how often the stream itself repeats one; a slow change of level
    # caught by the level rule where the stream is noise about a level, by the seasonal rule
    # against the stream's own days where it has a daily cycle, and by the autoregressive rule
    # against its own last values where it wanders; residuals judged against
    # the stream's own as well as the model's spread; an anomaly only where the stream's own
    # history agrees (the likelihood gate).
    transforms = cast("tuple[Transform, ...]", ("identity",) * len(names))
    return FeatureSpec(
        "generic",
        tuple(names),
        transforms,
        stream_norm=True,
        stuck_rule=True,
        level_rule=True,
        residual_rule=True,
        seasonal_rule=True,
        autoregressive_rule=True,
        hindsight_rule=True,
        likelihood_gate=True,
    )


def load_model(model_dir: Path | None, kind: str | None, scoring_only: bool = False) -> Detector:
    """A model directory, or the shipped default of ``kind`` (``scoring_only``: without torch)."""
    if model_dir is None and kind is None:
        raise ModelLoadError("give --model DIR or --kind for a shipped default")
    try:
        return load_detector(model_dir or shipped_model_dir(str(kind)), kind=kind, scoring_only=scoring_only)
    except ModelError as exc:
        raise ModelLoadError(str(exc)) from None


def score_dataset(
    detector: Detector, data: Dataset, on_progress: Callable[[int, int], None] = lambda done, total: None
) -> list[Scored]:
    """Every event scored offline, in input order: every stream from a fresh state, all of them
    as one batch (Detector.score_streams); ``on_progress(events scored, events in all)``."""
    streams = data.streams()
    for key, indices in streams.items():
        for e in (data.events[i] for i in indices):
            absent = [n for n in detector.spec.names if n not in e.values]
            if absent:
                raise InputFileError(f"stream {key}: event at ts {e.ts} lacks feature(s) {', '.join(absent)}")
    scored = detector.score_streams(
        [[(data.events[i].ts, data.events[i].values) for i in indices] for indices in streams.values()],
        on_progress=on_progress,
    )
    results: list[Scored | None] = [None] * len(data.events)
    for indices, stream in zip(streams.values(), scored, strict=True):
        for i, s in zip(indices, stream, strict=True):
            results[i] = s
    return [r for r in results if r is not None]


def anomaly_type(event: Event) -> str | None:
    """What a labelled event is, where its producer said (``meta.anomaly``: the synthetic ones do)."""
    kind = (event.meta or {}).get("anomaly") if event.label else None
    return kind if isinstance(kind, str) else None


def scored_row(event: Event, result: Scored) -> dict[str, Any]:
    row: dict[str, Any] = {
        "key": event.key,
        "ts": event.ts,
        "label": event.label,
        "score": round(result.score, 5),
        "probability": result.probability,
        "anomaly": result.anomalous,
        "alert": result.alert,
    }
    if result.anomalous:
        row["severity"] = result.severity
        row["rule"] = result.rule
        row["explanation"] = result.explanation
    return row


def load_worker_models(model_dirs: dict[str, Path], kinds: list[str]) -> dict[str, Detector]:
    """A detector per kind: from ``model_dirs`` where given, else the shipped default. Scoring
    only: a worker process never imports torch."""
    detectors = {}
    for kind in kinds:
        directory = model_dirs.get(kind)
        if directory is None and not shipped_model_dir(kind).exists():
            continue
        detectors[kind] = load_model(directory, kind, scoring_only=True)
    return detectors
