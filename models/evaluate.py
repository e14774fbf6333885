"""Detection quality on labelled streams: event-, alert- and incident-level metrics.

An incident is a run of consecutive labelled events in one stream. It is caught when an event
of it (or one of the ``grace`` events after it) is flagged anomalous; its delay is the number of
events (and ms) from its first event to that flag. An alert (an episode opening) is true when it
falls inside an incident or within ``grace`` events after one (the model reacts to what it has
just seen).

An incident still running at its stream's last event is *open*: the data ends before it does
(a drift two events into its ramp), so whether it would be caught is unknown. Incident recall
counts complete incidents; open ones are reported apart, and ``incident_recall_with_open``
counts them too, as misses unless caught.

PR-AUC ranks events by the detector's own statistic, the calibrated probability, where given
(``ScoredEvent.probability``): the raw score leaves out the per-feature terms, the rules and each
stream's shift, and for the generic kind is dominated by the time gap's term (0.08 against 0.41).

Where the data says what each incident is (the synthetic producers' ``meta.anomaly``), complete
incidents are also counted by type (``by_type``); where the detector says why it alerted (its
rule), alerts are counted by rule with how many were true (``alerts_by_rule``): what a miss or a
false alarm is made of, without a script. Complete incidents are counted by their stream's age too
(``by_age``: events the stream had shown before the incident began, in AGE_BANDS), since a
detector that learns each stream online cannot judge its first events as it judges its 1,000th.

Caught is flagged, not paged: an incident whose flags all fall in an episode already open (one
still cooling down after an earlier incident) pages nobody. ``incidents_paged`` counts the complete
incidents with an alert (an episode opening or escalating) inside them or within ``grace`` events
after: what an operator would have been told of.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AGE_BANDS", "ScoredEvent", "average_precision", "evaluate"]

# Lower bounds of the age bands: a stream's warm-up (calibration's default 10 events), its first
# 50, and a day of 5-minute readings (288), past which its own tail has the most say.
AGE_BANDS = (0, 10, 50, 288)
# Their names, youngest first: "0-9", "10-49", "50-287", "288+".
_AGE_NAMES = tuple(
    f"{lower}{end}" for lower, end in zip(AGE_BANDS, [f"-{upper - 1}" for upper in AGE_BANDS[1:]] + ["+"], strict=True)
)


@dataclass
class ScoredEvent:
    key: str
    ts: int
    label: int
    score: float
    anomalous: bool
    alert: bool
    anomaly_type: str | None = None  # what a labelled event is (meta.anomaly), where known
    rule: str | None = None  # why the detector flagged it, where it did
    probability: float | None = None  # its calibrated tail probability, where known


def _ranking(events: Sequence[ScoredEvent]) -> tuple[np.ndarray, np.ndarray | None]:
    """What orders events from most to least anomalous: the detector's own statistic, the calibrated
    probability (as -log p: it includes per-feature terms, the rules and each stream's shift),
    ties broken by the raw score; the raw score alone where probabilities are not given."""
    scores = np.array([e.score for e in events], dtype=np.float64)
    if any(e.probability is None for e in events):
        return scores, None
    probability = np.array([e.probability for e in events], dtype=np.float64)
    return -np.log(np.maximum(probability, 1e-300)), scores


def average_precision(labels: np.ndarray, scores: np.ndarray, ties: np.ndarray | None = None) -> float:
    """Area under the precision-recall curve (step-wise average precision) of events ranked by
    ``scores``, highest first, equal scores by ``ties``."""
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable") if ties is None else np.lexsort((-ties, -scores))
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / positives)


def evaluate(events: Sequence[ScoredEvent], grace: int = 3) -> dict[str, Any]:
    labels = np.array([e.label for e in events], dtype=np.int64)
    flags = np.array([e.anomalous for e in events], dtype=bool)
    tp = int((flags & (labels == 1)).sum())
    fp = int((flags & (labels == 0)).sum())
    fn = int((~flags & (labels == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0

    by_stream: dict[str, list[ScoredEvent]] = {}
    for e in events:
        by_stream.setdefault(e.key, []).append(e)
    incidents = caught = alerts = true_alerts = 0
    open_incidents = open_caught = 0
    delays_events: list[int] = []
    delays_ms: list[int] = []
    paged = 0
    by_type: dict[str, list[int]] = {}  # type → [incidents, caught]
    by_age = {band: [0, 0] for band in _AGE_NAMES}  # band → [incidents, caught]
    by_rule: dict[str, list[int]] = {}  # rule → [alerts, true]

    def alerted(e: ScoredEvent, true: bool) -> None:
        if e.rule is not None:
            counts = by_rule.setdefault(e.rule, [0, 0])
            counts[0] += 1
            counts[1] += int(true)

    for stream in by_stream.values():
        since_incident = grace + 1
        i = 0
        while i < len(stream):
            e = stream[i]
            if e.label == 1:
                start = i
                while i < len(stream) and stream[i].label == 1:
                    if stream[i].alert:
                        alerts += 1
                        true_alerts += 1
                        alerted(stream[i], True)
                    i += 1
                window = range(start, min(i + grace, len(stream)))  # the incident and its grace events
                flagged = [j for j in window if stream[j].anomalous]
                since_incident = 0
                if i == len(stream):  # still running when the data ends
                    open_incidents += 1
                    open_caught += int(bool(flagged))
                    continue
                incidents += 1
                paged += int(any(stream[j].alert for j in window))
                aged = by_age[_age_name(start)]
                aged[0] += 1
                aged[1] += int(bool(flagged))
                if e.anomaly_type is not None:
                    typed = by_type.setdefault(e.anomaly_type, [0, 0])
                    typed[0] += 1
                    typed[1] += int(bool(flagged))
                if flagged:
                    caught += 1
                    delays_events.append(flagged[0] - start)
                    delays_ms.append(stream[flagged[0]].ts - stream[start].ts)
                continue
            if e.alert:
                alerts += 1
                true_alerts += int(since_incident < grace)
                alerted(e, since_incident < grace)
            since_incident += 1
            i += 1
    return {
        "events": len(events),
        "anomalous_events": int(labels.sum()),
        "precision": _round(precision),
        "recall": _round(recall),
        "f1": _round(f1),
        "pr_auc": _round(average_precision(labels, *_ranking(events))),
        "incidents": incidents,
        "incidents_caught": caught,
        "incident_recall": _round(caught / incidents if incidents else float("nan")),
        "incidents_paged": paged,
        "incidents_open_at_end": open_incidents,
        "incident_recall_with_open": _round(
            (caught + open_caught) / (incidents + open_incidents) if incidents + open_incidents else float("nan")
        ),
        "alerts": alerts,
        "alert_precision": _round(true_alerts / alerts if alerts else float("nan")),
        "delay_events_median": float(np.median(delays_events)) if delays_events else None,
        "delay_ms_median": float(np.median(delays_ms)) if delays_ms else None,
        "by_type": {
            kind: {"incidents": n, "caught": hit, "recall": _round(hit / n)}
            for kind, (n, hit) in sorted(by_type.items())
        },
        "by_age": {
            band: {"incidents": n, "caught": hit, "recall": _round(hit / n if n else float("nan"))}
            for band, (n, hit) in by_age.items()
        },
        "alerts_by_rule": {
            rule: {"alerts": n, "true": hit, "precision": _round(hit / n)} for rule, (n, hit) in sorted(by_rule.items())
        },
    }


def _age_name(age: int) -> str:
    return _AGE_NAMES[int(np.searchsorted(AGE_BANDS, age, side="right")) - 1]


def _round(value: float) -> float | None:
    return None if value != value else round(float(value), 4)  # NaN → None (JSON null)
