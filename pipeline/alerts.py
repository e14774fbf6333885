"""The alert contract: what the worker publishes on ``anomaly-alerts`` (key = stream key)."""

from __future__ import annotations

import time
from typing import Any

from models.detector import Detector, Scored
from pipeline.events import Event

__all__ = ["SEVERITIES", "alert_id", "build_alert"]

SEVERITIES = ("low", "medium", "high", "critical")


def alert_id(topic: str, partition: int, offset: int) -> str:
    """Stable across redelivery: the source record's coordinates."""
    return f"{topic}:{partition}:{offset}"


def build_alert(
    event: Event,
    result: Scored,
    detector: Detector,
    kind: str,
    topic: str,
    partition: int,
    offset: int,
) -> dict[str, Any]:
    return {
        "alert_id": alert_id(topic, partition, offset),
        "kind": kind,
        "key": event.key,
        "ts": event.ts,
        "score": round(result.score, 4),
        "threshold": round(detector.calibration.threshold, 4),
        "probability": result.probability,
        "severity": result.severity,
        # "score": this event's score (or one feature's term) passed its threshold; "sustained":
        # the stream's recent scores stayed above its usual level (a slow fault), so the score
        # may be below it; "stuck": a value repeated longer than the stream's own repeat rate makes
        # plausible; "level": a stream of noise about a level moved off it; "residual": a value far
        # from the expected one for its stream, steadier than the model's spread says (all three:
        # the generic kind); "coupling": a feature broken away from the others it moves with
        # (a sensor channel drifting off its siblings).
        "rule": result.rule,
        "model": detector.ident,
        "explanation": result.explanation or [],
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "detected_at": int(time.time() * 1000),
        "meta": event.meta,
    }
