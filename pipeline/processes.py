"""One worker per CPU core: ``gruwatch worker --processes N`` runs N workers in one consumer group.

The hot path is Python and holds the GIL, so a second core needs a second process. The
processes share nothing but the consumer group (Kafka splits the partitions between them) and
Redis (a stream lives in one partition, so in one process): the effectively-once contract of a
single worker holds for each. Process ``i`` serves /health and /metrics on ``http_port + i``.
SIGINT/SIGTERM to the parent stop every child gracefully; a child that fails fails the whole.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from pipeline.errors import GruwatchError
from pipeline.lifecycle import StopFlag
from pipeline.settings import Settings
from pipeline.worker import WorkerStats

__all__ = ["WorkerJob", "combined", "run_processes"]

_JOIN_TIMEOUT_S = 120  # a process that is not there by then is not waited for


@dataclass(frozen=True)
class WorkerJob:
    """Everything a worker process needs (picklable: it crosses a spawn)."""

    settings: Settings
    model_dirs: dict[str, Path]
    topics: list[str]
    namespace: str | None = None
    idle_exit: float | None = None
    log_level: int = logging.WARNING  # the parent's (`gruwatch -v`): a spawned child starts unconfigured


def _child(job: WorkerJob, index: int, ready: Any, assigned: Any, results: Connection) -> None:
    import asyncio

    from pipeline.modeling import load_worker_models
    from pipeline.worker import Worker

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    logging.basicConfig(level=job.log_level, format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s")
    settings = job.settings
    if settings.http_port:
        settings = settings.model_copy(update={"http_port": settings.http_port + index})
    detectors = load_worker_models(job.model_dirs, sorted({settings.topics[t] for t in job.topics}))

    async def peers_assigned() -> None:
        # The first process in the group is assigned every partition; each later one makes the
        # group rebalance. Consuming before the last has joined would score a batch or two alone
        # and then stop for the rebalance (~0.2-1 s), so every process waits for its first
        # assignment and then for the others': a process joins only once all earlier members
        # have rejoined, so by then the group holds every process.
        if await worker.first_assignment():
            with suppress(threading.BrokenBarrierError):  # the parent aborts it when stopping
                await asyncio.to_thread(assigned.wait, _JOIN_TIMEOUT_S)

    worker = Worker(settings, detectors, job.topics, namespace=job.namespace, before_consuming=peers_assigned)
    # Join the group together (models load at different speeds): one rebalance, not one per process.
    with suppress(threading.BrokenBarrierError):
        ready.wait(timeout=_JOIN_TIMEOUT_S)
    stats = asyncio.run(worker.run(max_idle_s=job.idle_exit))
    results.send(stats)


def run_processes(job: WorkerJob, processes: int) -> list[WorkerStats]:
    """Run ``processes`` workers to the end (stopped, or idle for ``job.idle_exit``); their stats."""
    context = multiprocessing.get_context("spawn")  # no forked torch or event-loop state
    children: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    ready, assigned = context.Barrier(processes), context.Barrier(processes)
    for index in range(processes):
        receive, send = context.Pipe(duplex=False)
        child = context.Process(
            target=_child, args=(job, index, ready, assigned, send), name=f"gruwatch-worker-{index}", daemon=False
        )
        child.start()
        send.close()
        children.append((child, receive))

    def stop() -> None:
        for barrier in (ready, assigned):
            barrier.abort()  # a process waiting for its peers stops waiting
        for child, _ in children:
            if child.is_alive():
                with suppress(ProcessLookupError):
                    child.terminate()  # SIGTERM: the worker finishes its batch and leaves the group

    with StopFlag(on_stop=stop):
        stats: list[WorkerStats] = []
        failed: list[str] = []
        running: dict[object, tuple[multiprocessing.process.BaseProcess, Connection]] = {
            c.sentinel: (c, r) for c, r in children
        }
        while running:
            for sentinel in wait(list(running)):  # type: ignore[arg-type]  # sentinels are fds
                done, receive = running.pop(sentinel)
                done.join()
                if receive.poll():
                    stats.append(receive.recv())
                if done.exitcode != 0:
                    failed.append(f"{done.name} exited with {done.exitcode}")
                    stop()  # one down: take the others down too, loudly
    if failed:
        raise GruwatchError("; ".join(failed))
    return stats


def combined(stats: list[WorkerStats]) -> WorkerStats:
    """One set of figures for all processes (their clocks are the same monotonic clock)."""
    total = WorkerStats()
    for s in stats:
        for name in ("batches", "events", "scored", "dead", "alerts", "fenced", "retries", "rebalances"):
            setattr(total, name, getattr(total, name) + getattr(s, name))
    started = [s.started for s in stats if s.started]
    firsts = [s.first_record for s in stats if s.first_record]
    total.started = min(started, default=0.0)
    total.first_record = min(firsts, default=0.0)
    total.last_batch = max((s.last_batch for s in stats), default=0.0)
    total.peak_rss_mb = max((s.peak_rss_mb for s in stats), default=0.0)  # per process, not summed
    return total
