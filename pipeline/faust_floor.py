"""Faust's own floor for `gruwatch bench --only faust`: a do-nothing agent over ``take_events``.

Run as ``faust -A pipeline.faust_floor worker`` with GW_FLOOR_TOPIC, GW_FLOOR_EVENTS and
GW_FLOOR_APP set; it prints ``FAUST_EPS <events/s>`` once it has read that many events.
"""

from __future__ import annotations

import os
import time
from typing import Any

import faust

app = faust.App(
    os.environ.get("GW_FLOOR_APP", "gruwatch-faust-floor"),
    broker=f"kafka://{os.environ.get('GRUWATCH_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    web_enabled=False,
    web_bind="127.0.0.1",
    web_port=int(os.environ.get("GW_FLOOR_WEB_PORT", "6067")),
    consumer_auto_offset_reset="earliest",
    broker_max_poll_records=5000,
    stream_buffer_maxsize=20000,
)
_topic = app.topic(os.environ.get("GW_FLOOR_TOPIC", "unset"), value_serializer="raw", key_serializer="raw")
_target = int(os.environ.get("GW_FLOOR_EVENTS", "0"))
_progress: dict[str, Any] = {"n": 0, "t": None}


@app.agent(_topic)
async def drain(stream: Any) -> None:
    async for batch in stream.take_events(2000, within=0.05):
        if _progress["t"] is None:
            _progress["t"] = time.perf_counter()
        _progress["n"] += len(batch)
        if _progress["n"] >= _target:
            elapsed = time.perf_counter() - _progress["t"]
            print(f"FAUST_EPS {_progress['n'] / elapsed:.1f}", flush=True)
            os._exit(0)
