"""Worker processes run from Python: the demo, the benchmark and the fault tests start
``escrowguard worker`` children, kill or stop them, and wait until the consumer group has
decided everything on the input topics.

"Everything" is measured against the high watermark of fetch responses, never against
``end_offsets()``, which under-reports on the embedded broker (DESIGN.md, "Broker caveats").
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from escrowguard.errors import InfraError
from escrowguard.infra.admin import _admin
from escrowguard.infra.processes import ChildProcess, free_port
from escrowguard.kafka_config import client_options
from escrowguard.settings import Settings, settings_env
from escrowguard.topics import input_topics

#: (topic, partition) -> offset
Offsets = dict[tuple[str, int], int]


class WorkerProcess:
    """One ``escrowguard worker`` child on its own loopback HTTP port.

    ``settings`` reach the child as ``ESCROWGUARD_*`` variables (secrets included: the
    environment is the child's, nothing is logged). The child dies with its parent.
    """

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        *,
        bundle: Path | None = None,
        name: str = "worker",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings.replace(http={"port": free_port(), "bind": "127.0.0.1"})
        self.name = name
        argv = [sys.executable, "-m", "escrowguard", "worker"]
        if bundle is not None:
            argv += ["--models", str(bundle)]
        self._env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("ESCROWGUARD_")},
            **settings_env(self.settings),
            **(extra_env or {}),
        }
        self._env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self._env.pop("REDIS_URL", None)
        self._child = ChildProcess(name, argv, log_path, env=self._env)
        self.starts = 0

    @property
    def url(self) -> str:
        """Base URL of the worker's HTTP views."""
        return f"http://127.0.0.1:{self.settings.http.port}"

    @property
    def log_path(self) -> Path:
        return self._child.log_path

    @property
    def pid(self) -> int | None:
        return self._child.pid

    def start(self) -> None:
        """Start the child (again, after a kill)."""
        self._child.start()
        self.starts += 1

    def alive(self) -> bool:
        return not self._child.exited()

    def kill(self) -> None:
        """SIGKILL: no clean-up, no commit, no goodbye to the group."""
        self._child.stop(hard=True)

    def pause(self) -> None:
        self._child.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._child.signal(signal.SIGCONT)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM and wait (a clean stop leaves the group and commits)."""
        self._child.stop(timeout_s=timeout_s)

    def log_tail(self, lines: int = 15) -> str:
        return self._child.log_tail(lines)

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
        """(status, body) of a GET on the worker's HTTP views."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout_s) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_serving(self, timeout_s: float = 90.0) -> None:
        """Wait until the HTTP views answer; InfraError with the log's tail if the child dies."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise InfraError(f"{self.name} exited during start-up: {self.log_tail()}")
            try:
                self.get("/health", timeout_s=1.0)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(0.2)
        raise InfraError(f"{self.name} did not serve HTTP within {timeout_s:.0f} s")

    def metrics(self) -> str:
        """The worker's /metrics text."""
        status, body = self.get("/metrics")
        if status != 200:
            raise InfraError(f"{self.name} /metrics answered {status}")
        return body.decode()

    def health(self) -> dict[str, object]:
        status, body = self.get("/health")
        health: dict[str, object] = json.loads(body)
        health["http_status"] = status
        return health


def high_watermarks(settings: Settings, topics: Sequence[str], timeout_s: float = 30.0) -> Offsets:
    """Each partition's high watermark, read from fetch responses (exact on every broker)."""
    consumer = KafkaConsumer(
        **client_options(settings.kafka, client_suffix="watermarks"),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        deadline = time.monotonic() + timeout_s
        marks: Offsets = {}
        while len(marks) < len(partitions):
            if time.monotonic() > deadline:
                raise InfraError(f"no fetch answer for {len(partitions) - len(marks)} partitions")
            consumer.poll(timeout_ms=200, max_records=1)
            for tp in partitions:
                high = consumer.highwater(tp)
                if high is not None:
                    marks[(tp.topic, tp.partition)] = high
        return marks
    except KafkaError as exc:
        raise InfraError(f"reading high watermarks failed: {exc}", "broker_unavailable") from exc
    finally:
        consumer.close(autocommit=False)


def committed_offsets(settings: Settings, group: str) -> Offsets:
    """The group's committed offsets (partitions without a commit are absent)."""
    with _admin(settings, 30.0) as admin:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    return {
        (tp.topic, tp.partition): meta.offset for tp, meta in committed.items() if meta.offset >= 0
    }


@dataclass(frozen=True)
class GroupProgress:
    """How far a consumer group is through the input topics."""

    committed: int
    total: int

    @property
    def lag(self) -> int:
        return self.total - self.committed


def group_progress(settings: Settings, group: str | None = None) -> GroupProgress:
    """Committed vs available messages on the input topics for ``group`` (default: the
    configured one)."""
    marks = high_watermarks(settings, input_topics(settings.topics))
    committed = committed_offsets(settings, group or settings.kafka.consumer_group)
    done = sum(min(max(committed.get(tp, 0), 0), high) for tp, high in marks.items())
    return GroupProgress(committed=done, total=sum(marks.values()))


def wait_caught_up(
    settings: Settings,
    workers: Sequence[WorkerProcess],
    *,
    timeout_s: float = 600.0,
    on_progress: Callable[[GroupProgress], None] | None = None,
    poll_s: float = 0.5,
) -> GroupProgress:
    """Wait until the group committed every input message; InfraError when a worker died or
    the deadline passed (the message says which and shows the worker's log)."""
    deadline = time.monotonic() + timeout_s
    while True:
        for worker in workers:
            if not worker.alive():
                raise InfraError(f"{worker.name} exited: {worker.log_tail()}")
        progress = group_progress(settings)
        if on_progress is not None:
            on_progress(progress)
        if progress.lag <= 0:
            return progress
        if time.monotonic() > deadline:
            raise InfraError(
                f"the group did not catch up within {timeout_s:.0f} s "
                f"({progress.committed:,}/{progress.total:,} committed)"
            )
        time.sleep(poll_s)


def rewind_group(settings: Settings, group: str | None = None, offset: int = 0) -> int:
    """Set the group's committed offset of every input partition to ``offset`` (redelivery
    on purpose, e.g. to test idempotency). Run it with the group's workers stopped.

    It joins the group and commits as a member: the embedded broker refuses an admin
    OffsetCommit (``alter_group_offsets``) with UNKNOWN_MEMBER_ID for as long as a member
    that died without leaving is remembered, which is indefinitely (docs/infra.md).
    Returns the number of partitions rewound.
    """
    k = settings.kafka
    topics = input_topics(settings.topics)
    marks = high_watermarks(settings, topics)
    consumer = KafkaConsumer(
        **client_options(k, client_suffix="rewind"),
        group_id=group or k.consumer_group,
        enable_auto_commit=False,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        fetch_max_wait_ms=k.fetch_max_wait_ms,
    )
    try:
        consumer.subscribe(topics)
        wanted = {TopicPartition(t, p) for t, p in marks}
        deadline = time.monotonic() + k.rebalance_timeout_ms / 1000 * 2
        while set(consumer.assignment()) != wanted:
            if time.monotonic() > deadline:
                raise InfraError("could not join the group to rewind it: are workers running?")
            consumer.poll(timeout_ms=200, max_records=1)
        consumer.commit(
            {
                TopicPartition(t, p): OffsetAndMetadata(min(offset, high), "", -1)
                for (t, p), high in marks.items()
            }
        )
    except KafkaError as exc:
        raise InfraError(f"rewinding the group failed: {exc}", "broker_unavailable") from exc
    finally:
        consumer.close(autocommit=False)
    return len(marks)
