"""Three workers in one group over 12 partitions; one is killed; the others take over its partitions."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from pipeline.settings import Settings
from tests.integration.test_worker import EVENTS, stream_topic  # noqa: F401  (fixture)
from tests.integration.worker_helpers import (
    WorkerEnv,
    assert_same_states,
    committed,
    group_members,
    produce_events,
    read_states,
    wait_for,
)


def test_three_workers_one_killed_end_as_one_worker(
    kafka_up: Settings,
    new_topic: Callable[..., str],
    stream_topic: tuple[str, list[dict[str, Any]]],  # noqa: F811
) -> None:
    _, events = stream_topic
    topic = new_topic(partitions=12)
    half = EVENTS // 2
    produce_events(kafka_up, topic, events[:half])

    single = WorkerEnv(topic)
    env = WorkerEnv(topic)
    workers = [env.start("--batch-size", "100") for _ in range(3)]
    try:
        wait_for(lambda: group_members(kafka_up, env.group) == 3, 90, "three workers in the group")
        wait_for(lambda: committed(kafka_up, env.group, topic) == half, 120, "the first half committed")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].communicate(timeout=30)
        produce_events(kafka_up, topic, events[half:])
        # The group notices the dead member (session timeout) and hands its partitions over.
        wait_for(lambda: committed(kafka_up, env.group, topic) == EVENTS, 180, "the survivors to drain the lag")
        assert group_members(kafka_up, env.group) == 2
    finally:
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        outputs = [w.communicate(timeout=120) for w in workers[1:]]
    assert all(w.returncode == 0 for w in workers[1:]), [o[1][-1500:] for o in outputs]
    per_worker = [int(o[1].split("worker stopped: ")[1].split(" events")[0]) for o in outputs]
    assert all(n > 0 for n in per_worker), per_worker

    single.run()  # the same topic, one uninterrupted worker, its own group and namespace
    assert_same_states(read_states(env.redis_url, env.namespace), read_states(single.redis_url, single.namespace))
