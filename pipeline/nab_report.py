"""`gruwatch evaluate nab --report DIR`: the NAB run as a page to look at.

``index.html`` puts the detector's corpus scores beside NAB's published ones, then lists every
file with its share of the standard score at the corpus threshold, next to the published share
of Numenta's HTM (the first bar) and ARTime (the best) — worst gap first, so the files that
cost most are at the top. Each file links to its timeline (``files/*.png``): the values with
the labelled windows, the NAB score under the threshold the sweep chose, what that threshold
detects (by kind: a record, a new level inside the range, a novel spell, a likelihood) and where
the worker would have alerted. A table counts those kinds in windows and outside them.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.dates

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt
import numpy as np

from models.likelihood import LIKELIHOOD_TOP, SPELL_SCORE
from models.nab import CostMatrix, probation_length, sweep_file
from pipeline.nab_eval import NabFile, NabRun

__all__ = ["COMPARED", "KINDS", "detection_kinds", "write_nab_report"]

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
# Published detectors whose per-file scores sit beside ours: Numenta HTM (the first bar) and
# ARTime (the best published).
COMPARED = ("numenta", "ARTime")
# NAB gives each of its detectors every file's minimum and maximum over the whole file, and its
# length, before the first record (nab/detectors/base.py); ours scores each record from the ones
# before it. The published rows must not read as if measured alike.
_SEEN_AHEAD = (
    "The published detectors were run by NAB, which tells each of them a file's minimum and maximum"
    " over the whole file, and its length, before its first record: ARTime normalises every value by"
    " that range, Numenta's HTM sets its encoder's resolution from it. gruwatch and the baseline score"
    " each record from the records before it only."
)


def write_nab_report(
    run: NabRun, nab_dir: Path, out_dir: Path, on_file: Callable[[str], None] = lambda name: None
) -> Path:
    """Write the page and one PNG per file into ``out_dir``; returns the page's path."""
    files_dir = out_dir / "files"
    files_dir.mkdir(parents=True, exist_ok=True)
    standard = run.result["details"]["standard"]
    for name, scored in run.files.items():
        _plot_file(name, scored, run.windows[name], standard["threshold"], files_dir / _png_name(name))
        on_file(name)
    published = _published_corpus(nab_dir)
    _plot_leaderboard(run.result, published, out_dir / "leaderboard.png")
    page = out_dir / "index.html"
    page.write_text(_page(run, published, _published_per_file(nab_dir)), encoding="utf-8")
    return page


# What made a detection (``detection_kinds``), with its marker and colour on the timelines.
KINDS = {
    "record": ("o", "#d62728"),
    "level": ("s", "#8c564b"),
    "spell": ("X", "#000000"),
    "likelihood": ("^", "#2ca02c"),
}


def detection_kinds(scored: NabFile, threshold: float) -> dict[str, np.ndarray]:
    """Where ``threshold`` detects in a file (after its probation), by what scored the record
    over it: a *record* (outside every value before it), a new *level* inside that range, a
    novel *spell* (the detector's stuck rule) — the spatial check's three novelties, all over
    every likelihood — or the *likelihood* of the surprise itself."""
    detected = np.flatnonzero(scored.scores >= threshold)
    detected = detected[detected >= probation_length(len(scored.scores))]
    values = scored.values
    # The range of the values before each record (none before the first: it is no record).
    low = np.concatenate([[np.inf], np.minimum.accumulate(values)[:-1]])[detected]
    high = np.concatenate([[-np.inf], np.maximum.accumulate(values)[:-1]])[detected]
    record = (values[detected] < low) | (values[detected] > high)
    score = scored.scores[detected]
    spell = score == SPELL_SCORE
    novel = score > LIKELIHOOD_TOP
    return {
        "record": detected[novel & ~spell & record],
        "level": detected[novel & ~spell & ~record],
        "spell": detected[spell],
        "likelihood": detected[~novel],
    }


def _kind_counts(run: NabRun, threshold: float) -> dict[str, list[int]]:
    """Per kind over the corpus: detections that are a window's first, later ones in a window
    (neither rewarded nor penalised), and those outside every window — windows as NAB's sweep
    places them (``sweep_file``; its weights are not needed here)."""
    counts = {kind: [0, 0, 0] for kind in KINDS}
    for name, scored in run.files.items():
        rows = sweep_file(scored.timestamps, list(scored.scores), run.windows[name], name, _ANY_COST)
        kinds = detection_kinds(scored, threshold)
        by_event = {int(i): kind for kind, found in kinds.items() for i in found}
        opened: set[str] = set()
        for i in sorted(by_event):
            window = rows[i].window
            if window is None:
                counts[by_event[i]][2] += 1
                continue
            counts[by_event[i]][1 if window in opened else 0] += 1
            opened.add(window)
    return counts


_ANY_COST = CostMatrix(tp=1.0, fp=-1.0, fn=-1.0)


def _png_name(name: str) -> str:
    return name.removesuffix(".csv").replace("/", "__") + ".png"


def _published_corpus(nab_dir: Path) -> dict[str, dict[str, float]]:
    path = nab_dir / "results" / "final_results.json"
    if not path.exists():
        return {}
    raw: dict[str, dict[str, float]] = json.loads(path.read_text())
    return raw


def _published_per_file(nab_dir: Path) -> dict[str, dict[str, float]]:
    """Per compared detector present in the checkout: its standard-profile score of each file."""
    out: dict[str, dict[str, float]] = {}
    for detector in COMPARED:
        path = nab_dir / "results" / detector / f"{detector}_standard_scores.csv"
        if path.exists():
            with path.open(newline="") as fh:
                out[detector] = {r["File"]: float(r["Score"]) for r in csv.DictReader(fh) if r["File"]}
    return out


def _plot_file(
    name: str, scored: NabFile, windows: list[tuple[datetime, datetime]], threshold: float, out: Path
) -> None:
    times = matplotlib.dates.date2num(scored.timestamps)  # type: ignore[no-untyped-call]
    probation = probation_length(len(times))
    alerts = np.flatnonzero(scored.alerts > 0)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5), dpi=100, sharex=True, height_ratios=(3, 2))
    top.plot(times, scored.values, lw=0.6, color="#1f77b4")
    for start, end in windows:
        for ax in (top, bottom):
            ax.axvspan(start, end, color="#ff7f0e", alpha=0.2, lw=0)
    if probation:
        for ax in (top, bottom):
            ax.axvspan(times[0], times[probation - 1], color="#999999", alpha=0.15, lw=0)
    top.scatter(times[alerts], scored.values[alerts], marker="v", s=30, color="#9467bd", zorder=3, label="alert")
    for kind, found in detection_kinds(scored, threshold).items():
        if len(found):
            marker, colour = KINDS[kind]
            top.scatter(times[found], scored.values[found], marker=marker, s=28, color=colour, zorder=4, label=kind)
    top.set_title(f"{name}: windows (orange), probation (grey), detections by kind")
    top.legend(loc="upper right", fontsize=8)
    bottom.plot(times, scored.scores, lw=0.6, color="#2ca02c")
    bottom.axhline(threshold, color="#d62728", ls="--", lw=1, label=f"threshold {threshold:.4f}")
    bottom.set_ylabel("NAB score")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(loc="upper right", fontsize=8)
    bottom.xaxis_date()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _plot_leaderboard(result: dict[str, Any], published: dict[str, dict[str, float]], out: Path) -> None:
    ours = {f"gruwatch ({result['model']})": result["standard"], "gruwatch alerts": result["alerts"]["standard"]}
    baseline = {f"baseline: {result['baseline']['detector']}": result["baseline"]["standard"]}
    board = {name: scores["standard"] for name, scores in published.items()} | ours | baseline
    names = sorted(board, key=lambda n: board[n])
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1), dpi=100)
    colours = ["#d62728" if n in ours else "#7f7f7f" if n in baseline else "#1f77b4" for n in names]
    ax.barh(names, [board[n] for n in names], color=colours)
    for y, n in enumerate(names):
        ax.text(board[n], y, f" {board[n]:.1f}", va="center", fontsize=8)
    ax.set_xlabel("NAB standard profile score")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def _page(run: NabRun, published: dict[str, dict[str, float]], per_file: dict[str, dict[str, float]]) -> str:
    result = run.result
    rows = [
        f"<tr class=ours><td>gruwatch {html.escape(result['model'])}</td>"
        + "".join(f"<td>{result[p]:.1f}</td>" for p in PROFILES)
        + "</tr>",
        "<tr class=ours><td>gruwatch alerts</td>"
        + "".join(f"<td>{result['alerts'][p]:.1f}</td>" for p in PROFILES)
        + "</tr>",
        f"<tr class=baseline><td>baseline: {html.escape(result['baseline']['detector'])}</td>"
        + "".join(f"<td>{result['baseline'][p]:.1f}</td>" for p in PROFILES)
        + "</tr>",
    ]
    for name, scores in sorted(published.items(), key=lambda item: -item[1]["standard"]):
        rows.append(
            f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{scores[p]:.1f}</td>" for p in PROFILES) + "</tr>"
        )
    standard = result["details"]["standard"]
    baseline = result["baseline"]["details"]["standard"]
    compared = [d for d in COMPARED if d in per_file]
    reference = compared[0] if compared else None

    def gap(name: str) -> float:
        own = float(standard["file_scores"][name])
        return own - per_file[reference].get(name, own) if reference else own

    file_rows = []
    for name in sorted(run.files, key=gap):
        detected, windows, false_positives = standard["files"][name]
        cells = [
            f'<td><a href="files/{html.escape(_png_name(name))}">{html.escape(name)}</a></td>',
            f"<td>{detected}/{windows}</td>",
            f"<td>{false_positives}</td>",
            f"<td>{standard['file_scores'][name]:.2f}</td>",
            f"<td>{baseline['file_scores'][name]:.2f}</td>",
            *(f"<td>{per_file[d].get(name, float('nan')):.2f}</td>" for d in compared),
        ]
        file_rows.append("<tr>" + "".join(cells) + "</tr>")
    compared_heads = "".join(f"<th>{html.escape(d)}</th>" for d in compared)
    kind_rows = "\n".join(
        f"<tr><td>{kind}</td>" + "".join(f"<td>{n}</td>" for n in counts) + "</tr>"
        for kind, counts in _kind_counts(run, standard["threshold"]).items()
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>NAB: {html.escape(result["model"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin-bottom: 2em; }}
td, th {{ border: 1px solid #ccc; padding: 2px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
tr.ours {{ background: #fde0dd; font-weight: bold; }}
tr.baseline {{ background: #eeeeee; }}
</style></head><body>
<h1>NAB with {html.escape(result["model"])}</h1>
<p>{result["files"]} files, {result["records"]:,} records. Standard profile at threshold
{standard["threshold"]:.4f}: {standard["windows_detected"]} of
{standard["windows_detected"] + standard["windows_missed"]} windows detected,
{standard["false_positives"]} detections outside windows.
"gruwatch alerts" scores the worker's own alerts ({result["alerts"]["count"]:,} of them); the
baseline, measured in the same run, is the same anomaly likelihood over a running z-score
instead of the model's surprise, without the detector's novel spells (its stuck rule).</p>
<h2>Corpus scores</h2>
<table><tr><th>detector</th>{"".join(f"<th>{p}</th>" for p in PROFILES)}</tr>
{chr(10).join(rows)}
</table>
<p class=caveat>{_SEEN_AHEAD}</p>
<img src="leaderboard.png" alt="standard profile scores">
<h2>What the standard threshold detects</h2>
<p>By what scored a record over the threshold: a record (outside every value before it), a new
level inside that range, a novel spell (a run of repeats the detector's stuck rule flags) or
the likelihood of the model's surprise alone. A window's first detection is rewarded; later ones
in it count for nothing; one outside every window costs.</p>
<table class=kinds><tr><th>kind</th><th>a window's first</th><th>later in a window</th><th>outside windows</th></tr>
{kind_rows}
</table>
<h2>Per file (standard profile)</h2>
<p>Each file's share of the raw score at the corpus threshold (a window detected early is worth
up to 1, a missed one −1, a detection outside windows up to −0.11), beside the baseline's (at
its own corpus threshold) and the published detectors'
shares{f", worst against {html.escape(reference)} first" if reference else ""}.</p>
<table><tr><th>file</th><th>windows</th><th>outside</th><th>gruwatch</th><th>baseline</th>{compared_heads}</tr>
{chr(10).join(file_rows)}
</table>
</body></html>
"""
