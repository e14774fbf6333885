"""`gruwatch bench`: figures as JSON, each beside a baseline measured in the same run.

This machine is shared and noisy, so absolute numbers drift; the ratios are what to compare.

Parts: ``worker`` (end-to-end worker throughput, one process and one per core, against a raw
aiokafka consumer and a naive per-event pipeline, Redis bytes per stream, worker RSS),
``latency`` (event produced → state written at a fixed offered load), ``model`` (the detector's step
cost by kind, batch 1 vs 1,024, against the bare GRU), ``replay`` (gruwatch replay against
kafka-python's raw send loop) and
``faust`` (a do-nothing Faust agent on the same topic: why the worker reads with aiokafka).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from pipeline import kafka
from pipeline.produce import GENERATORS
from pipeline.replay import replay
from pipeline.settings import Settings
from pipeline.transport_floor import read_floor_in_fresh_process

__all__ = ["PARTS", "bench_replay", "run_bench"]

_FLOOR_WINDOW_MIN_S = 0.25  # a shorter floor read is too few fetches to be a rate


@contextmanager
def _scratch_topics(settings: Settings, count: int, partitions: int) -> Iterator[list[str]]:
    names = [f"bench-{uuid.uuid4().hex[:10]}" for _ in range(count)]
    kafka.ensure_topics(settings, names, partitions=partitions)
    try:
        yield names
    finally:
        with kafka.admin(settings, timeout_ms=15000) as client:
            client.delete_topics(names)


def _mixed_events(total: int, keys: int, seed: int) -> list[dict[str, Any]]:
    """Events of all three kinds, in equal parts."""
    per_kind = total // len(GENERATORS)
    events: list[dict[str, Any]] = []
    for _kind, cls in GENERATORS.items():
        events.extend(cls(keys=max(1, keys // len(GENERATORS)), seed=seed).events(per_kind))
    return events


def _raw_send_loop(settings: Settings, topic: str, records: list[tuple[bytes, bytes]], **config: Any) -> float:
    """kafka-python at its simplest: pre-encoded records, one send each, one flush. Returns events/s."""
    producer = kafka.producer(settings, **config)
    producer.send(topic, b"warm-up").get(timeout=30)  # metadata and connection outside the timing
    started = time.perf_counter()
    for key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    elapsed = time.perf_counter() - started
    producer.close()
    return len(records) / elapsed


def bench_replay(settings: Settings, events: int, log: Callable[[str], None]) -> dict[str, Any]:
    data = _mixed_events(min(events, 150_000), keys=3000, seed=7)  # ~6 s a loop: plenty to measure
    records = [(e["key"].encode(), orjson.dumps(e)) for e in data]
    with (
        tempfile.TemporaryDirectory() as tmp,
        _scratch_topics(settings, 3, settings.topic_partitions) as topics,
    ):
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"".join(value + b"\n" for _, value in records))
        log(f"replay: raw kafka-python send loop, {len(records)} events (gruwatch's producer settings)")
        floor = _raw_send_loop(settings, topics[0], records)
        log("replay: raw kafka-python send loop with kafka-python's default producer settings")
        default = _raw_send_loop(settings, topics[1], records, linger_ms=0, batch_size=16384, compression_type=None)
        log("replay: gruwatch replay (read, validate, encode, send)")
        stats = replay(settings, [path], topics[2], fmt="jsonl")
    return {
        "replay_events": stats.sent,
        "replay_eps": round(stats.events_per_s, 1),
        "replay_floor_eps": round(floor, 1),
        "replay_raw_default_eps": round(default, 1),
        "ratio_replay_floor": round(stats.events_per_s / floor, 3),
        "producer": {
            "linger_ms": settings.producer_linger_ms,
            "batch_bytes": settings.producer_batch_bytes,
            "compression": settings.producer_compression,
            "acks": settings.producer_acks,
        },
    }


def _preload(settings: Settings, events: int, streams: int, partitions: int = 4) -> tuple[dict[str, str], int]:
    """Fresh topics (one per kind) holding ``events`` mixed events over ``streams`` streams."""
    run = uuid.uuid4().hex[:8]
    topics = {kind: f"bench-{run}-{kind}" for kind in GENERATORS}
    kafka.ensure_topics(settings, list(topics.values()), partitions=partitions)
    producer = kafka.producer(settings)
    per_kind = events // len(GENERATORS)
    for kind, cls in GENERATORS.items():
        for event in cls(keys=streams // len(GENERATORS), seed=11).events(per_kind):
            producer.send(topics[kind], key=event["key"].encode(), value=orjson.dumps(event))
    producer.flush()
    producer.close()
    return topics, per_kind * len(GENERATORS)


def _significant(ratio: float) -> float:
    """Four significant digits: a short run's floor can be so fast that four decimals read 0."""
    return float(f"{ratio:.4g}")


def _drop_topics(settings: Settings, topics: list[str]) -> None:
    with kafka.admin(settings, timeout_ms=15000) as client:
        client.delete_topics(topics)


def _state_bytes(settings: Settings, namespace: str, kinds: list[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Per kind, the mean Redis MEMORY USAGE of up to 100 of the streams' states the workers wrote
    under ``namespace``, and one state's packed size. Sampled kind by kind: a sample of all keys
    mixes the kinds as the keys' hashes fall, and generic states are four times the others."""
    import redis as redis_sync

    from pipeline.state import state_key_prefix

    client = redis_sync.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        usage: dict[str, float] = {}
        sizes: dict[str, int] = {}
        for kind in kinds:
            matching = client.scan_iter(match=f"{state_key_prefix(namespace, '*', kind)}*", count=1000)
            keys = [k for _, k in zip(range(100), matching, strict=False)]
            if keys:
                usage[kind] = round(sum(client.memory_usage(k, samples=0) or 0 for k in keys) / len(keys), 1)
                sizes[kind] = len(client.get(keys[0]) or b"")
        return usage, sizes
    finally:
        client.close()


def _worker_settings(settings: Settings, topics: dict[str, str]) -> Settings:
    return settings.model_copy(
        update={
            "topics": {t: k for k, t in topics.items()},
            "group_id": f"bench-worker-{uuid.uuid4().hex[:8]}",
            "http_port": 0,
            "state_ttl_s": 3600,
        }
    )


def _model_dirs(settings: Settings) -> dict[str, Path]:
    return {str(kind): path for kind, path in settings.model_dirs.items()}


def _naive(
    settings: Settings,
    detectors: dict[str, Any],
    sample: list[tuple[str, dict[str, Any]]],
    namespace: str,
) -> float:
    """One Redis GET, one model step and one SET per event: what batching must beat."""
    import redis as redis_sync

    from pipeline.events import decode_event
    from pipeline.state import StateShape, StoredState, pack_state, state_key, unpack_state

    client = redis_sync.Redis.from_url(settings.redis_url.get_secret_value())
    shapes = {kind: StateShape.of(detector) for kind, detector in detectors.items()}
    started = time.perf_counter()
    for offset, (kind, raw) in enumerate(sample):
        detector = detectors[kind]
        event = decode_event(orjson.dumps(raw), features=detector.spec.names)
        key = state_key(namespace, detector.ident, kind, event.key)
        stored_raw = client.get(key)
        stored = unpack_state(stored_raw, shapes[kind]) if isinstance(stored_raw, bytes) else None
        state = stored.stream if stored else detector.new_state()
        _, (new,) = detector.step([state], [(event.ts, event.values)])
        client.set(key, pack_state(StoredState(new, 0, offset), shapes[kind]), ex=3600)
    elapsed = time.perf_counter() - started
    client.close()
    return len(sample) / elapsed


def bench_worker(settings: Settings, events: int, log: Callable[[str], None]) -> dict[str, Any]:
    from pipeline.modeling import load_worker_models
    from pipeline.processes import WorkerJob, combined, run_processes
    from pipeline.worker import WorkerStats

    streams = 10_000
    log(f"worker: preloading {events:,} mixed events over {streams:,} streams into fresh topics")
    topics, total = _preload(settings, events, streams)
    try:
        # Three reads, the median: one read of 400,000 events lasts ~0.5 s, short enough for the
        # machine's other work to move a single read.
        log("worker: raw aiokafka consumer (the transport floor), three reads, each in a fresh process")
        floors = [
            read_floor_in_fresh_process(settings, list(topics.values()), total, kafka.BATCH_FETCH) for _ in range(3)
        ]
        floor = statistics.median(floors)
        detectors = load_worker_models(_model_dirs(settings), list(topics))

        def run_workers(processes: int, namespace: str) -> WorkerStats:
            # Each a fresh `gruwatch worker` process, as a user runs it (not this process, which
            # holds the preloaded events): a fresh group and namespace, the same events.
            job = WorkerJob(
                _worker_settings(settings, topics),
                _model_dirs(settings),
                list(topics.values()),
                namespace=namespace,
                idle_exit=2.0,
            )
            stats = combined(run_processes(job, processes))
            if stats.events != total:
                raise RuntimeError(f"{processes} worker process(es) read {stats.events} of {total} events")
            return stats

        namespace = f"bench-{uuid.uuid4().hex[:8]}"
        log("worker: gruwatch worker, one process, from start to caught up (lag 0, states written)")
        one = run_workers(1, namespace)
        one_process = total / (one.last_batch - one.first_record)
        with_start = total / (one.last_batch - one.started)
        processes = max(1, os.cpu_count() or 1)
        log(f"worker: gruwatch worker --processes {processes}, same events, a fresh group and namespace")
        many = run_workers(processes, f"bench-{uuid.uuid4().hex[:8]}")
        worker_eps = total / (many.last_batch - many.first_record)
        redis_bytes, value_bytes = _state_bytes(settings, namespace, list(topics))
        log("worker: naive per-event pipeline (GET, step, SET per event)")
        sample = [(kind, e) for kind, cls in GENERATORS.items() for e in cls(keys=200, seed=12).events(700)]
        naive = _naive(settings, detectors, sample, f"bench-naive-{uuid.uuid4().hex[:8]}")
    finally:
        _drop_topics(settings, list(topics.values()))
    floor_window_s = total / floor
    if floor_window_s < _FLOOR_WINDOW_MIN_S:
        # A topic that arrives in a fetch or two times the broker's first response, not a rate
        # (the full bench's 400,000 events take ~0.45 s: ~40 fetches, reads agree within ~3 %).
        log(f"worker: the floor read {total:,} events in {floor_window_s * 1000:.0f} ms — too short for ratio_floor")
        log("worker: to compare with the floor, run the full bench (400,000 events)")
    return {
        "worker_events": total,
        "floor_window_s": round(floor_window_s, 3),
        "worker_streams": streams,
        "worker_eps": round(worker_eps, 1),
        "worker_processes": processes,
        "worker_eps_1proc": round(one_process, 1),
        "worker_eps_with_startup": round(with_start, 1),  # from subscribing: the group join included
        "floor_eps": round(floor, 1),
        "floor_eps_reads": [round(f, 1) for f in floors],
        "naive_eps": round(naive, 1),
        # The floor is what the topic can deliver to one consumer: can the worker (all cores) keep up?
        "ratio_floor": _significant(worker_eps / floor),
        "ratio_floor_1proc": _significant(one_process / floor),
        # The naive pipeline is one process: compared like for like, process to process.
        "ratio_naive": round(one_process / naive, 2),
        "ratio_naive_all_cores": round(worker_eps / naive, 2),
        "worker_batches": many.batches,
        # Partitions moved while the processes scored: each stalls the run (a timing to distrust).
        "worker_rebalances": many.rebalances,
        # Redis MEMORY USAGE of a stream's state, by kind, and its mean over the kinds (the bench's
        # streams are a quarter each).
        "redis_bytes_per_stream": round(sum(redis_bytes.values()) / max(len(redis_bytes), 1), 1),
        "redis_bytes_by_kind": redis_bytes,
        "state_value_bytes": value_bytes,
        # Peak RSS of one `gruwatch worker` process (the largest of the --processes run).
        "worker_rss_mb": round(many.peak_rss_mb, 1),
    }


def bench_latency(settings: Settings, events: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Event produced → state written, at a fixed offered load (default 5,000 events/s)."""
    import asyncio
    import threading

    from pipeline.modeling import load_worker_models
    from pipeline.pacing import Pacer
    from pipeline.worker import Worker

    rate = 5000.0
    count = min(events, 50_000)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-{run}-latency"
    kafka.ensure_topics(settings, [topic], partitions=4)
    payload = [(e["key"].encode(), orjson.dumps(e)) for e in GENERATORS["network"](keys=2000, seed=13).events(count)]
    latencies: list[float] = []
    try:
        wsettings = _worker_settings(settings, {"network": topic})
        worker = Worker(
            wsettings,
            load_worker_models(_model_dirs(settings), ["network"]),
            [topic],
            namespace=f"bench-{run}",
            latencies=latencies,
        )

        def offer() -> None:
            producer = kafka.producer(settings, linger_ms=1)
            pacer = Pacer(max_rate=rate)
            for key, value in payload:
                pacer.wait(0)
                producer.send(topic, key=key, value=value)
            producer.flush()
            producer.close()

        async def main() -> None:
            task = asyncio.create_task(worker.run(max_idle_s=2.0))
            while worker.stats.started == 0.0 and not task.done():
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # joined and assigned before the load starts
            thread = threading.Thread(target=offer)
            log(f"latency: offering {count:,} events at {rate:,.0f}/s")
            thread.start()
            await task
            thread.join()

        asyncio.run(main())
    finally:
        _drop_topics(settings, [topic])
    values = sorted(latencies)

    def pct(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else float("nan")

    return {
        "latency_rate_eps": rate,
        "latency_events": len(values),
        "latency_ms": {
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": round(values[-1], 1) if values else None,
        },
    }


def _per_call_us(call: Callable[[], object], repeats: int) -> float:
    """Mean wall time of ``call`` in µs over ``repeats`` calls, after one untimed call."""
    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats * 1e6


def bench_model(settings: Settings, events: int, log: Callable[[str], None]) -> dict[str, Any]:
    """The detector's step in the worker's form (arrays, one math thread), one stream vs 1,024
    streams per call, one event each, for every shipped kind; its baseline is the bare GRU (input
    projection, recurrence and head: ``GRUScorer.step``) on the same batch, so the ratio is what
    the normalisation, the rules and the calibration cost on top of the network. The top-level
    ``step_us_*`` figures are the network kind's."""
    import numpy as np

    from models.detector import StateBatch
    from pipeline.lifecycle import single_math_thread
    from pipeline.modeling import load_model

    by_kind: dict[str, dict[str, float]] = {}
    with single_math_thread():
        for kind, generator in GENERATORS.items():
            detector = load_model(None, kind, scoring_only=True)
            firsts: dict[str, tuple[int, dict[str, float]]] = {}
            for e in generator(keys=1024, seed=14).events(20_000):
                firsts.setdefault(e["key"], (e["ts"], {k: float(v) for k, v in e["values"].items()}))
            batch = list(firsts.values())[:1024]
            figures: dict[str, float] = {}
            for size, repeats in ((1, 300), (1024, 30)):
                states = StateBatch.of(
                    [detector.new_state() for _ in range(size)], detector.hidden, detector.spec.norm_size
                )
                ts = np.array([t for t, _ in batch[:size]], dtype=np.int64)
                values = [v for _, v in batch[:size]]
                step = _per_call_us(partial(detector.step_batch, states, ts, values), repeats)
                scorer = detector.scorer
                blank = (np.zeros((size, scorer.n_inputs)), np.zeros((size, scorer.n_targets)))
                gru = _per_call_us(partial(scorer.step, scorer.initial_state(size), *blank), repeats)
                figures[f"step_us_batch_{size}"] = round(step, 1)
                figures[f"step_us_per_event_batch_{size}"] = round(step / size, 2)
                figures[f"gru_us_batch_{size}"] = round(gru, 1)
                figures[f"ratio_gru_batch_{size}"] = round(step / gru, 2)
            by_kind[kind] = figures
            log(
                f"model {kind}: step {figures['step_us_batch_1']} µs at batch 1 "
                f"({figures['ratio_gru_batch_1']}× the bare GRU), {figures['step_us_batch_1024']} µs at batch 1024 "
                f"({figures['ratio_gru_batch_1024']}×)"
            )
    return {"math_threads": 1, **by_kind["network"], "step_by_kind": by_kind}


def bench_faust(settings: Settings, events: int, log: Callable[[str], None]) -> dict[str, Any]:
    """A do-nothing Faust agent (take_events) against a raw aiokafka consumer on the same topic."""
    import os
    import socket
    import subprocess
    import sys

    count = min(events, 100_000)
    run = uuid.uuid4().hex[:8]
    topic = f"bench-{run}-faust"
    kafka.ensure_topics(settings, [topic], partitions=4)
    producer = kafka.producer(settings)
    for e in GENERATORS["network"](keys=2000, seed=15).events(count):
        producer.send(topic, key=e["key"].encode(), value=orjson.dumps(e))
    producer.flush()
    producer.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        web_port = sock.getsockname()[1]
    try:
        log(f"faust: raw aiokafka consumer and a do-nothing Faust agent over {count:,} events")
        floor = read_floor_in_fresh_process(settings, [topic], count, kafka.BATCH_FETCH)
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **os.environ,
                "GW_FLOOR_TOPIC": topic,
                "GW_FLOOR_EVENTS": str(count),
                "GW_FLOOR_APP": f"bench-faust-{run}",
                "GW_FLOOR_WEB_PORT": str(web_port),
            }
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "faust",
                    "-A",
                    "pipeline.faust_floor",
                    "--datadir",
                    tmp,
                    "worker",
                    "-l",
                    "warn",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
                cwd=tmp,
            )
        lines = [line for line in (result.stdout + result.stderr).splitlines() if "FAUST_EPS" in line]
        if not lines:
            raise RuntimeError(f"the Faust floor run printed no figure: {result.stderr[-800:]}")
        faust_eps = float(lines[-1].split("FAUST_EPS", 1)[1].split()[0])
    finally:
        _drop_topics(settings, [topic])
    return {
        "faust_eps": round(faust_eps, 1),
        "faust_floor_raw_eps": round(floor, 1),
        "ratio_faust_raw": round(faust_eps / floor, 4),
    }


# Latency first: it measures a steady load, and after the worker part the broker is still
# deleting that part's 400,000-event topics (p99 149 ms alone, 348-619 ms right after it).
PARTS: dict[str, Callable[[Settings, int, Callable[[str], None]], dict[str, Any]]] = {
    "latency": bench_latency,
    "worker": bench_worker,
    "model": bench_model,
    "replay": bench_replay,
    "faust": bench_faust,
}
QUICK_PARTS = ["latency", "worker", "model", "replay"]


def run_bench(settings: Settings, parts: list[str], events: int, log: Callable[[str], None]) -> dict[str, Any]:
    results: dict[str, Any] = {"events": events, "parts": parts}
    for part in parts:
        results.update(PARTS[part](settings, events, log))
    return results
