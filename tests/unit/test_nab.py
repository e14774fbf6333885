"""NAB scoring, proved on a published result: ARTime's per-record scores → its corpus scores."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.likelihood import LIKELIHOOD_TOP, SPELL_SCORE, AnomalyLikelihood
from models.nab import (
    CorpusScorer,
    CostMatrix,
    SweepRow,
    best_threshold,
    corpus_scores,
    load_profiles,
    load_windows,
    parse_nab_time,
    sweep_file,
)
from pipeline import nab_eval
from pipeline.modeling import load_model
from pipeline.nab_report import detection_kinds


def test_reproduces_artime_published_scores(nab_dir: Path) -> None:
    windows = load_windows(nab_dir / "labels" / "combined_windows.json")
    profiles = load_profiles(nab_dir / "config" / "profiles.json")
    files = {}
    for path in sorted((nab_dir / "results" / "ARTime").glob("*/ARTime_*.csv")):
        with path.open() as fh:
            rows = list(csv.DictReader(fh))
        files[f"{path.parent.name}/{path.name.removeprefix('ARTime_')}"] = (
            [parse_nab_time(r["timestamp"]) for r in rows],
            [float(r["anomaly_score"]) for r in rows],
        )
    assert len(files) == 58
    published = json.loads((nab_dir / "results" / "final_results.json").read_text())["ARTime"]
    scores = corpus_scores(files, windows, profiles)
    for profile in ("standard", "reward_low_FP_rate", "reward_low_FN_rate"):
        assert scores[profile]["score"] == pytest.approx(published[profile], abs=0.01), profile
    standard = scores["standard"]
    assert standard["perfect"] == 116 and standard["null"] == -116
    assert standard["windows_detected"] + standard["windows_missed"] == 116
    assert sum(f[1] for f in standard["files"].values()) == 116
    # Per file too: each file's share of the total is its published per-file score.
    with (nab_dir / "results" / "ARTime" / "ARTime_standard_scores.csv").open() as fh:
        per_file = {r["File"]: float(r["Score"]) for r in csv.DictReader(fh) if r["File"]}
    assert per_file.keys() == standard["file_scores"].keys()
    for name, score in standard["file_scores"].items():
        assert score == pytest.approx(per_file[name], abs=1e-6), name
    assert sum(standard["file_scores"].values()) == pytest.approx(standard["raw"], abs=1e-9)


def _series(n: int) -> list[datetime]:
    start = datetime(2026, 1, 1)
    return [start + timedelta(minutes=5 * i) for i in range(n)]


def test_early_detection_beats_late_and_false_positives_cost() -> None:
    ts = _series(1000)
    window = [(ts[600], ts[699])]
    cost = CostMatrix(tp=1.0, fp=0.11, fn=1.0)

    def total(hit: int, extra_fp: int | None = None) -> float:
        scores = [0.0] * 1000
        scores[hit] = 1.0
        if extra_fp is not None:
            scores[extra_fp] = 1.0
        return best_threshold(sweep_file(ts, scores, window, "f", cost), cost)[1]

    assert total(600) > total(650) > total(699) > 0
    assert total(600) == pytest.approx(1.0, abs=1e-9)  # the earliest record is worth the full tp weight
    assert total(600, extra_fp=300) == pytest.approx(1.0 - 0.11)  # a false positive before any window
    # A constant score: detecting everything costs more than the window is worth, so the best
    # threshold detects nothing and pays fn for the window (the null detector's baseline).
    assert best_threshold(sweep_file(ts, [0.5] * 1000, window, "f", cost), cost) == (1.1, -1.0)


def _best_total_afresh(rows: list[SweepRow], cost: CostMatrix) -> float:
    """The best total over every threshold, each total summed from nothing: NAB's own way."""
    scorable = [r for r in rows if r.window != "probationary"]
    best = -math.inf
    for threshold in {1.1, *(r.anomaly_score for r in scorable)}:
        parts: dict[str | None, float] = {r.window: -cost.fn for r in scorable if r.window is not None}
        outside = 0.0
        for r in scorable:
            if r.anomaly_score >= threshold:
                if r.window is None:
                    outside += r.sweep_score
                else:
                    parts[r.window] = max(parts[r.window], r.sweep_score)
        best = max(best, sum(parts.values()) + outside)
    return best


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.sampled_from([None, "a", "b", "c"])), max_size=40
    ),
    st.lists(st.floats(-1.0, 1.0), min_size=40, max_size=40),
)
def test_the_sweep_keeps_the_total_every_threshold_would_sum(
    records: list[tuple[float, str | None]], weights: list[float]
) -> None:
    """best_threshold keeps its total as records come in, rather than summing every window's part
    at each threshold: the same best total as working each one out afresh, ties and all."""
    cost = CostMatrix(tp=1.0, fp=0.11, fn=1.0)
    rows = [SweepRow(score, weight, window) for (score, window), weight in zip(records, weights, strict=False)]
    assert best_threshold(rows, cost)[1] == pytest.approx(_best_total_afresh(rows, cost), abs=1e-9)


def test_one_scorer_scores_each_detector_as_alone() -> None:
    """``evaluate nab`` weighs the corpus once and scores three columns with it: each column scores
    as it would alone, and a column of the wrong length is refused."""
    ts = _series(1000)
    windows = {"a": [(ts[300], ts[349])], "b": [(ts[500], ts[549])]}
    profiles = {"standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0), "low_fn": CostMatrix(tp=1.0, fp=0.055, fn=2.0)}
    rng = np.random.default_rng(5)
    columns = [{name: rng.random(1000).tolist() for name in windows} for _ in range(3)]
    scorer = CorpusScorer({name: ts for name in windows}, windows, profiles)
    for column in columns:
        assert scorer.scores(column) == corpus_scores({n: (ts, s) for n, s in column.items()}, windows, profiles)
    with pytest.raises(ValueError, match="1000 timestamps but 999 scores"):
        scorer.scores({"a": [0.0] * 999, "b": [0.0] * 1000})


def test_probationary_records_are_never_scored() -> None:
    ts = _series(1000)
    cost = CostMatrix(tp=1.0, fp=0.11, fn=1.0)
    scores = [0.0] * 1000
    scores[10] = 1.0  # inside the first 15 %: a false positive that must not count
    rows = sweep_file(ts, scores, [], "f", cost)
    assert rows[10].window == "probationary" and rows[150].window is None
    assert best_threshold(rows, cost)[1] == pytest.approx(0.0)


def test_counts_what_the_chosen_threshold_detects() -> None:
    ts = _series(1000)
    windows = {"a": [(ts[300], ts[349]), (ts[600], ts[649])], "b": [(ts[500], ts[549])]}
    scores_a = [0.0] * 1000
    scores_a[310] = 0.9  # window 1 caught; window 2 missed
    scores_a[400] = scores_a[401] = 0.9  # two false positives
    scores_a[20] = 0.9  # probationary: never counted
    scores_b = [0.0] * 1000
    scores_b[520] = 0.95
    scores_b[800] = 0.5  # below the threshold the sweep picks
    profiles = {"standard": CostMatrix(tp=1.0, fp=0.11, fn=1.0)}
    result = corpus_scores({"a": (ts, scores_a), "b": (ts, scores_b)}, windows, profiles)["standard"]
    assert result["threshold"] == 0.9
    assert (result["windows_detected"], result["windows_missed"], result["false_positives"]) == (2, 1, 2)
    assert result["files"] == {"a": [1, 2, 2], "b": [1, 1, 0]}
    # a: one window caught late-ish, one missed (−1) and two false positives; b: one caught.
    shares = result["file_scores"]
    assert shares["a"] + shares["b"] == pytest.approx(result["raw"])
    assert -1 < shares["a"] < 0 < shares["b"] < 1


def _nab_checkout(nab_dir: Path, root: Path, series: dict[str, list[float]]) -> Path:
    """A NAB checkout of ``series`` (5-minute records), one window each, NAB's own profiles."""
    start = datetime(2026, 1, 1)
    windows = {}
    for name, values in series.items():
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        times = [start + timedelta(minutes=5 * i) for i in range(len(values))]
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["timestamp", "value"])
            writer.writerows((t.strftime("%Y-%m-%d %H:%M:%S"), v) for t, v in zip(times, values, strict=True))
        middle = len(values) // 2
        windows[name] = [
            [f"{times[middle]:%Y-%m-%d %H:%M:%S}.000000", f"{times[middle + 20]:%Y-%m-%d %H:%M:%S}.000000"]
        ]
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_text((nab_dir / "config" / "profiles.json").read_text())
    return root


def test_files_stepped_together_score_as_each_alone(nab_dir: Path, tmp_path: Path) -> None:
    """run_nab steps every file as one batch of streams; every file's NAB scores, spells and
    alerts are what the file scores alone."""
    rng = np.random.default_rng(3)
    daily = 50 + 10 * np.sin(np.arange(900) * 2 * np.pi / 288) + rng.normal(0, 1, 900)
    daily[600:660] = daily[599]  # a flat spell the stuck rule finds
    wander = 5 + np.cumsum(rng.normal(0, 0.1, 500))
    wander[300] += 8  # a record
    series = {"a/daily.csv": daily.round(3).tolist(), "b/wander.csv": wander.round(3).tolist()}
    root = _nab_checkout(nab_dir, tmp_path / "nab", series)
    detector = load_model(None, "generic")
    progress: list[tuple[int, int]] = []
    run = nab_eval.run_nab(detector, root, lambda done, total: progress.append((done, total)))
    assert progress[-1] == (1400, 1400)
    likelihood = AnomalyLikelihood()
    spells = 0
    for name, values in series.items():
        events = [
            (int(t.timestamp() * 1000), {"value": v}) for t, v in zip(run.files[name].timestamps, values, strict=True)
        ]
        results, _ = detector.score_sequence(events)
        stuck = [r.anomalous and r.rule == "stuck" for r in results]
        spells += int(nab_eval.spell_starts(stuck).sum())
        alone = likelihood.score_series([r.surprise for r in results], np.array(values), nab_eval.spell_starts(stuck))
        np.testing.assert_allclose(run.files[name].scores, alone, rtol=1e-6, atol=1e-9)
        assert run.files[name].alerts.tolist() == [float(r.alert) for r in results]
    assert spells >= 1 and (run.files["a/daily.csv"].scores == SPELL_SCORE).any()
    assert (run.files["b/wander.csv"].scores > LIKELIHOOD_TOP).any()


def test_detections_are_told_apart_by_what_scored_them() -> None:
    """A record, a new level inside the range, a novel spell and a likelihood, each over the
    threshold after the probation; nothing during it."""
    start = datetime(2026, 1, 1)
    values = np.tile([1.0, 9.0], 50)
    values[[60, 70, 80, 90]] = [12.0, 5.0, 9.0, 1.0]
    scores = np.full(100, 0.1)
    scores[[5, 60, 70]] = 0.9993  # 5: in the probation (15 records of 100)
    scores[80], scores[90] = SPELL_SCORE, 0.95
    scored = nab_eval.NabFile([start + timedelta(minutes=i) for i in range(100)], values, scores, np.zeros(100), scores)
    kinds = detection_kinds(scored, 0.9)
    assert {k: v.tolist() for k, v in kinds.items()} == {
        "record": [60],
        "level": [70],
        "spell": [80],
        "likelihood": [90],
    }
