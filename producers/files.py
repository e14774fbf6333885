"""Readers for recorded streams: JSONL events, CSV with a header, and NAB's ``timestamp,value`` CSVs.

Readers never raise on a bad line: they yield it with its file, line number and reason, so the
caller reports it and goes on (or stops, under --strict).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Format",
    "Line",
    "count_lines",
    "detect_format",
    "expand_paths",
    "read_csv",
    "read_jsonl",
    "read_nab",
]

Format = Literal["jsonl", "csv", "nab"]


@dataclass(slots=True)
class Line:
    """One input record: the raw JSONL bytes or a built event dict, or the reason it is bad."""

    source: str
    line: int
    raw: bytes | None = None
    obj: dict[str, Any] | None = None
    error: str | None = None


def expand_paths(paths: Sequence[Path], suffixes: tuple[str, ...]) -> list[Path]:
    """Files named directly, plus files with one of ``suffixes`` found under named folders."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def detect_format(path: Path) -> Format:
    """jsonl for .jsonl/.json/.ndjson; nab for a CSV whose header is exactly timestamp,value; else csv."""
    if path.is_dir():
        return "nab" if any(p.suffix.lower() == ".csv" for p in path.rglob("*.csv")) else "jsonl"
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        return "jsonl"
    with path.open(encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip().lower().replace(" ", "")
    return "nab" if header == "timestamp,value" else "csv"


def count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))


def read_jsonl(path: Path) -> Iterator[Line]:
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            stripped = raw.strip()
            if stripped:
                yield Line(str(path), number, raw=stripped)


def read_csv(
    path: Path,
    *,
    ts_column: str,
    value_columns: Sequence[str] | None = None,
    key_column: str | None = None,
    key: str | None = None,
    label_column: str | None = None,
) -> Iterator[Line]:
    """Events from a CSV with a header. The key is ``key_column``'s value, or the fixed ``key``.

    Value columns default to every column that is not the key, ts or label column.
    """
    if (key_column is None) == (key is None):
        raise ValueError("give exactly one of key_column and key")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        needed = [c for c in (ts_column, key_column, label_column) if c] + list(value_columns or [])
        absent = [c for c in needed if c not in header]
        if absent:
            yield Line(
                str(path),
                1,
                error=f"header lacks column(s) {', '.join(absent)} (has {', '.join(header)})",
            )
            return
        columns = (
            list(value_columns)
            if value_columns
            else [c for c in header if c not in {ts_column, key_column, label_column}]
        )
        for number, row in enumerate(reader, start=2):
            try:
                values = {c: _number(row[c], c) for c in columns}
            except ValueError as exc:
                yield Line(str(path), number, error=str(exc))
                continue
            event: dict[str, Any] = {
                "key": row[key_column] if key_column else key,
                "ts": _ts(row[ts_column]),
                "values": values,
            }
            if label_column:
                event["label"] = _label(row[label_column])
            yield Line(str(path), number, obj=event)


def read_nab(path: Path, root: Path | None = None) -> Iterator[Line]:
    """One NAB data file (``timestamp,value``); the key is its path below ``root`` without .csv."""
    key = str(path.relative_to(root).with_suffix("")) if root else path.stem
    return read_csv(path, ts_column="timestamp", value_columns=["value"], key=key)


def _number(text: str | None, column: str) -> float:
    if text is None or not text.strip():
        raise ValueError(f"column {column} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"column {column} is not a number: {text[:40]!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"column {column} is not finite: {text[:40]!r}")
    return value


def _ts(text: str) -> int | str:
    """Epoch ms stays a number; anything else is passed on as an ISO-8601 string to validate."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else stripped


def _label(text: str) -> int | str:
    stripped = text.strip()
    return int(stripped) if stripped in {"0", "1"} else stripped
