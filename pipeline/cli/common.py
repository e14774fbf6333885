"""What every `gruwatch` command shares: the console, settings, option groups and printing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import orjson
from rich.console import Console

from pipeline.errors import GruwatchError
from pipeline.settings import KINDS, Settings, get_settings

console = Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    try:
        return get_settings()
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise GruwatchError(f"bad GRUWATCH_* setting: {' '.join(first[:3])}") from exc


def start_ms(text: str) -> int:
    from pipeline.errors import InvalidEvent
    from pipeline.events import parse_ts

    if text == "now":
        return int(time.time() * 1000)
    try:
        return parse_ts(text)
    except InvalidEvent as exc:
        raise click.BadParameter(exc.reason, param_hint="--start") from None


def print_summary(title: str, summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(orjson.dumps(summary).decode())
    else:
        console.print(f"{title} " + "  ".join(f"{k}={v}" for k, v in summary.items()), soft_wrap=True)


def model_options(fn: Any) -> Any:
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


def data_files_option(help_text: str, required: bool = True) -> Callable[[Any], Any]:
    """``--data PATH`` (repeatable, files or folders) as ``data_paths``."""
    return click.option(
        "--data",
        "data_paths",
        multiple=True,
        required=required,
        type=click.Path(exists=True, path_type=Path),
        help=help_text,
    )
