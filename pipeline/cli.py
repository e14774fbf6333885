"""The `gruwatch` command: a thin click layer over the pipeline modules.

Errors gruwatch raises on purpose, and bad arguments, print one line to stderr and exit non-zero;
only a bug gives a traceback.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO, cast

import click
import orjson
from rich.console import Console
from rich.table import Table

from pipeline import kafka as kafka_io
from pipeline.errors import GruwatchError
from pipeline.settings import KINDS, Kind, Settings, get_settings
from pipeline.stack import LocalKafka, LocalRedis, stack_status
from producers.files import Format

__all__ = ["cli", "main"]

logger = logging.getLogger(__name__)

console = Console(stderr=True, soft_wrap=True)


def _settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise GruwatchError(f"bad GRUWATCH_* setting: {' '.join(first[:3])}") from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """gruwatch: streaming anomaly detection on Kafka with a stateful GRU."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every failed connection attempt at ERROR; our own errors say it once.
    logging.getLogger("kafka").setLevel(max(level, logging.CRITICAL if verbose == 0 else level))


@cli.command()
@click.option("--kafka/--no-kafka", default=True, help="Start the Kafka broker.")
@click.option("--redis/--no-redis", "with_redis", default=True, help="Start Redis.")
@click.option("--topics/--no-topics", default=True, help="Create gruwatch's topics.")
def up(kafka: bool, with_redis: bool, topics: bool) -> None:
    """Start the local Kafka broker and Redis (does nothing for what already runs)."""
    settings = _settings()
    if with_redis:
        started = time.monotonic()
        redis_result = LocalRedis(settings).start()
        console.print(
            f"redis  {redis_result:8} {settings.redis_host_port[0]}:{settings.redis_host_port[1]}"
            f" ({time.monotonic() - started:.1f} s)"
        )
    if kafka:
        broker = LocalKafka(settings)
        started = time.monotonic()
        with console.status("starting Kafka…"):
            result = broker.start()
        console.print(f"kafka  {result:8} {broker.address} ({time.monotonic() - started:.1f} s)")
    if topics:  # also against a Kafka gruwatch did not start (`up --no-kafka --no-redis`)
        created = kafka_io.ensure_topics(settings, [*settings.topics, settings.alerts_topic, settings.deadletter_topic])
        console.print(f"topics created: {', '.join(created)}" if created else "topics present")


@cli.command()
@click.option("--kafka/--no-kafka", default=True, help="Stop the Kafka broker.")
@click.option("--redis/--no-redis", "with_redis", default=True, help="Stop Redis.")
def down(kafka: bool, with_redis: bool) -> None:
    """Stop the Kafka broker and Redis that `gruwatch up` started."""
    settings = _settings()
    if kafka:
        stopped = LocalKafka(settings).stop()
        console.print(f"kafka  {'stopped' if stopped else 'was not running (or not started by gruwatch)'}")
    if with_redis:
        stopped = LocalRedis(settings).stop()
        console.print(f"redis  {'stopped' if stopped else 'was not running (or not started by gruwatch)'}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Whether Kafka and Redis answer, their versions, and gruwatch's topics. Exit 1 if one is down."""
    settings = _settings()
    statuses = stack_status(settings)
    if as_json:
        click.echo(orjson.dumps({name: s.as_dict() for name, s in statuses.items()}).decode())
    else:
        table = Table(title="gruwatch stack")
        for column in ("service", "up", "version", "address", "started by gruwatch", "notes"):
            table.add_column(column)
        for name, s in statuses.items():
            notes = s.error or ""
            if name == "kafka" and s.up:
                topics = s.details.get("topics", {})
                missing = [t for t, d in topics.items() if not d["exists"]]
                notes = f"{len(topics) - len(missing)}/{len(topics)} topics" + (
                    f"; missing: {', '.join(missing)}" if missing else ""
                )
            table.add_row(
                name,
                "yes" if s.up else "[red]no[/red]",
                s.version or "-",
                s.address,
                f"pid {s.pid}" if s.managed else "no",
                notes,
            )
        Console().print(table)
    if not all(s.up for s in statuses.values()):
        sys.exit(1)


def _start_ms(text: str) -> int:
    from pipeline.errors import InvalidEvent
    from pipeline.events import parse_ts

    if text == "now":
        return int(time.time() * 1000)
    try:
        return parse_ts(text)
    except InvalidEvent as exc:
        raise click.BadParameter(exc.reason, param_hint="--start") from None


def _print_summary(title: str, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        console.print(f"{title} " + "  ".join(f"{k}={v}" for k, v in summary.items()), soft_wrap=True)


@cli.command()
@click.argument("kind", type=click.Choice(["network", "financial", "sensor", "generic"]))
@click.option(
    "--count",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Events to emit; 0 = until Ctrl-C.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Events per second (default: as fast as possible).",
)
@click.option("--keys", type=click.IntRange(min=1), default=100, show_default=True, help="Number of streams.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same events.")
@click.option(
    "--anomaly-rate",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.002,
    show_default=True,
    help="Chance that an incident starts at any normal event.",
)
@click.option(
    "--start",
    default="2026-01-05T00:00:00Z",
    show_default=True,
    help="First event time: ISO-8601, epoch ms, or 'now'.",
)
@click.option("--topic", default=None, help="Target topic (default: the kind's topic from settings).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Write JSONL here instead of sending to Kafka ('-' for stdout).",
)
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def produce(
    kind: str,
    count: int,
    rate: float | None,
    keys: int,
    seed: int,
    anomaly_rate: float,
    start: str,
    topic: str | None,
    output: str | None,
    progress: bool,
) -> None:
    """Emit synthetic KIND events with labelled anomalies (Kafka key = stream key)."""
    from pipeline.lifecycle import StopFlag
    from pipeline.produce import make_generator, produce_to_file, produce_to_kafka
    from pipeline.progress import event_progress

    settings = _settings()
    generator = make_generator(kind, keys, seed, anomaly_rate, _start_ms(start))
    default_topic = settings.topic_for(cast(Kind, kind))
    limit = count or None
    with StopFlag() as stop, event_progress(progress and output != "-") as bar:
        task = bar.add_task(f"{kind} → {output or topic or default_topic}", total=limit)
        advance = lambda n: bar.advance(task, n)  # noqa: E731
        if output is not None:
            with click.open_file(output, "wb") as out:
                sent = produce_to_file(generator, cast(BinaryIO, out), limit, advance, stop)
        else:
            sent = produce_to_kafka(settings, generator, topic or default_topic, limit, rate, advance, stop)
    if output != "-":
        console.print(f"{sent} {kind} events from {keys} streams → {output or topic or default_topic}")


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "nab"]),
    default=None,
    help="Input format (default: from the file name and header).",
)
@click.option(
    "--kind",
    type=click.Choice(list(KINDS)),
    default=None,
    help="Stream kind; picks the topic from settings (default: generic).",
)
@click.option("--topic", default=None, help="Target topic (overrides --kind's topic).")
@click.option(
    "--speed",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Replay at X times the recorded pace.",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="At most this many events per second.",
)
@click.option("--strict", is_flag=True, help="Stop at the first bad line.")
@click.option("--ts-column", default="ts", show_default=True, help="CSV: the timestamp column.")
@click.option("--key-column", default="key", show_default=True, help="CSV: the stream key column.")
@click.option("--key", "fixed_key", default=None, help="CSV: one fixed stream key for the whole file.")
@click.option(
    "--value-columns",
    default=None,
    help="CSV: comma-separated value columns (default: all other columns).",
)
@click.option("--label-column", default=None, help="CSV: a 0/1 ground-truth column.")
@click.option("--progress/--no-progress", default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay(
    paths: tuple[Path, ...],
    fmt: str | None,
    kind: str | None,
    topic: str | None,
    speed: float | None,
    max_rate: float | None,
    strict: bool,
    ts_column: str,
    key_column: str,
    fixed_key: str | None,
    value_columns: str | None,
    label_column: str | None,
    progress: bool,
    as_json: bool,
) -> None:
    """Replay recorded events (JSONL, CSV, NAB CSV; files or folders) into Kafka."""
    from pipeline import replay as replay_mod
    from pipeline.progress import event_progress

    settings = _settings()
    target = topic or settings.topic_for(cast(Kind, kind or "generic"))
    columns = replay_mod.CsvColumns(
        ts=ts_column,
        key=key_column,
        fixed_key=fixed_key,
        label=label_column,
        values=tuple(c.strip() for c in value_columns.split(",")) if value_columns else (),
    )
    with event_progress(progress) as bar:
        task = bar.add_task(f"replay → {target}", total=None)
        stats = replay_mod.replay(
            settings,
            list(paths),
            target,
            fmt=cast("Format | None", fmt),
            columns=columns,
            speed=speed,
            max_rate=max_rate,
            strict=strict,
            on_bad=lambda bad: bar.console.print(f"bad line {bad}", style="yellow", markup=False, soft_wrap=True),
            on_progress=lambda n: bar.advance(task, n),
            on_total=lambda total: bar.update(task, total=total),
        )
        bar.update(task, total=stats.sent)
    _print_summary(f"replayed to {target}:", stats.summary(), as_json)


@cli.command()
@click.argument("topic")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
    help="JSONL file to write ('-' for stdout).",
)
@click.option("--from-beginning", is_flag=True, help="Start at the oldest record (default: only new ones).")
@click.option(
    "--max",
    "max_events",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after this many events.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Stop after this many seconds without a record.",
)
@click.option("--to-end", is_flag=True, help="Stop at the end offsets the topic had when recording started.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (to stderr).")
def record(
    topic: str,
    output: str,
    from_beginning: bool,
    max_events: int | None,
    idle_timeout: float | None,
    to_end: bool,
    as_json: bool,
) -> None:
    """Capture TOPIC to JSONL (without a consumer group) for replay or training."""
    from pipeline import record as record_mod
    from pipeline.lifecycle import StopFlag
    from pipeline.progress import event_progress

    settings = _settings()
    with (
        StopFlag() as stop,
        click.open_file(output, "wb") as out,
        event_progress(output != "-") as bar,
    ):
        task = bar.add_task(f"record {topic}", total=max_events)
        stats = record_mod.record(
            settings,
            topic,
            cast(BinaryIO, out),
            from_beginning=from_beginning,
            max_events=max_events,
            idle_timeout=idle_timeout,
            to_end=to_end,
            on_progress=lambda n: bar.advance(task, n),
            should_stop=stop,
        )
    summary = {
        "written": stats.written,
        "skipped": stats.skipped,
        "elapsed_s": round(stats.elapsed_s, 3),
    }
    if as_json:
        click.echo(orjson.dumps(summary).decode(), err=True)
    else:
        console.print(f"recorded {topic}: " + "  ".join(f"{k}={v}" for k, v in summary.items()))


@cli.command()
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

    settings = _settings()
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


def _model_options(fn: Any) -> Any:
    fn = click.option(
        "--kind",
        type=click.Choice(list(KINDS)),
        default=None,
        help="Use the shipped default model of this kind (or check --model is of it).",
    )(fn)
    fn = click.option(
        "--model",
        "model_dir",
        type=click.Path(path_type=Path),
        default=None,
        help="A model directory from `gruwatch train`.",
    )(fn)
    return fn


@cli.command()
@click.option("--kind", type=click.Choice(list(KINDS)), required=True, help="Stream kind to train for.")
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="JSONL files or folders (from `record` or `produce --output`); repeatable.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Model directory to write.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=30, show_default=True)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Stop after this many epochs without a better validation loss.",
)
@click.option("--hidden", type=click.IntRange(min=4), default=64, show_default=True)
@click.option(
    "--far",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=1e-4,
    show_default=True,
    help="Target false-alarm rate per event (sets the threshold).",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    default=0.2,
    show_default=True,
    help="Share of streams held out for validation and calibration.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--name", default=None, help="Model name (default: gru-<kind>).")
@click.option("--version", "model_version", default="1", show_default=True)
def train(
    kind: str,
    data_paths: tuple[Path, ...],
    out_dir: Path,
    epochs: int,
    patience: int,
    hidden: int,
    far: float,
    val_fraction: float,
    seed: int,
    name: str | None,
    model_version: str,
) -> None:
    """Train a GRU detector on recorded events and write a model directory."""
    from models.artifacts import save_detector
    from models.train import TrainConfig, train_detector
    from pipeline.modeling import load_dataset, spec_for
    from pipeline.progress import event_progress

    data = load_dataset(
        list(data_paths),
        on_bad=lambda b: console.print(f"bad line {b}", style="yellow", markup=False),
    )
    spec = spec_for(kind, data)
    streams = {
        key: [(data.events[i].ts, data.events[i].values, data.events[i].label) for i in idx]
        for key, idx in data.streams().items()
    }
    config = TrainConfig(
        hidden=hidden,
        epochs=epochs,
        patience=patience,
        far=far,
        val_fraction=val_fraction,
        seed=seed,
    )
    with event_progress() as bar:
        task = bar.add_task("training", total=epochs)

        def on_epoch(epoch: int, train_nll: float, val_nll: float) -> None:
            bar.update(
                task,
                completed=epoch,
                description=f"epoch {epoch}: train {train_nll:.3f} val {val_nll:.3f}",
            )
            if not bar.console.is_terminal:
                console.print(f"epoch {epoch}: train nll {train_nll:.4f}  val nll {val_nll:.4f}")

        try:
            detector, report = train_detector(spec, streams, config, name or f"gru-{kind}", model_version, on_epoch)
        except ValueError as exc:
            raise GruwatchError(f"cannot train: {exc}") from None
    save_detector(
        detector,
        out_dir,
        {
            "training": {
                "digest": data.digest,
                "files": data.files,
                "bad_lines": len(data.bad),
                "config": config.__dict__,
                **report,
            },
        },
    )
    console.print(
        f"{detector.ident}: {report['epochs']} epochs, best val nll {report['best_val_nll']}, "
        f"threshold {detector.calibration.threshold:.3f} → {out_dir}"
    )


@cli.command()
@_model_options
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    required=True,
    type=click.Path(exists=True, path_type=Path),
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    show_default=True,
)
def score(model_dir: Path | None, kind: str | None, data_paths: tuple[Path, ...], output: str) -> None:
    """Backtest: score every event offline; one JSON line per input event, in input order."""
    from pipeline.modeling import load_dataset, load_model, score_dataset, scored_row

    detector = load_model(model_dir, kind)
    data = load_dataset(
        list(data_paths),
        on_bad=lambda b: console.print(f"bad line {b}", style="yellow", markup=False),
    )
    results = score_dataset(detector, data)
    with click.open_file(output, "wb") as out:
        for event, result in zip(data.events, results, strict=True):
            out.write(orjson.dumps(scored_row(event, result)) + b"\n")
    if output != "-":
        console.print(
            f"{len(results)} events scored with {detector.ident}, "
            f"{sum(r.anomalous for r in results)} anomalous → {output}"
        )


@cli.group(invoke_without_command=True)
@_model_options
@click.option(
    "--data",
    "data_paths",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Labelled JSONL events.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a PNG of one stream's scores, labels and alerts.",
)
@click.option(
    "--stream",
    "stream_key",
    default=None,
    help="The stream to plot (default: the one with most labels).",
)
@click.pass_context
def evaluate(
    ctx: click.Context,
    model_dir: Path | None,
    kind: str | None,
    data_paths: tuple[Path, ...],
    as_json: bool,
    plot_path: Path | None,
    stream_key: str | None,
) -> None:
    """Detection quality on labelled events: precision, recall, F1, PR-AUC, incidents, delay.

    `gruwatch evaluate nab --data DIR` runs the NAB benchmark instead.
    """
    from models.evaluate import ScoredEvent
    from models.evaluate import evaluate as evaluate_events
    from pipeline.modeling import load_dataset, load_model, score_dataset

    if ctx.invoked_subcommand is not None:
        return
    if not data_paths:
        raise click.UsageError("Missing option '--data'.", ctx)
    detector = load_model(model_dir, kind)
    data = load_dataset(list(data_paths))
    if all(e.label is None for e in data.events):
        raise GruwatchError("the data has no labels to evaluate against")
    results = score_dataset(detector, data)
    metrics = evaluate_events(
        [
            ScoredEvent(e.key, e.ts, e.label or 0, r.score, r.anomalous, r.alert)
            for e, r in zip(data.events, results, strict=True)
        ]
    )
    metrics["model"] = detector.ident
    if plot_path is not None:
        from pipeline.plots import plot_stream

        streams = data.streams()
        key = stream_key or max(streams, key=lambda k: sum(data.events[i].label or 0 for i in streams[k]))
        if key not in streams:
            raise GruwatchError(f"no stream {key!r} in the data")
        idx = streams[key]
        plot_stream(
            [data.events[i] for i in idx],
            [results[i] for i in idx],
            detector.calibration.threshold,
            f"{detector.ident} on {key}",
            plot_path,
        )
        metrics["plot"] = str(plot_path)
    if as_json:
        click.echo(orjson.dumps(metrics).decode())
    else:
        table = Table(title=f"{detector.ident} on {', '.join(map(str, data_paths))}")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key_, value in metrics.items():
            table.add_row(key_, str(value))
        Console().print(table)


@cli.command()
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

    settings = _settings()
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


@evaluate.command("nab")
@click.option(
    "--data",
    "nab_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="A NAB checkout (data/, labels/, config/).",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(path_type=Path),
    default=None,
    help="A generic model directory (default: the shipped generic model).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def evaluate_nab_command(nab_dir: Path, model_dir: Path | None, as_json: bool) -> None:
    """Run the generic detector over every NAB file and score it with NAB's three profiles."""
    from pipeline.modeling import load_model
    from pipeline.nab_eval import evaluate_nab
    from pipeline.progress import event_progress

    detector = load_model(model_dir, "generic")
    with event_progress() as bar:
        task = bar.add_task("NAB", total=58)
        result = evaluate_nab(detector, nab_dir, lambda name, rows: bar.update(task, advance=1, description=name))
    if as_json:
        click.echo(orjson.dumps(result).decode())
        return
    table = Table(title=f"NAB with {result['model']} ({result['files']} files, {result['records']:,} records)")
    for column in ("profile", "score", "raw", "threshold", "null", "perfect"):
        table.add_column(column, justify="right")
    for profile, d in result["details"].items():
        table.add_row(
            profile,
            f"{d['score']:.2f}",
            f"{d['raw']:.2f}",
            f"{d['threshold']:.6f}",
            f"{d['null']:.0f}",
            f"{d['perfect']:.0f}",
        )
    Console().print(table)


_SEVERITY_STYLE = {
    "low": "dim",
    "medium": "yellow",
    "high": "bold red",
    "critical": "bold white on red",
}


def _alert_row(alert: dict[str, Any]) -> list[str]:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(alert["ts"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    top = ", ".join(
        f"{f['feature']}={f['actual']:g} (exp {f['expected']:g}, z {f['z']:+.1f})"
        for f in alert.get("explanation", [])[:2]
    )
    return [
        when,
        str(alert.get("kind")),
        alert["key"],
        alert["severity"],
        f"{alert.get('score', 0):.1f}",
        top,
    ]


def _print_alert(out: Console, alert: dict[str, Any], suffix: str = "") -> None:
    """One alert as a row of the live table (severity coloured)."""
    when, kind, key, severity, score_text, top = _alert_row(alert)
    out.print(f"{when}  {kind:<9}  ", end="")
    out.print(f"{severity:<8}", style=_SEVERITY_STYLE[severity], end="")
    out.print(f"  {score_text:>5}  {key}  {top}{suffix}", markup=False, highlight=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (for piping).")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(list(KINDS)),
    help="Only these kinds (repeatable).",
)
@click.option(
    "--min-severity",
    type=click.Choice(["low", "medium", "high", "critical"]),
    default="low",
    show_default=True,
)
@click.option("--key", "key_glob", default=None, help="Only stream keys matching this glob, e.g. 'acct-00*'.")
@click.option("--since", default=None, help="Only alerts for events after this: 15m, 2h, 1d, or ISO-8601.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest alert (default: only new ones).")
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Keep waiting for alerts, or stop at the end of the topic.",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --follow: stop after this many seconds without an alert.",
)
@click.option(
    "--group",
    default=None,
    help="Consume in this consumer group (default: none, so no partitions are taken from anyone).",
)
def alerts(
    as_json: bool,
    kinds: tuple[str, ...],
    min_severity: str,
    key_glob: str | None,
    since: str | None,
    from_beginning: bool,
    follow: bool,
    idle_timeout: float | None,
    group: str | None,
) -> None:
    """Subscribe to the alert topic and show alerts as they come."""
    from pipeline.lifecycle import StopFlag
    from pipeline.subscribe import AlertFilter, SubscribeStats, parse_since, subscribe

    settings = _settings()
    alert_filter = AlertFilter(set(kinds), min_severity, key_glob, parse_since(since) if since else None)
    stats = SubscribeStats()
    out = Console(soft_wrap=True)
    with StopFlag() as stop:
        stream = subscribe(
            settings,
            alert_filter,
            stats,
            from_beginning=from_beginning,
            follow=follow,
            idle_timeout=idle_timeout,
            group_id=group,
            should_stop=stop,
            on_malformed=lambda m: console.print(m, style="yellow", markup=False),
        )
        if not as_json:
            out.print(
                "time (UTC)           kind       severity  score  stream / top features",
                style="bold",
            )
        for alert in stream:
            if as_json:
                click.echo(orjson.dumps(alert).decode())
            else:
                _print_alert(out, alert)
    console.print(
        f"{stats.shown} alerts shown, {stats.duplicates} duplicates dropped, "
        f"{stats.filtered} filtered out, {stats.malformed} malformed skipped"
    )


@cli.command()
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
    settings = _settings()
    out = Console(soft_wrap=True)
    out.print("time (UTC)           kind       severity  score  stream / top features", style="bold")

    def show(alert: dict[str, Any]) -> None:
        meta = alert.get("meta") or {}
        _print_alert(out, alert, f"  [injected {meta['anomaly']}]" if "anomaly" in meta else "")

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


def main(argv: list[str] | None = None) -> Any:
    """Entry point: one readable line and a non-zero exit for every expected failure."""
    try:
        return cli.main(args=argv, prog_name="gruwatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("gruwatch: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        path = exc.ctx.command_path.split(" ", 1)[1] + " " if exc.ctx and " " in exc.ctx.command_path else ""
        click.echo(f"gruwatch: {exc.format_message()} (see `gruwatch {path}--help`)", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"gruwatch: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except GruwatchError as exc:
        click.echo(f"gruwatch: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("gruwatch: interrupted", err=True)
        sys.exit(130)
