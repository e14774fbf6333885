"""File readers and the replay event iterator (no Kafka needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import InputFileError
from pipeline.events import Event
from pipeline.pacing import Pacer
from pipeline.replay import BadLine, CsvColumns, iter_events
from producers.files import detect_format


def test_jsonl_bad_lines_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"key":"a","ts":1,"values":{"x":1}}\n'
        "garbage\n"
        "\n"
        '{"key":"a","ts":2,"values":{"x":"high"}}\n'
        '{"key":"a","ts":3,"values":{"x":3}}\n'
    )
    _, items = iter_events([path])
    items_list = list(items)
    assert [i.ts for i in items_list if isinstance(i, Event)] == [1, 3]
    bad = [i for i in items_list if isinstance(i, BadLine)]
    assert [(b.line, b.reason.split(":")[0]) for b in bad] == [
        (2, "not valid JSON"),
        (4, "values.x is not a number (string)"),
    ]
    assert str(bad[0]).startswith(f"{path}:2: ")


def test_csv_with_key_column_and_label(tmp_path: Path) -> None:
    path = tmp_path / "flows.csv"
    path.write_text(
        "time,host,bytes,packets,y\n2026-01-01T00:00:00Z,h1,10,1,0\n2026-01-01T00:01:00Z,h2,oops,2,1\n1767225720000,h1,30,3,1\n"
    )
    columns = CsvColumns(ts="time", key="host", label="y")
    assert detect_format(path) == "csv"
    items = list(iter_events([path], columns=columns)[1])
    good = [i for i in items if isinstance(i, Event)]
    assert [(e.key, e.ts, e.values, e.label) for e in good] == [
        ("h1", 1767225600000, {"bytes": 10.0, "packets": 1.0}, 0),
        ("h1", 1767225720000, {"bytes": 30.0, "packets": 3.0}, 1),
    ]
    assert [(b.line, b.reason) for b in items if isinstance(b, BadLine)] == [
        (3, "column bytes is not a number: 'oops'")
    ]


def test_csv_missing_column_is_one_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    items = list(iter_events([path], fmt="csv", columns=CsvColumns(ts="when", key="who"))[1])
    assert len(items) == 1 and isinstance(items[0], BadLine) and "lacks column(s) when, who" in items[0].reason


def test_nab_folder_merges_files_by_time(nab_dir: Path) -> None:
    folder = nab_dir / "data" / "realKnownCause"
    assert detect_format(folder) == "nab"
    files, items = iter_events([folder], fmt="nab")
    events = list(items)
    assert len(files) == 7 and not [i for i in events if isinstance(i, BadLine)]
    assert {e.key for e in events if isinstance(e, Event)} == {f"{f.stem}" for f in files}
    # Per-stream order is the file's own (NAB has repeated and one backward timestamp; kept as is).
    for f in files:
        own = [e.ts for e in iter_events([f], fmt="nab")[1] if isinstance(e, Event)]
        assert [e.ts for e in events if isinstance(e, Event) and e.key == f.stem] == own
    rows = sum(len(f.read_text().splitlines()) - 1 for f in files)
    assert len(events) == rows


def test_missing_path_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputFileError):
        iter_events([tmp_path / "nope.jsonl"], fmt="jsonl")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_keeps_speed_times_recorded_pace() -> None:
    clock = FakeClock()
    pacer = Pacer(speed=10, clock=clock, sleep=clock.sleep)
    for ts in (0, 1000, 5000, 5000, 20000):
        pacer.wait(ts)
    assert clock.now == pytest.approx(2.0)  # 20 s recorded at 10×


def test_pacer_max_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(max_rate=100, clock=clock, sleep=clock.sleep)
    for _ in range(51):
        pacer.wait(0)
    assert clock.now == pytest.approx(0.5)


def test_unpaced_never_sleeps() -> None:
    clock = FakeClock()
    pacer = Pacer(clock=clock, sleep=clock.sleep)
    for ts in range(0, 10**7, 10**5):
        pacer.wait(ts)
    assert clock.slept == []
