"""The Faust app: lifecycle, web views, and the two ways of consuming the input topics.

- ``worker.consumption = "batch"`` (default): a Faust service drains the input partitions
  with aiokafka ``getmany()`` in the consumer group, commits offsets itself once a batch's
  outputs are acknowledged, and pauses partitions that run ahead in event time.
- ``worker.consumption = "agent"``: a Faust agent (``concurrency=1``) over
  ``stream.noack_take(n, within)``; events are acked only when their outputs are sent.

Both hand raw messages to the same ``ScoringWorker``. ``faust -A
escrowguard.stream_app.app worker`` works too (settings from the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from escrowguard.errors import EscrowguardError
from escrowguard.kafka_config import faust_broker_url
from escrowguard.settings import Settings, load_settings
from escrowguard.stream_app.batch import BatchConsumer
from escrowguard.stream_app.runtime import Runtime
from escrowguard.stream_app.web import register_views
from escrowguard.stream_app.worker import RawMessage
from escrowguard.topics import input_topics

log = logging.getLogger(__name__)


def create_app(settings: Settings, bundle: Path | None = None) -> faust.App:
    """Build the Faust app for ``settings`` (and an explicit bundle, else the registry's)."""
    s = settings
    app = faust.App(
        s.kafka.consumer_group,
        broker=faust_broker_url(s.kafka),
        broker_credentials=_faust_credentials(s),
        processing_guarantee="at_least_once",
        topic_partitions=s.topics.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        store="memory://",
        # Faust makes a data directory even with no tables: keep it out of the working dir
        datadir=str(Path(tempfile.gettempdir()) / f"escrowguard-faust-{os.getuid()}"),
        web_enabled=True,
        web_bind=s.http.bind,
        web_host=s.http.bind,
        web_port=s.http.port,
        stream_buffer_maxsize=s.worker.stream_buffer_maxsize,
        # events wait in the reorder buffer, unacked, for the event-time frontier: a
        # rebalance must not wait for them (the next owner re-reads them: at-least-once)
        stream_wait_empty=False,
        broker_session_timeout=s.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=s.kafka.heartbeat_interval_ms / 1000,
        broker_max_poll_interval=s.kafka.max_poll_interval_ms / 1000,
        # agent path: Faust hands over a poll's records whatever flow control says since;
        # a batch's worth bounds how far the reorder buffer can overshoot (else a poll
        # returns everything aiokafka prefetched: up to a fetch per partition)
        broker_max_poll_records=s.worker.batch_max_events,
        broker_rebalance_timeout=s.kafka.rebalance_timeout_ms / 1000,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        worker_redirect_stdouts=False,
        web_in_thread=False,
    )
    runtime = Runtime(s, bundle)
    app.escrowguard = runtime  # type: ignore[attr-defined]
    register_views(app, runtime)
    if s.worker.consumption == "batch":
        app.boot_strategy = faust.App.BootStrategy(
            app, enable_kafka_consumer=False, enable_kafka_producer=False
        )

        @app.service
        class _Batch(BatchConsumer):
            def __init__(self, **kwargs: Any) -> None:
                super().__init__(runtime, **kwargs)

    else:
        _add_agent(app, runtime)
    return app


def _add_agent(app: faust.App, runtime: Runtime) -> None:
    """The plain Faust path: an agent over ``stream.noack_take`` that only hands messages
    over, and a task that decides them, acks what is sent (so Faust commits only that) and
    pauses the partitions that run ahead while the reorder buffer is full.

    The agent never waits for deciding: Faust's fetch loop waits on the agent (its stream
    queue fills), and a member that stops polling for ``kafka.max_poll_interval_ms`` is
    dropped from the group, after which Faust (0.15.3) never consumes again: its revoke
    handler stops the flow until a reassignment that aiokafka only asks for once it is
    polled again (robinhood/faust issue 517). Deciding a backlog takes as long as it takes.
    """
    s = runtime.settings
    w = runtime.worker
    names = input_topics(s.topics)
    topics = app.topic(
        *names, value_type=bytes, key_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    inbox: list[RawMessage] = []  # handed over by the agent, not yet in the buffer
    unacked: dict[tuple[str, int], deque[tuple[int, Any]]] = defaultdict(deque)
    paused: set[TopicPartition] = set()  # partitions this path paused in aiokafka
    streams: list[Any] = []
    arrived = asyncio.Event()
    tick_s = max(s.worker.batch_max_wait_ms / 1000, 0.05)

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        gone = {(tp.topic, tp.partition) for tp in revoked if tp.topic in names}
        w.revoke(gone)
        for tp in gone:
            unacked.pop(tp, None)
        inbox[:] = [m for m in inbox if (m.topic, m.partition) not in gone]
        paused.clear()  # aiokafka forgets pauses with the assignment

    caught_up_since: dict[tuple[str, int], float] = {}

    async def track_silent_partitions() -> None:
        """A partition is tracked from its first delivered message. One that delivers none
        (empty, or consumed to the end before) is tracked once Faust's position has stood at
        its high watermark for the idle time: else it would hold the frontier back."""
        known = set(w.buffer.partitions)
        now = time.monotonic()
        fresh = {}
        for tp in app.consumer.assignment():
            key = (tp.topic, tp.partition)
            if tp.topic not in names or key in known:
                continue
            position, high = await app.consumer.position(tp), app.consumer.highwater(tp)
            if position is None or high is None or position < high:
                caught_up_since.pop(key, None)
                continue
            since = caught_up_since.setdefault(key, now)
            if now - since >= w.buffer.idle_s:
                fresh[key] = position
        if fresh:
            w.assign(fresh, now)

    def take_inbox() -> None:
        """Move the handed-over messages into the reorder buffer (between batches only)."""
        messages = inbox[:]
        inbox.clear()
        now = time.monotonic()
        known = set(w.buffer.partitions)
        first: dict[tuple[str, int], int] = {}
        for m in messages:
            if (m.topic, m.partition) not in known:
                first.setdefault((m.topic, m.partition), m.offset)
        if first:
            w.assign(first, now)
        w.ingest(messages, now, datetime.now(UTC), strict_offsets=False)
        for tp in app.consumer.assignment():
            if tp.topic in names:
                w.buffer.note_fetch((tp.topic, tp.partition), app.consumer.highwater(tp), now)

    def flow_control(taken: bool) -> None:
        """Bounded buffer. While it is full (and until it drains to half): right after the
        inbox was taken into the buffer (``taken``), only the partitions holding the
        frontier back, and those not tracked yet, are fetched, as on the batch path; when
        the agent hands over more meanwhile, none are, until the next batch boundary.
        Paused in aiokafka, which Faust keeps polling (see ``_kafka_consumer``)."""
        buffer = w.buffer
        buffered, cap = len(buffer) + len(inbox), buffer.max_events
        runtime.metrics.set("escrowguard_reorder_buffer_events", buffered)
        full = buffered >= cap or (bool(paused) and buffered >= cap // 2)
        if not full and not paused:
            return
        consumer = _kafka_consumer(app)
        assigned = consumer.assignment()
        want: set[TopicPartition] = set()
        if full and not taken:
            want = set(assigned)
        elif full:
            tracked = set(buffer.partitions)
            # partitions that delivered nothing yet hold the frontier back the most
            waiting = any((tp.topic, tp.partition) not in tracked for tp in assigned)
            ahead = tracked if waiting else tracked - buffer.laggards()
            want = {tp for tp in assigned if (tp.topic, tp.partition) in ahead}
        # pause again every time: a rebalance gives the partitions back unpaused. One that a
        # rebalance took away meanwhile is no longer this worker's to pause or resume.
        for tp in want:
            with contextlib.suppress(IllegalStateError):
                consumer.pause(tp)
        for tp in paused - want:
            with contextlib.suppress(IllegalStateError):
                consumer.resume(tp)
        paused.clear()
        paused.update(want)

    async def after_batch() -> None:
        """Ack exactly the messages whose outputs are sent (Faust commits contiguous acks),
        take in what arrived meanwhile, follow the laggards."""
        if streams:
            for tp, offset in w.buffer.commit_offsets().items():
                queue = unacked.get(tp)
                while queue and queue[0][0] < offset:
                    await streams[0].ack(queue.popleft()[1])
        take_inbox()
        flow_control(taken=True)

    w.after_batch = after_batch

    @app.task
    async def _decide() -> None:
        # until the runtime has started, the agent's pauses bound the inbox
        await runtime.start()
        while True:
            decided = 0
            try:
                take_inbox()
                await track_silent_partitions()
                decided = await runtime.decide((), strict_offsets=False)
                await after_batch()
            except Exception:  # a bug, or Kafka answering badly: log it, keep deciding
                log.exception("agent_decide_failed")
            if not decided and not inbox:
                arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), tick_s)

    @app.agent(topics, concurrency=1)
    async def score(stream: faust.StreamT) -> None:
        streams.append(stream)
        async for events in stream.noack_take(  # type: ignore[attr-defined]
            s.worker.batch_max_events, within=s.worker.batch_max_wait_ms / 1000
        ):
            owned = {(tp.topic, tp.partition) for tp in app.consumer.assignment()}
            for event in events:
                m = event.message
                if (m.topic, m.partition) not in owned:
                    continue  # fetched before a rebalance took the partition away
                inbox.append(RawMessage(m.topic, m.partition, m.offset, m.value))
                unacked[(m.topic, m.partition)].append((m.offset, event))
            flow_control(taken=False)
            arrived.set()


def _kafka_consumer(app: faust.App) -> AIOKafkaConsumer:
    """The aiokafka consumer under Faust's consumer thread (Faust 0.15.3 has no public
    handle on it). Flow control pauses partitions there, not with Faust's
    ``pause_partitions``: Faust silently drops the records of a partition paused while it
    is still handing over a poll's records (aiokafka's position has moved past them), and
    with every partition paused it stops polling aiokafka altogether, so the member is
    dropped after the max poll interval. aiokafka's pause discards the records it holds for
    a paused partition without moving its position, and a poll still counts as one."""
    return app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]


def _faust_credentials(s: Settings) -> Any:
    k = s.kafka
    if not k.security_protocol.startswith("SASL"):
        return None
    return faust.SASLCredentials(
        username=k.sasl_username, password=k.sasl_password.reveal(), mechanism=k.sasl_mechanism
    )


_BUILT: dict[str, faust.App] = {}


def __getattr__(name: str) -> Any:
    """``faust -A escrowguard.stream_app.app worker`` reads ``app``: built on first access
    from the environment's settings, so importing this module has no side effects."""
    if name != "app":
        raise AttributeError(name)
    if "app" not in _BUILT:
        try:
            _BUILT["app"] = create_app(load_settings())
        except EscrowguardError as exc:
            raise SystemExit(f"error [{exc.reason}]: {exc}") from None
    return _BUILT["app"]
