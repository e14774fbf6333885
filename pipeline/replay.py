"""`gruwatch replay`: recorded files (JSONL, CSV, NAB) into a Kafka topic, keyed by stream.

Every line is validated against the event contract; a bad line is reported with its file and
line number and skipped (or stops the replay under ``strict``). Several files are merged by
timestamp so the pace is the recorded one; per-stream order is the file order.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import InputFileError, InvalidEvent
from pipeline.events import Event, decode_event, encode_event, validate_event
from pipeline.pacing import Pacer
from pipeline.sending import Sender
from pipeline.settings import Settings
from producers.files import (
    Format,
    Line,
    count_lines,
    detect_format,
    expand_paths,
    read_csv,
    read_jsonl,
    read_nab,
)

__all__ = ["BadLine", "CsvColumns", "ReplayStats", "iter_events", "replay"]

logger = logging.getLogger(__name__)

_SUFFIXES: dict[Format, tuple[str, ...]] = {
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "csv": (".csv",),
    "nab": (".csv",),
}


@dataclass(frozen=True)
class BadLine:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True)
class CsvColumns:
    """How to read a generic CSV: the ts column, the key column (or a fixed key), value columns."""

    ts: str = "ts"
    key: str | None = "key"
    fixed_key: str | None = None
    values: tuple[str, ...] = ()
    label: str | None = None


@dataclass
class ReplayStats:
    files: int = 0
    sent: int = 0
    bad: list[BadLine] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.sent / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "sent": self.sent,
            "bad_lines": len(self.bad),
            "streams": len(self.keys),
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s, 1),
        }


def _lines(path: Path, fmt: Format, root: Path | None, columns: CsvColumns) -> Iterator[Line]:
    if fmt == "jsonl":
        return read_jsonl(path)
    if fmt == "nab":
        return read_nab(path, root)
    return read_csv(
        path,
        ts_column=columns.ts,
        key_column=None if columns.fixed_key else columns.key,
        key=columns.fixed_key,
        value_columns=columns.values or None,
        label_column=columns.label,
    )


def _validated(lines: Iterator[Line], max_bytes: int, max_values: int) -> Iterator[Event | BadLine]:
    for line in lines:
        if line.error is not None:
            yield BadLine(line.source, line.line, line.error)
            continue
        try:
            if line.raw is not None:
                yield decode_event(line.raw, max_bytes=max_bytes, max_values=max_values)
            else:
                yield validate_event(line.obj, max_values=max_values)
        except InvalidEvent as exc:
            yield BadLine(line.source, line.line, exc.reason)


def iter_events(
    paths: Sequence[Path],
    fmt: Format | None = None,
    columns: CsvColumns = CsvColumns(),
    max_bytes: int = 64 * 1024,
    max_values: int = 256,
) -> tuple[list[Path], Iterator[Event | BadLine]]:
    """The files to read and their events (or bad lines), merged by timestamp across files."""
    fmt = fmt or detect_format(paths[0])
    try:
        files = expand_paths(paths, _SUFFIXES[fmt])
    except FileNotFoundError as exc:
        raise InputFileError(str(exc)) from None
    if not files:
        raise InputFileError(f"no {fmt} files under {', '.join(map(str, paths))}")
    root = paths[0] if len(paths) == 1 and paths[0].is_dir() else None
    streams = [_validated(_lines(f, fmt, root, columns), max_bytes, max_values) for f in files]
    if len(streams) == 1:
        return files, streams[0]
    # Bad lines sort first (ts -1): they are reported as soon as they are read.
    return files, heapq.merge(*streams, key=lambda item: item.ts if isinstance(item, Event) else -1)


def replay(
    settings: Settings,
    paths: Sequence[Path],
    topic: str,
    *,
    fmt: Format | None = None,
    columns: CsvColumns = CsvColumns(),
    speed: float | None = None,
    max_rate: float | None = None,
    strict: bool = False,
    on_bad: Callable[[BadLine], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    producer_overrides: dict[str, Any] | None = None,
) -> ReplayStats:
    """Send the files' events to ``topic``; returns what was sent and what was bad."""
    files, events = iter_events(paths, fmt, columns, settings.max_event_bytes, settings.max_event_values)
    stats = ReplayStats(files=len(files))
    if on_total is not None:
        on_total(sum(count_lines(f) for f in files))
    sender = Sender(settings, topic, Pacer(speed, max_rate), producer_overrides)
    started = time.perf_counter()
    try:
        with sender:
            for item in events:
                if isinstance(item, BadLine):
                    stats.bad.append(item)
                    if on_bad is not None:
                        on_bad(item)
                    if strict:
                        raise InputFileError(f"bad line (--strict): {item}")
                    continue
                sender.send(item.key, item.ts, encode_event(item))
                stats.keys.add(item.key)
                if on_progress is not None and sender.sent % 1000 == 0:
                    on_progress(1000)
    finally:
        stats.sent = sender.sent
        stats.elapsed_s = time.perf_counter() - started
    if on_progress is not None:
        on_progress(stats.sent % 1000)
    return stats
