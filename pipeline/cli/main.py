"""The `gruwatch` command: a thin click layer over the pipeline modules, one module per family
of commands.

Errors gruwatch raises on purpose, and bad arguments, print one line to stderr and exit non-zero;
only a bug gives a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from pipeline.cli import detection, running, services, streams
from pipeline.errors import GruwatchError

__all__ = ["cli", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """gruwatch: streaming anomaly detection on Kafka with a stateful GRU."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every failed connection attempt at ERROR; our own errors say it once.
    logging.getLogger("kafka").setLevel(max(level, logging.CRITICAL if verbose == 0 else level))


for command in (
    services.up,
    services.down,
    services.status,
    streams.produce,
    streams.replay,
    streams.record,
    streams.alerts,
    detection.train,
    detection.score,
    detection.evaluate,
    running.worker,
    running.demo,
    running.bench,
):
    cli.add_command(command)


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
