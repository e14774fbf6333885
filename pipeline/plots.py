"""Timelines as PNG: a stream's values (the feature its alerts name most, with its usual value at
that hour, or the value its other features expect, where the alert gives one) above its score,
the threshold, labelled incidents and alerts. Alerts by the stuck, level, residual and coupling
rules come at ordinary scores: the values panel is where they show."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates
from matplotlib.axes import Axes

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

from models.detector import Scored
from pipeline.events import Event

__all__ = ["plot_stream", "plotted_feature"]


def plotted_feature(events: Sequence[Event], results: Sequence[Scored]) -> str:
    """The feature the stream's alerts name first most often (the first feature without alerts)."""
    named = Counter(
        r.explanation[0]["feature"]
        for r in results
        if r.alert and r.explanation and r.explanation[0]["feature"] in events[0].values
    )
    return named.most_common(1)[0][0] if named else next(iter(events[0].values))


def plot_stream(events: Sequence[Event], results: Sequence[Scored], threshold: float, title: str, out: Path) -> None:
    times = matplotlib.dates.date2num(  # type: ignore[no-untyped-call]
        [datetime.fromtimestamp(e.ts / 1000, tz=UTC) for e in events]
    )
    scores = [r.score for r in results]
    fig, (top, ax) = plt.subplots(2, 1, figsize=(12, 6.5), dpi=110, sharex=True, height_ratios=(3, 2))
    _plot_values(top, times, events, results)
    ax.plot(times, scores, lw=0.8, color="#1f77b4", label="score (NLL)")
    ax.axhline(threshold, color="#d62728", ls="--", lw=1, label="threshold")
    floor = min(scores)
    labelled = [(t, floor) for t, e in zip(times, events, strict=True) if e.label == 1]
    _scatter(ax, labelled, marker="|", s=120, color="#ff7f0e", label="labelled anomaly")
    alerts = [(t, r.score) for t, r in zip(times, results, strict=True) if r.alert]
    _scatter(ax, alerts, marker="v", s=60, color="#d62728", zorder=3, label="alert")
    ax.xaxis_date()
    top.set_title(title)
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)


def _plot_values(ax: Axes, times: Sequence[float], events: Sequence[Event], results: Sequence[Scored]) -> None:
    feature = plotted_feature(events, results)
    values = [e.values.get(feature, float("nan")) for e in events]
    ax.plot(times, values, lw=0.8, color="#444444", label=feature)
    labelled = [(t, v) for t, v, e in zip(times, values, events, strict=True) if e.label == 1]
    _scatter(ax, labelled, s=8, color="#ff7f0e", zorder=2, label="labelled anomaly")
    alerts = [(t, v) for t, v, r in zip(times, values, results, strict=True) if r.alert]
    _scatter(ax, alerts, marker="v", s=60, color="#d62728", zorder=3, label="alert")
    _scatter(
        ax,
        _explained(times, results, feature, "usual"),
        marker="_",
        s=120,
        color="#2ca02c",
        zorder=3,
        label="usual at that hour",
    )
    # A hindsight alert judges the reading before it: its mark goes at that reading.
    hindsight = _explained(times, results, feature, "previous_expected", lag=1)
    _scatter(ax, hindsight, marker="_", s=120, color="#9467bd", zorder=3, label="expected, in hindsight")
    by_others = _explained(times, results, feature, "expected_by_others")
    _scatter(ax, by_others, marker="_", s=120, color="#1f77b4", zorder=3, label="expected by the other features")
    ax.set_ylabel(feature)
    ax.legend(loc="upper right", fontsize=8)


def _explained(
    times: Sequence[float], results: Sequence[Scored], feature: str, key: str, lag: int = 0
) -> list[tuple[float, float]]:
    """(time, value) of ``key`` in the explanations of alerts that name ``feature`` with one, at the
    time of the event ``lag`` readings before the alert."""
    return [
        (times[i - lag], item[key])
        for i, r in enumerate(results)
        if r.alert and r.explanation and i >= lag
        for item in r.explanation
        if item["feature"] == feature and key in item
    ]


def _scatter(ax: Axes, points: Sequence[tuple[float, float]], **style: Any) -> None:
    """(time, value) points, when there are any (an empty series would still take a legend entry)."""
    if points:
        ax.scatter([t for t, _ in points], [v for _, v in points], **style)
