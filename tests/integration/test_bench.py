"""`gruwatch bench --quick --json` runs every part against the real services and reports every figure."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson

from pipeline.settings import Settings


def test_quick_bench_reports_every_figure(kafka_up: Settings) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "bench", "--quick", "--events", "6000", "--json"],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = orjson.loads(result.stdout)
    for key in (
        "worker_eps",
        "floor_eps",
        "naive_eps",
        "ratio_floor",
        "ratio_naive",
        "worker_eps_1proc",
        "worker_processes",
        "redis_bytes_per_stream",
        "replay_eps",
        "replay_floor_eps",
        "step_us_batch_1",
        "step_us_batch_1024",
        "worker_rss_mb",
    ):
        assert isinstance(figures[key], int | float) and figures[key] > 0, key
    # A worker process's own peak (VmHWM): Python, numpy, aiokafka and the models, without torch.
    assert 30 < figures["worker_rss_mb"] < 400
    assert set(figures["latency_ms"]) >= {"p50", "p95", "p99"}
    assert figures["latency_ms"]["p50"] <= figures["latency_ms"]["p95"] <= figures["latency_ms"]["p99"]
    # The ratios are the figures divided by their baselines from the same run.
    assert abs(figures["ratio_floor"] - figures["worker_eps"] / figures["floor_eps"]) < 1e-3
    # Within the rounding of the ratio (2 places) and of the rates it divides (1 place): on a busy
    # machine the naive pipeline is slow enough for the rates' rounding to show (0.0102 off once).
    naive = figures["naive_eps"]
    for ratio, worker in (("ratio_naive", "worker_eps_1proc"), ("ratio_naive_all_cores", "worker_eps")):
        exact = figures[worker] / naive
        assert abs(figures[ratio] - exact) <= 0.005 + 0.05 * (1 + exact) / naive + 1e-9, ratio
    assert figures["worker_events"] == 6000 and figures["latency_events"] == 6000
    # Redis bytes of a stream's state, by kind: a generic state (its rules' memory) is the largest.
    by_kind = figures["redis_bytes_by_kind"]
    assert set(by_kind) == {"network", "financial", "sensor", "generic"}
    assert max(by_kind, key=by_kind.get) == "generic"
    assert abs(figures["redis_bytes_per_stream"] - sum(by_kind.values()) / 4) < 0.1
    # The step API by kind, each beside the bare GRU on the same batch; the top level is network's.
    steps = figures["step_by_kind"]
    assert set(steps) == {"network", "financial", "sensor", "generic"}
    for kind, kind_figures in steps.items():
        for size in (1, 1024):
            step, gru = kind_figures[f"step_us_batch_{size}"], kind_figures[f"gru_us_batch_{size}"]
            assert step > 0 and gru > 0, (kind, size)
            # Within the rounding of the ratio (2 places) and of the times (1 place).
            assert abs(kind_figures[f"ratio_gru_batch_{size}"] - step / gru) <= 0.005 + 0.05 * (1 + step / gru) / gru
    assert figures["step_us_batch_1024"] == steps["network"]["step_us_batch_1024"]
    # The processes start together: no partition moves while they are timed.
    assert figures["worker_rebalances"] == 0
