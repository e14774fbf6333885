"""Score timelines as PNG: a stream's score, the threshold, labelled incidents and alerts."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import matplotlib
import matplotlib.dates

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt

from models.detector import Scored
from pipeline.events import Event

__all__ = ["plot_stream"]


def plot_stream(events: Sequence[Event], results: Sequence[Scored], threshold: float, title: str, out: Path) -> None:
    times = matplotlib.dates.date2num(  # type: ignore[no-untyped-call]
        [datetime.fromtimestamp(e.ts / 1000, tz=UTC) for e in events]
    )
    scores = [r.score for r in results]
    fig, ax = plt.subplots(figsize=(12, 4), dpi=110)
    ax.plot(times, scores, lw=0.8, color="#1f77b4", label="score (NLL)")
    ax.axhline(threshold, color="#d62728", ls="--", lw=1, label="threshold")
    labelled = [t for t, e in zip(times, events, strict=True) if e.label == 1]
    if labelled:
        ax.scatter(
            labelled,
            [min(scores)] * len(labelled),
            marker="|",
            s=120,
            color="#ff7f0e",
            label="labelled anomaly",
        )
    alert_times = [t for t, r in zip(times, results, strict=True) if r.alert]
    alert_scores = [r.score for r in results if r.alert]
    if alert_times:
        ax.scatter(alert_times, alert_scores, marker="v", s=60, color="#d62728", zorder=3, label="alert")
    ax.xaxis_date()
    ax.set_title(title)
    ax.set_ylabel("score")
    ax.legend(loc="upper right", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
