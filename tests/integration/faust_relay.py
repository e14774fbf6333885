"""A minimal Faust app for the round-trip test: upper-cases each value from one topic to another.

Topic names and the app id come from the environment so each test run uses fresh ones.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["RELAY_APP_ID"],
    broker=f"kafka://{os.environ.get('GRUWATCH_KAFKA_BOOTSTRAP', '127.0.0.1:9092')}",
    store="memory://",
    web_enabled=False,
    web_bind="127.0.0.1",
    topic_partitions=1,
)
source = app.topic(os.environ["RELAY_IN"], value_serializer="raw")
sink = app.topic(os.environ["RELAY_OUT"], value_serializer="raw")


@app.agent(source)
async def relay(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        await sink.send(value=value.upper())
