"""The transport floor of `gruwatch bench`: a raw aiokafka consumer that reads and does nothing.

It runs in a fresh process that imports nothing but aiokafka and the settings: the bench's own
process holds the preloaded events, numpy and the models, and every object in it slows the
garbage collector's passes, which a consumer allocating ~600,000 records a second triggers
often (measured: torch imported first cut the floor from 660k-806k to 370k-447k events/s).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections.abc import Mapping

from pipeline.settings import Settings

__all__ = ["read_floor", "read_floor_in_fresh_process"]


async def read_floor(settings: Settings, topics: list[str], total: int, fetch: Mapping[str, int]) -> float:
    """Events/s of a raw consumer in a fresh group reading ``total`` events of ``topics``, with the
    fetch sizes ``fetch`` (the worker's ``pipeline.kafka.BATCH_FETCH``: passed in, as that module
    would bring kafka-python into this process)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_servers,
        group_id=f"bench-floor-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_poll_records=settings.batch_size,
        **fetch,
    )
    await consumer.start()
    try:
        seen, started = 0, None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=500, max_records=settings.batch_size)
            if batch and started is None:
                started = time.perf_counter()
            seen += sum(len(m) for m in batch.values())
        return total / (time.perf_counter() - (started or time.perf_counter()))
    finally:
        await consumer.stop()


def _read(settings: Settings, topics: list[str], total: int, fetch: Mapping[str, int]) -> float:
    return asyncio.run(read_floor(settings, topics, total, fetch))


def read_floor_in_fresh_process(settings: Settings, topics: list[str], total: int, fetch: Mapping[str, int]) -> float:
    """``read_floor`` in a spawned process of its own."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return float(pool.apply(_read, (settings, topics, total, dict(fetch))))
