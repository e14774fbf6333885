"""Bad arguments and unreachable services give one readable line and a non-zero exit."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import free_port, gruwatch


@pytest.mark.parametrize(
    "args",
    [("no-such-command",), ("status", "--no-such-flag"), ("up", "--kafka", "extra-arg")],
)
def test_bad_arguments_give_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    result = gruwatch(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gruwatch: ")
    assert "Traceback" not in result.stderr


def test_bad_setting_gives_one_line() -> None:
    result = gruwatch("status", env={"GRUWATCH_KAFKA_BOOTSTRAP": "no-port-here"})
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0
    assert "GRUWATCH_" in result.stderr and "Traceback" not in result.stderr


def test_status_reports_services_that_are_down() -> None:
    env = {
        "GRUWATCH_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "GRUWATCH_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    result = gruwatch("status", "--json", env=env)
    assert result.returncode == 1
    report = orjson.loads(result.stdout)
    assert report["kafka"]["up"] is False and report["kafka"]["error"]
    assert report["redis"]["up"] is False and report["redis"]["error"]
