"""The agent path (``worker.consumption = "agent"``) drains a backlog that takes longer than
the max poll interval, with a bounded reorder buffer.

A backlog is replayed before the worker starts (~22.7k events, seed 7, scale 2), then one
agent-path worker drains it with ``kafka.max_poll_interval_ms`` = 5 s, far less than the
drain takes, and a reorder buffer of 2,000 events, far less than the backlog. Faust's fetch
loop must keep polling the whole time: a member that stops polling for longer than the
interval is dropped from the group, and Faust (0.15.3) then never consumes again (its
revoke handler stops the flow until a reassignment that aiokafka only requests from a
consumer that polls; robinhood/faust issue 517). Before the fix the agent decided the whole
buffered backlog in one call while Faust waited on the agent, so it was dropped and stuck.

Checked: every input message committed (committed offsets move only once a message's
outputs are sent), every event scored or dead-lettered, nothing left buffered, and the
buffer, sampled from ``/health`` while draining, never far above its bound: Faust's stream
queue, and one poll (``worker.batch_max_events``) per partition holding the frontier back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from escrowguard.demo import train_and_promote
from escrowguard.infra import create_topics
from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history
from escrowguard.producers.replay import replay_file
from escrowguard.settings import Settings
from escrowguard.stream_app.supervisor import GroupProgress, WorkerProcess, wait_caught_up
from escrowguard.topics import input_topics
from tests.redis_state import drop_namespace_keys

pytestmark = pytest.mark.integration

BUFFER_MAX = 2_000
STREAM_QUEUE = 1_000
BATCH = 100


@pytest.fixture
def agent_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """An agent-path worker's settings: own topics, group, Redis keys, a trained bundle, a
    5 s max poll interval and a small reorder buffer."""
    tag = f"a{uuid.uuid4().hex[:10]}"
    scoped = settings.replace(
        topics={"prefix": f"{tag}."},
        redis={"key_prefix": tag},
        kafka={"consumer_group": f"{tag}-scorer", "max_poll_interval_ms": 5_000},
        models={"registry_dir": str(tmp_path / "registry"), "bundle_dir": ""},
        worker={
            "consumption": "agent",
            "reorder_buffer_max_events": BUFFER_MAX,
            "stream_buffer_maxsize": STREAM_QUEUE,
            "batch_max_events": BATCH,
        },
    )
    write_history(generate_history(42, 1.0), tmp_path / "training")
    train_and_promote(tmp_path / "training", tmp_path / "models", scoped, echo=lambda _: None)
    create_topics(scoped)
    yield scoped
    drop_namespace_keys(scoped)


def test_agent_path_drains_a_backlog_longer_than_the_max_poll_interval(
    agent_settings: Settings, tmp_path: Path
) -> None:
    s = agent_settings
    write_history(generate_history(7, 2.0), tmp_path / "backlog")
    replayed = replay_file(s, tmp_path / "backlog" / "events.jsonl", progress=False)
    assert replayed.ok, replayed.lines()

    worker = WorkerProcess(s, tmp_path / "worker.log")
    buffered: list[int] = []

    def sample(_: GroupProgress) -> None:
        buffered.append(int(worker.health()["buffered"]))  # type: ignore[call-overload]

    worker.start()
    try:
        worker.wait_serving()
        progress = wait_caught_up(s, [worker], timeout_s=180, on_progress=sample)
        health = worker.health()
        metrics = worker.metrics()
    finally:
        worker.stop()

    assert progress.committed == progress.total == replayed.total_sent
    decided = _metric_sum(metrics, "escrowguard_events_scored_total") + _metric_sum(
        metrics, "escrowguard_dead_letters_total"
    )
    assert decided >= replayed.total_sent, (decided, replayed.total_sent)
    assert health["buffered"] == 0
    # sampled while draining: the buffer stayed within its bound, plus what Faust had in its
    # stream queue and what may arrive while over it: a poll per partition that holds the
    # frontier back (before the fix: the whole backlog, ~20k)
    partitions = len(input_topics(s.topics)) * s.topics.partitions
    assert max(buffered) <= BUFFER_MAX + STREAM_QUEUE + partitions * BATCH, max(buffered)


def _metric_sum(metrics: str, name: str) -> float:
    """A counter summed over its label sets, from Prometheus text."""
    total = 0.0
    for line in metrics.splitlines():
        head, _, value = line.rpartition(" ")
        if head.partition("{")[0] == name:
            total += float(value)
    return total
