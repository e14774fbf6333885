"""`gruwatch alerts`: subscribe to the alert topic, filter, de-duplicate and show alerts."""

from __future__ import annotations

import fnmatch
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.alerts import SEVERITIES
from pipeline.errors import ConfigError, InvalidEvent
from pipeline.events import parse_ts
from pipeline.reading import read_topic
from pipeline.settings import Settings

__all__ = ["AlertFilter", "SubscribeStats", "parse_since", "subscribe"]

logger = logging.getLogger(__name__)

_DEDUP_MEMORY = 200_000  # alert ids remembered for de-duplication
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now_ms: int | None = None) -> int:
    """Epoch ms from a relative age ('90s', '15m', '2h', '1d') or an ISO-8601 / epoch-ms time."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    match = _RELATIVE.match(text.strip())
    if match:
        return now_ms - int(float(match.group(1)) * _UNIT_S[match.group(2)] * 1000)
    try:
        return parse_ts(int(text) if text.isdigit() else text)
    except InvalidEvent as exc:
        raise ConfigError(f"--since: {exc.reason} (or use an age like 15m, 2h)") from None


@dataclass
class AlertFilter:
    kinds: set[str] = field(default_factory=set)
    min_severity: str = "low"
    key_glob: str | None = None
    since_ms: int | None = None

    def accepts(self, alert: dict[str, Any]) -> bool:
        if self.kinds and alert.get("kind") not in self.kinds:
            return False
        if SEVERITIES.index(alert.get("severity", "low")) < SEVERITIES.index(self.min_severity):
            return False
        if self.key_glob is not None and not fnmatch.fnmatchcase(str(alert.get("key", "")), self.key_glob):
            return False
        return not (self.since_ms is not None and int(alert.get("ts", 0)) < self.since_ms)


@dataclass
class SubscribeStats:
    shown: int = 0
    duplicates: int = 0
    filtered: int = 0
    malformed: int = 0


def _valid(alert: object) -> bool:
    return (
        isinstance(alert, dict)
        and isinstance(alert.get("alert_id"), str)
        and isinstance(alert.get("key"), str)
        and alert.get("severity") in SEVERITIES
        and isinstance(alert.get("ts"), int)
    )


def subscribe(
    settings: Settings,
    alert_filter: AlertFilter,
    stats: SubscribeStats,
    *,
    from_beginning: bool,
    follow: bool,
    idle_timeout: float | None,
    group_id: str | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    on_malformed: Callable[[str], None] = lambda message: None,
    start_offsets: dict[Any, int] | None = None,
) -> Iterator[dict[str, Any]]:
    """Alerts that pass the filter, each alert_id once, in arrival order."""
    seen: OrderedDict[str, None] = OrderedDict()
    for message in read_topic(
        settings,
        settings.alerts_topic,
        from_beginning=from_beginning,
        to_end=not follow,
        idle_timeout=idle_timeout,
        should_stop=should_stop,
        group_id=group_id,
        client_id="gruwatch-alerts",
        start_offsets=start_offsets,
    ):
        try:
            alert = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            alert = None
        if not _valid(alert):
            stats.malformed += 1
            on_malformed(f"{settings.alerts_topic}[{message.partition}] offset {message.offset}: not an alert, skipped")
            continue
        alert_id = alert["alert_id"]
        if alert_id in seen:
            stats.duplicates += 1
            continue
        seen[alert_id] = None
        if len(seen) > _DEDUP_MEMORY:
            seen.popitem(last=False)
        if not alert_filter.accepts(alert):
            stats.filtered += 1
            continue
        stats.shown += 1
        yield alert
