"""The stream worker: batches from Kafka → BatchScorer → alerts and dead letters → states → commit.

Order per batch (the effectively-once contract): score (reads states, fences redelivered
events) → produce dead letters and alerts and wait for their acks → write all states in one
Redis transaction → commit the batch's offsets. A crash anywhere before the commit redelivers
the batch; the fence keeps the GRU from stepping twice and re-emitted alerts keep their
``alert_id``. Redis or Kafka faults stop progress (nothing is committed), the batch is retried
with backoff and the worker reports itself unhealthy until it goes through.

It consumes with aiokafka directly rather than through a Faust agent: measured on this
project's broker, Faust's per-event stream path (``take_events``) delivered ~16,000 events/s
whatever its buffer, fetch and commit settings, against ~820,000 events/s for a raw aiokafka
consumer in a group (see `gruwatch bench`); batches need the batch API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from models.detector import Detector
from pipeline.errors import KafkaUnavailable, ServiceUnavailable
from pipeline.kafka import BATCH_FETCH, aiokafka_security
from pipeline.lifecycle import batch_gc, single_math_thread
from pipeline.metrics import WorkerMetrics
from pipeline.scoring import BatchOutcome, BatchScorer, KafkaRecord
from pipeline.settings import Settings
from pipeline.state import StateStore, make_store

__all__ = ["Worker", "WorkerStats"]

logger = logging.getLogger(__name__)

_BACKOFF_START_S = 0.2


@dataclass
class WorkerStats:
    batches: int = 0
    events: int = 0
    scored: int = 0
    dead: int = 0
    alerts: int = 0
    fenced: int = 0
    retries: int = 0
    started: float = 0.0
    first_record: float = 0.0  # perf_counter when the first batch arrived
    last_batch: float = 0.0  # perf_counter when the last batch was committed
    peak_rss_mb: float = 0.0  # the process's peak resident memory when the worker stopped
    rebalances: int = 0  # times partitions moved between two batches (once records flowed)


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM is the process's own; ru_maxrss also
    counts the parent's pages a spawned child had between fork and exec (a worker process then
    "peaked" at the size of whatever spawned it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Finish the batch in flight before partitions move, so the next owner starts clean."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self.worker.batch_lock:
            await self.worker.commits_sent()
            if self.worker.stats.first_record and revoked:
                self.worker.moved = True  # counted if batches follow (a peer leaving at the end is not)
            logger.info("partitions revoked: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.worker.assigned.set()
        logger.info("partitions assigned: %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Worker:
    def __init__(
        self,
        settings: Settings,
        detectors: Mapping[str, Detector],
        topics: list[str],
        store: StateStore | None = None,
        namespace: str | None = None,
        latencies: list[float] | None = None,
        before_consuming: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """``before_consuming``: awaited once the consumer is in its group, before the first
        fetch (``--processes N`` waits there for its peers' first assignments)."""
        self.settings = settings
        self.before_consuming = before_consuming
        # When given, collects per-event latency (ms): Kafka create time → state written.
        self.latencies = latencies
        self.topics = topics
        self.detectors = detectors
        self.store = store or make_store(
            settings.redis_url.get_secret_value(),
            settings.redis_cluster,
            str(settings.redis_ssl_ca_certs) if settings.redis_ssl_ca_certs else None,
        )
        self.scorer = BatchScorer(
            detectors,
            {t: settings.topics[t] for t in topics},
            self.store,
            namespace=namespace or settings.namespace,
            max_event_bytes=settings.max_event_bytes,
            max_event_values=settings.max_event_values,
        )
        self.metrics = WorkerMetrics()
        self.stats = WorkerStats()
        self.batch_lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.assigned = asyncio.Event()  # set at the first partition assignment
        self.moved = False  # partitions were revoked since the last batch
        self.healthy = False
        self.last_error: str | None = None
        self.lag: dict[str, int] = {}
        self._next_offset: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._commit_task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

    async def first_assignment(self) -> bool:
        """Wait until the group assigns this worker its partitions (True) or it is stopped (False)."""
        waits = [asyncio.create_task(event.wait()) for event in (self.assigned, self.stopping)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        return self.assigned.is_set() and not self.stopping.is_set()

    async def run(self, max_idle_s: float | None = None) -> WorkerStats:
        """Consume until stopped (or, with ``max_idle_s``, until that long without a record)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError, RuntimeError):  # not the main thread
                loop.add_signal_handler(signum, self.stop)
        servers = self.settings.kafka_servers
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=self.settings.group_id,
            client_id="gruwatch-worker",
            enable_auto_commit=False,
            auto_offset_reset=self.settings.auto_offset_reset,
            max_poll_records=self.settings.batch_size,
            # Hear about a rebalance (a worker joining or leaving) within ~0.2 s, not aiokafka's
            # 3 s: until then the group waits for this member, and its partitions for their owner.
            heartbeat_interval_ms=200,
            **BATCH_FETCH,
            **aiokafka_security(self.settings),
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            client_id="gruwatch-worker",
            acks="all",
            # A batch's alerts are sent together and then awaited: waiting to fill a request only
            # adds to every batch's time.
            linger_ms=0,
            compression_type="gzip",
            max_request_size=4 * 1024 * 1024,
            **aiokafka_security(self.settings),
        )
        runner = await self._start_http()
        try:
            await self._start_kafka()
            self._consumer.subscribe(self.topics, listener=_Rebalance(self))
            self.stats.started = time.perf_counter()
            with batch_gc(), single_math_thread():
                await self._loop(max_idle_s)
        finally:
            await self._shutdown(runner)
            self.stats.peak_rss_mb = _peak_rss_mb()
        return self.stats

    async def _start_kafka(self) -> None:
        assert self._consumer is not None and self._producer is not None
        delay = _BACKOFF_START_S
        while not self.stopping.is_set():
            try:
                await self._producer.start()
                await self._consumer.start()
                return
            except KafkaError as exc:
                self._fault("kafka", f"Kafka unreachable at start: {exc}")
                await self._sleep(delay)
                delay = min(delay * 2, self.settings.retry_backoff_max_s)

    async def _shutdown(self, runner: web.AppRunner | None) -> None:
        await self.commits_sent()
        for client in (self._consumer, self._producer):
            if client is not None:
                try:
                    await client.stop()
                except KafkaError as exc:
                    logger.warning("closing Kafka client: %s", exc)
        await self.store.close()
        if runner is not None:
            await runner.cleanup()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    # -- the loop ------------------------------------------------------------------------------

    async def _loop(self, max_idle_s: float | None) -> None:
        assert self._consumer is not None
        if self.before_consuming is not None:
            await self.before_consuming()
        last_record = time.monotonic()
        while not self.stopping.is_set():
            batches = await self._consumer.getmany(
                timeout_ms=self.settings.batch_max_wait_ms, max_records=self.settings.batch_size
            )
            records: list[KafkaRecord] = [m for messages in batches.values() for m in messages]
            if not records:
                self._update_lag()
                if max_idle_s is not None and time.monotonic() - last_record >= max_idle_s:
                    return
                continue
            last_record = time.monotonic()
            if not self.stats.first_record:
                self.stats.first_record = time.perf_counter()
            per_topic: Counter[str] = Counter()
            for tp, messages in batches.items():
                per_topic[tp.topic] += len(messages)
            async with self.batch_lock:
                done = await self._process_with_retry(records, per_topic)
                if done:
                    await self._commit(batches)
                    self.stats.last_batch = time.perf_counter()
                    if self.moved:
                        self.stats.rebalances += 1
                        self.moved = False
            self._update_lag()

    async def _process_with_retry(self, records: list[KafkaRecord], per_topic: Mapping[str, int]) -> bool:
        delay = _BACKOFF_START_S
        while True:
            try:
                await self._process(records, per_topic)
                if not self.healthy:
                    logger.info("batch went through; healthy again")
                self.healthy, self.last_error = True, None
                self.metrics.healthy.set(1)
                return True
            except ServiceUnavailable as exc:
                self._fault("redis" if "Redis" in str(exc) else "kafka", str(exc))
            if self.stopping.is_set():
                logger.warning("stopping with an unfinished batch; nothing of it is committed")
                return False
            self.stats.retries += 1
            await self._sleep(delay)
            delay = min(delay * 2, self.settings.retry_backoff_max_s)

    def _fault(self, cause: str, message: str) -> None:
        if self.healthy or self.last_error != message:
            logger.error("%s; retrying with backoff", message)
        self.healthy, self.last_error = False, message
        self.metrics.healthy.set(0)
        self.metrics.retries.labels(cause).inc()

    async def _process(self, records: list[KafkaRecord], per_topic: Mapping[str, int]) -> None:
        started = time.perf_counter()
        outcome = await self.scorer.process(records)
        scored_at = time.perf_counter()
        await self._publish(outcome)
        write_started = time.perf_counter()
        await self.store.put_many(outcome.states, self.settings.state_ttl_s)
        finished = time.perf_counter()
        if self.latencies is not None:
            now_ms = time.time() * 1000
            self.latencies.extend(now_ms - r.timestamp for r in records)
        self._account(per_topic, outcome, scored_at - started, finished - write_started, finished - started)

    async def _publish(self, outcome: BatchOutcome) -> None:
        """Dead letters and alerts, each acknowledged by the broker before states are written."""
        assert self._producer is not None
        try:
            futures = []
            for dead in outcome.dead:
                futures.append(
                    await self._producer.send(
                        self.settings.deadletter_topic,
                        value=dead.record.value or b"",
                        key=dead.record.key,
                        headers=dead.headers(),
                    )
                )
            for alert in outcome.alerts:
                futures.append(
                    await self._producer.send(
                        self.settings.alerts_topic,
                        value=orjson.dumps(alert),
                        key=alert["key"].encode(),
                    )
                )
            if futures:
                await asyncio.gather(*futures)
        except KafkaError as exc:
            raise KafkaUnavailable(f"publishing alerts/dead letters failed: {exc}") from exc

    async def _commit(self, batches: Mapping[TopicPartition, list[Any]]) -> None:
        """Commit the batch's offsets without waiting for the broker's answer: scoring the next
        batch overlaps the round trip (~6 ms a batch). One commit is in flight at a time, so they
        land in order; a crash before it lands redelivers the batch, and the fence skips it."""
        offsets = {tp: messages[-1].offset + 1 for tp, messages in batches.items() if messages}
        self._next_offset.update(offsets)
        await self.commits_sent()
        self._commit_task = asyncio.create_task(self._send_commit(offsets))

    async def commits_sent(self) -> None:
        """Wait for the commit in flight, if any (before a rebalance or a stop)."""
        if self._commit_task is not None:
            task, self._commit_task = self._commit_task, None
            await task

    async def _send_commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError as exc:
            # A rebalance took the partitions: the next owner re-reads them; the fence skips what we applied.
            logger.warning("commit failed after a rebalance (%s); the next owner re-reads those offsets", exc)
        except KafkaError as exc:
            self._fault("kafka", f"commit failed: {exc}")

    def _account(
        self,
        per_topic: Mapping[str, int],
        outcome: BatchOutcome,
        step_s: float,
        write_s: float,
        total_s: float,
    ) -> None:
        m, s = self.metrics, self.stats
        s.batches += 1
        events = sum(per_topic.values())
        s.events += events
        s.scored += outcome.scored
        s.dead += len(outcome.dead)
        s.alerts += len(outcome.alerts)
        s.fenced += outcome.fenced
        for topic, count in per_topic.items():
            m.events.labels(self.scorer.topic_kinds.get(topic, "unknown")).inc(count)
        m.scored.inc(outcome.scored)
        m.dead.inc(len(outcome.dead))
        m.fenced.inc(outcome.fenced)
        for alert in outcome.alerts:
            m.alerts.labels(alert["kind"], alert["severity"]).inc()
        m.batch_size.observe(events)
        m.step_seconds.observe(step_s)
        m.redis_seconds.observe(write_s)
        m.batch_seconds.observe(total_s)
        for dead in outcome.dead:
            r = dead.record
            logger.info("%s[%d] offset %d: dead-lettered: %s", r.topic, r.partition, r.offset, dead.reason)

    def _update_lag(self) -> None:
        """Records behind the log end, per assigned partition we have read from."""
        if self._consumer is None:
            return
        for tp in self._consumer.assignment():
            high = self._consumer.highwater(tp)
            position = self._next_offset.get(tp)
            if high is None or position is None:
                continue
            lag = max(0, high - position)
            self.lag[f"{tp.topic}[{tp.partition}]"] = lag
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)

    # -- health and metrics --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "error": self.last_error,
            "events": self.stats.events,
            "alerts": self.stats.alerts,
            "dead_letters": self.stats.dead,
            "lag": sum(self.lag.values()),
        }

    async def _start_http(self) -> web.AppRunner | None:
        if not self.settings.http_port:
            return None

        async def health(_: web.Request) -> web.Response:
            body = self.health()
            return web.json_response(body, status=200 if body["healthy"] else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(
                body=generate_latest(self.metrics.registry),
                headers={"Content-Type": CONTENT_TYPE_LATEST},
            )

        app = web.Application()
        app.router.add_get("/health", health)
        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, self.settings.http_host, self.settings.http_port).start()
        logger.info("health and metrics on http://%s:%d/", self.settings.http_host, self.settings.http_port)
        return runner
