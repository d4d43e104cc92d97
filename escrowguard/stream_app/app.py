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
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust

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
    """The plain Faust path: an agent over ``stream.noack_take`` (acks only once outputs
    are sent), partitions tracked through Faust's rebalance signals, and a timer that keeps
    deciding when input pauses (buffered events wait for the frontier, not for input)."""
    s = runtime.settings
    names = input_topics(s.topics)
    topics = app.topic(
        *names, value_type=bytes, key_type=bytes, value_serializer="raw", key_serializer="raw"
    )
    unacked: dict[tuple[str, int, int], Any] = {}
    streams: list[Any] = []
    lock = asyncio.Lock()
    started = asyncio.Event()

    @app.task
    async def _start_runtime() -> None:
        await runtime.start()
        started.set()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def _revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        gone = [(tp.topic, tp.partition) for tp in revoked if tp.topic in names]
        runtime.worker.revoke(gone)
        for key in [k for k in unacked if (k[0], k[1]) in set(gone)]:
            unacked.pop(key)

    caught_up_since: dict[tuple[str, int], float] = {}

    async def track_silent_partitions() -> None:
        """A partition is tracked from its first delivered message. One that delivers none
        (empty, or consumed to the end before) is tracked once Faust's position has stood at
        its high watermark for the idle time: else it would hold the frontier back."""
        known = set(runtime.worker.buffer.partitions)
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
            if now - since >= runtime.worker.buffer.idle_s:
                fresh[key] = position
        if fresh:
            runtime.worker.assign(fresh, now)

    async def decide(messages: Sequence[RawMessage]) -> None:
        await started.wait()
        async with lock:
            now = time.monotonic()
            for tp in app.consumer.assignment():
                if tp.topic in names:
                    runtime.worker.buffer.note_fetch(
                        (tp.topic, tp.partition), app.consumer.highwater(tp), now
                    )
            await runtime.decide(messages, strict_offsets=False)
            if streams:
                # ack exactly the messages whose outputs are sent; Faust commits contiguous
                committed = runtime.worker.buffer.commit_offsets()
                for key in [k for k in unacked if k[2] < committed.get((k[0], k[1]), 0)]:
                    await streams[0].ack(unacked.pop(key))

    @app.agent(topics, concurrency=1)
    async def score(stream: faust.StreamT) -> None:
        streams.append(stream)
        async for events in stream.noack_take(  # type: ignore[attr-defined]
            s.worker.batch_max_events, within=s.worker.batch_max_wait_ms / 1000
        ):
            messages = []
            first: dict[tuple[str, int], int] = {}
            for event in events:
                m = event.message
                messages.append(RawMessage(m.topic, m.partition, m.offset, m.value))
                unacked[(m.topic, m.partition, m.offset)] = event
                first.setdefault((m.topic, m.partition), m.offset)
            known = set(runtime.worker.buffer.partitions)
            runtime.worker.assign(
                {tp: off for tp, off in first.items() if tp not in known}, time.monotonic()
            )
            await decide(messages)

    @app.timer(interval=max(s.worker.batch_max_wait_ms / 1000, 0.05))
    async def _tick() -> None:
        if started.is_set():
            await track_silent_partitions()
            await decide(())


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
