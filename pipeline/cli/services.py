"""`gruwatch up`, `down` and `status`: the local Kafka broker and Redis."""

from __future__ import annotations

import sys
import time

import click
import orjson
from rich.console import Console
from rich.table import Table

from pipeline import kafka as kafka_io
from pipeline.cli.common import console, load_settings
from pipeline.stack import LocalKafka, LocalRedis, stack_status


@click.command()
@click.option("--kafka/--no-kafka", default=True, help="Start the Kafka broker.")
@click.option("--redis/--no-redis", "with_redis", default=True, help="Start Redis.")
@click.option("--topics/--no-topics", default=True, help="Create gruwatch's topics.")
def up(kafka: bool, with_redis: bool, topics: bool) -> None:
    """Start the local Kafka broker and Redis (does nothing for what already runs)."""
    settings = load_settings()
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


@click.command()
@click.option("--kafka/--no-kafka", default=True, help="Stop the Kafka broker.")
@click.option("--redis/--no-redis", "with_redis", default=True, help="Stop Redis.")
def down(kafka: bool, with_redis: bool) -> None:
    """Stop the Kafka broker and Redis that `gruwatch up` started."""
    settings = load_settings()
    if kafka:
        stopped = LocalKafka(settings).stop()
        console.print(f"kafka  {'stopped' if stopped else 'was not running (or not started by gruwatch)'}")
    if with_redis:
        stopped = LocalRedis(settings).stop()
        console.print(f"redis  {'stopped' if stopped else 'was not running (or not started by gruwatch)'}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(as_json: bool) -> None:
    """Whether Kafka and Redis answer, their versions, and gruwatch's topics. Exit 1 if one is down."""
    settings = load_settings()
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
