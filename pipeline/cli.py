"""The `gruwatch` command: a thin click layer over the pipeline modules.

Errors gruwatch raises on purpose, and bad arguments, print one line to stderr and exit non-zero;
only a bug gives a traceback.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import click
import orjson
from rich.console import Console
from rich.table import Table

from pipeline import kafka as kafka_io
from pipeline.errors import GruwatchError
from pipeline.settings import Settings, get_settings
from pipeline.stack import LocalKafka, LocalRedis, stack_status

__all__ = ["cli", "main"]

logger = logging.getLogger(__name__)

console = Console(stderr=True)


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
        console.print(f"redis  {redis_result:8} {settings.redis_host_port[0]}:{settings.redis_host_port[1]}"
                      f" ({time.monotonic() - started:.1f} s)")
    if kafka:
        broker = LocalKafka(settings)
        started = time.monotonic()
        with console.status("starting Kafka…"):
            result = broker.start()
        console.print(f"kafka  {result:8} {broker.address} ({time.monotonic() - started:.1f} s)")
        if topics:
            created = kafka_io.ensure_topics(
                settings, [*settings.topics, settings.alerts_topic, settings.deadletter_topic]
            )
            if created:
                console.print(f"topics created: {', '.join(created)}")


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
            table.add_row(name, "yes" if s.up else "[red]no[/red]", s.version or "-", s.address,
                          f"pid {s.pid}" if s.managed else "no", notes)
        Console().print(table)
    if not all(s.up for s in statuses.values()):
        sys.exit(1)


@cli.command()
def demo() -> None:
    """Start the local stack and run the live demo."""
    click.get_current_context().invoke(up)
    console.print("The stack is up. The live demo (worker, producers, alerts) arrives with the worker; "
                  "see README.md for what runs today.")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: one readable line and a non-zero exit for every expected failure."""
    try:
        return cli.main(args=argv, prog_name="gruwatch", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("gruwatch: aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        hint = f" (see `gruwatch {exc.ctx.command_path.split(' ', 1)[1] + ' ' if exc.ctx and ' ' in exc.ctx.command_path else ''}--help`)"
        click.echo(f"gruwatch: {exc.format_message()}{hint}", err=True)
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
