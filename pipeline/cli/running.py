"""Running the pipeline: `gruwatch worker`, `demo` and `bench`."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import console, load_settings
from pipeline.cli.services import up
from pipeline.cli.streams import print_alert
from pipeline.errors import GruwatchError
from pipeline.settings import KINDS


@click.command()
@click.option(
    "--topics",
    default=None,
    help="Comma-separated input topics (default: every topic in settings).",
)
@click.option(
    "--model-dir",
    "model_dirs",
    multiple=True,
    metavar="KIND=DIR",
    help="Model directory for a kind (repeatable); default: the shipped models.",
)
@click.option("--namespace", default=None, help="State namespace (default: settings, 'live').")
@click.option("--group", default=None, help="Consumer group (default: settings, 'gruwatch-worker').")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Max records per batch.")
@click.option("--max-wait-ms", type=click.IntRange(min=1), default=None, help="Max wait to fill a batch.")
@click.option(
    "--http-port",
    type=click.IntRange(min=0, max=65535),
    default=None,
    help="Port for /health and /metrics on 127.0.0.1 (0 = off).",
)
@click.option(
    "--idle-exit",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Exit after this many seconds without a record (for batch jobs and tests).",
)
@click.option(
    "--from-latest",
    is_flag=True,
    help="A new consumer group starts at the end, not the oldest record.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=1, max=64),
    default=None,
    help="Worker processes in the group, one per core (default: settings, 1); /health on port+i.",
)
def worker(
    topics: str | None,
    model_dirs: tuple[str, ...],
    namespace: str | None,
    group: str | None,
    batch_size: int | None,
    max_wait_ms: int | None,
    http_port: int | None,
    idle_exit: float | None,
    from_latest: bool,
    processes: int | None,
) -> None:
    """Score input topics with the GRU, keep state in Redis, publish alerts. Stop with Ctrl-C/SIGTERM."""
    import asyncio

    from pipeline.modeling import load_worker_models
    from pipeline.worker import Worker

    settings = load_settings()
    dirs: dict[str, Path] = {str(k): v for k, v in settings.model_dirs.items()}
    for item in model_dirs:
        kind, sep, directory = item.partition("=")
        if not sep or kind not in KINDS:
            raise click.BadParameter(f"expected KIND=DIR with KIND one of {', '.join(KINDS)}", param_hint="--model-dir")
        dirs[kind] = Path(directory)
    chosen = [t.strip() for t in topics.split(",")] if topics else list(settings.topics)
    unknown = [t for t in chosen if t not in settings.topics]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)} not in GRUWATCH_TOPICS (topic → kind)", param_hint="--topics")
    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "group_id": group,
            "batch_size": batch_size,
            "batch_max_wait_ms": max_wait_ms,
            "http_port": http_port,
            "auto_offset_reset": "latest" if from_latest else None,
            "worker_processes": processes,
        }.items()
        if v is not None
    }
    if overrides:
        settings = settings.model_copy(update=overrides)
    detectors = load_worker_models(dirs, sorted({settings.topics[t] for t in chosen}))
    without = [t for t in chosen if settings.topics[t] not in detectors]
    if without:
        console.print(f"no model for {', '.join(without)}; not consuming them (train one: gruwatch train)")
    chosen = [t for t in chosen if t not in without]
    if not chosen:
        raise GruwatchError("no input topic has a model")
    console.print(
        f"worker: {', '.join(chosen)} → {settings.alerts_topic}; models "
        + ", ".join(d.ident for d in detectors.values())
    )
    if settings.worker_processes > 1:
        from pipeline.processes import WorkerJob, combined, run_processes

        console.print(f"worker: {settings.worker_processes} processes in group {settings.group_id}")
        job = WorkerJob(
            settings, dirs, chosen, namespace=namespace, idle_exit=idle_exit, log_level=logging.getLogger().level
        )
        each = run_processes(job, settings.worker_processes)
        stats = combined(each)
        console.print(
            "per process: " + " + ".join(f"{s.events:,}" for s in each) + " events"
            f"; partitions moved {stats.rebalances} times while scoring"
        )
    else:
        stats = asyncio.run(Worker(settings, detectors, chosen, namespace=namespace).run(max_idle_s=idle_exit))
    elapsed = time.perf_counter() - stats.started if stats.started else 0.0
    console.print(
        f"worker stopped: {stats.events} events, {stats.scored} scored, {stats.dead} dead letters, "
        f"{stats.alerts} alerts, {stats.fenced} redelivered and skipped, {stats.retries} retries"
        + (f", {stats.events / elapsed:,.0f} events/s" if elapsed else "")
    )


@click.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=5),
    default=60,
    show_default=True,
    help="Seconds to run.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=150,
    show_default=True,
    help="Events/s per kind.",
)
@click.option("--keys", type=click.IntRange(min=1), default=40, show_default=True, help="Streams per kind.")
@click.option("--anomaly-rate", type=click.FloatRange(0, 0.5), default=0.01, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(duration: float, rate: float, keys: int, anomaly_rate: float, as_json: bool) -> None:
    """Run the pipeline live: stack, worker, three producers, alerts; then a summary."""
    from pipeline.demo import run_demo

    click.get_current_context().invoke(up)
    settings = load_settings()
    out = Console(soft_wrap=True)
    out.print("time (UTC)           kind       severity  score  stream / top features", style="bold")

    def show(alert: dict[str, Any]) -> None:
        meta = alert.get("meta") or {}
        print_alert(out, alert, f"  [injected {meta['anomaly']}]" if "anomaly" in meta else "")

    result = run_demo(settings, duration, rate, keys, anomaly_rate, show, lambda m: console.print(m, markup=False))
    summary = result.summary()
    if as_json:
        click.echo(orjson.dumps(summary).decode())
        return
    table = Table(title="gruwatch demo summary")
    table.add_column("")
    table.add_column("value", justify="right")
    for kind, count in summary["events"].items():
        table.add_row(f"{kind} events", f"{count:,}")
    for key_ in (
        "events_per_s",
        "alerts",
        "true_alerts",
        "incidents",
        "incidents_caught",
        "incidents_missed",
    ):
        table.add_row(key_.replace("_", " "), str(summary[key_]))
    for kind, counts in summary["by_kind"].items():
        table.add_row(f"  {kind} caught", f"{counts['caught']}/{counts['incidents']}")
    out.print(table)
    out.print(
        "Next: `gruwatch worker` (score the topics), `gruwatch replay FILE` (send a recording), "
        "`gruwatch alerts --from-beginning` (read alerts), `gruwatch evaluate --kind network --data FILE`."
    )


@click.command()
@click.option(
    "--only",
    "parts",
    multiple=True,
    type=click.Choice(["worker", "latency", "model", "replay", "faust"]),
    help="Run only these parts (repeatable).",
)
@click.option("--events", type=click.IntRange(min=1000), default=None, help="Events per part.")
@click.option("--quick", is_flag=True, help="A short run (under a minute).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def bench(parts: tuple[str, ...], events: int | None, quick: bool, as_json: bool) -> None:
    """Measure throughput against baselines run side by side (ratios hold on a noisy machine)."""
    from pipeline.bench import PARTS, QUICK_PARTS, run_bench

    settings = load_settings()
    chosen = list(parts) or (QUICK_PARTS if quick else list(PARTS))
    # Two worker processes read 150,000 events in about a second: too short a window to time on
    # a shared machine. The full run reads 400,000 (the latency, replay and Faust parts cap theirs).
    results = run_bench(settings, chosen, events or (30_000 if quick else 400_000), lambda m: console.print(m))
    if as_json:
        click.echo(orjson.dumps(results).decode())
    else:
        table = Table(title="gruwatch bench")
        table.add_column("figure")
        table.add_column("value", justify="right")
        for key, value in results.items():
            table.add_row(key, str(value))
        Console().print(table)
