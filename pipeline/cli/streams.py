"""Events in and out of Kafka: `gruwatch produce`, `replay`, `record` and `alerts`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO, cast

import click
import orjson
from rich.console import Console

from pipeline.cli.common import console, load_settings, print_summary, start_ms
from pipeline.settings import KINDS, Kind
from producers.files import Format


@click.command()
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
@click.option(
    "--first-key",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Index of the first stream. A stream is the same whatever the range (same seed): "
    "runs over disjoint ranges give disjoint keys.",
)
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
    first_key: int,
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

    settings = load_settings()
    generator = make_generator(kind, keys, seed, anomaly_rate, start_ms(start), first_key)
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


@click.command()
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

    settings = load_settings()
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
    print_summary(f"replayed to {target}:", stats.summary(), as_json)


@click.command()
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

    settings = load_settings()
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


_SEVERITY_STYLE = {
    "low": "dim",
    "medium": "yellow",
    "high": "bold red",
    "critical": "bold white on red",
}


def _feature_text(feature: dict[str, Any]) -> str:
    """One explained feature: actual, expected (and its usual value at that hour, or what the
    stream's other features expect, when known), z."""
    usual = f", usual {feature['usual']:g}" if "usual" in feature else ""
    if "expected_by_others" in feature:
        usual += f", by others {feature['expected_by_others']:g}"
    return f"{feature['feature']}={feature['actual']:g} (exp {feature['expected']:g}{usual}, z {feature['z']:+.1f})"


def _alert_row(alert: dict[str, Any]) -> list[str]:
    from datetime import UTC, datetime

    when = datetime.fromtimestamp(alert["ts"] / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    top = ", ".join(_feature_text(f) for f in alert.get("explanation", [])[:2])
    return [
        when,
        str(alert.get("kind")),
        alert["key"],
        alert["severity"],
        f"{alert.get('score', 0):.1f}",
        top,
    ]


def print_alert(out: Console, alert: dict[str, Any], suffix: str = "") -> None:
    """One alert as a row of the live table (severity coloured)."""
    when, kind, key, severity, score_text, top = _alert_row(alert)
    out.print(f"{when}  {kind:<9}  ", end="")
    out.print(f"{severity:<8}", style=_SEVERITY_STYLE[severity], end="")
    out.print(f"  {score_text:>5}  {key}  {top}{suffix}", markup=False, highlight=False)


@click.command()
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

    settings = load_settings()
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
                print_alert(out, alert)
    console.print(
        f"{stats.shown} alerts shown, {stats.duplicates} duplicates dropped, "
        f"{stats.filtered} filtered out, {stats.malformed} malformed skipped"
    )
