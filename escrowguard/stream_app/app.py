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
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from escrowguard.errors import EscrowguardError, PublishError, StoreError
from escrowguard.infra import require_topics
from escrowguard.kafka_config import aiokafka_consumer, faust_broker_url
from escrowguard.logs import log_event
from escrowguard.models.features import FeatureWindows
from escrowguard.models.serving import ServingModels, load_serving_models
from escrowguard.settings import Settings, load_settings
from escrowguard.stream_app.emit import Publisher
from escrowguard.stream_app.metrics import Metrics
from escrowguard.stream_app.monitor import Monitor
from escrowguard.stream_app.pipeline import BatchProcessor
from escrowguard.stream_app.store import RedisStore
from escrowguard.stream_app.web import register_views
from escrowguard.stream_app.worker import RawMessage, ScoringWorker, tp_key
from escrowguard.topics import input_topics

log = logging.getLogger(__name__)


class Runtime:
    """Everything one worker process holds: settings, models, store, sender, worker."""

    def __init__(self, settings: Settings, bundle: Path | None = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models: ServingModels = load_serving_models(settings, bundle)
        self.windows = FeatureWindows.from_settings(
            settings.features, settings.thresholds.approval_target
        )
        self.models.check_windows(self.windows)
        self.store = RedisStore(settings, self.windows)
        self.publisher = Publisher(settings)
        self.processor = BatchProcessor(
            self.models, self.windows, settings.thresholds, settings.bandit
        )
        self.processor.monitor = Monitor(self.models, settings.thresholds)
        self.worker = ScoringWorker(
            settings, self.store, self.processor, self.publisher, self.metrics
        )
        self.started_s = time.monotonic()
        self.healthy = False
        self.redis_run_id = ""

    async def start(self) -> None:
        """Check topics and Redis, start the producer, register partitions."""
        require_topics(self.settings)
        self.redis_run_id = await self.store.wait_until_available()
        await self.publisher.start()
        partitions = []
        for topic in input_topics(self.settings.topics):
            partitions += [f"{topic}:{p}" for p in range(self.settings.topics.partitions)]
        await self.store.register_partitions(partitions)
        self.metrics.set("escrowguard_model_info", 1, version=self.models.version)
        log_event(
            log,
            "worker_started",
            model_version=self.models.version,
            consumption=self.settings.worker.consumption,
            group=self.settings.kafka.consumer_group,
        )

    async def stop(self) -> None:
        """Stop the producer and the Redis pool."""
        await self.publisher.stop()
        await self.store.close()

    def maybe_reload(self) -> None:
        """Switch to a newly promoted bundle at a batch boundary (no restart)."""
        fresh = self.models.reload_if_promoted(self.settings)
        if fresh is not None:
            fresh.check_windows(self.windows)
            self.models = fresh
            self.processor.models = fresh
            self.processor.monitor = Monitor(fresh, self.settings.thresholds)
            self.metrics.values.pop("escrowguard_model_info", None)
            self.metrics.set("escrowguard_model_info", 1, version=fresh.version)
            log_event(log, "model_promoted", model_version=fresh.version)

    async def decide(self, messages: Sequence[RawMessage], strict_offsets: bool = True) -> int:
        """Ingest and decide, retrying with backoff while Redis or Kafka is unavailable."""
        now_s, wall = time.monotonic(), datetime.now(UTC)
        self.worker.ingest(messages, now_s, wall, strict_offsets)
        delay = self.settings.redis.retry_backoff_initial_s
        while True:
            try:
                self.maybe_reload()
                n = await self.worker.drain(time.monotonic(), datetime.now(UTC))
                self.healthy = True
                self.worker.maybe_log(time.monotonic())
                return n
            except (StoreError, PublishError) as exc:
                self.healthy = False
                name = (
                    "escrowguard_store_errors_total"
                    if isinstance(exc, StoreError)
                    else "escrowguard_publish_errors_total"
                )
                self.metrics.inc(name)
                log_event(
                    log,
                    "batch_retry",
                    logging.WARNING,
                    reason=exc.reason,
                    error=exc.message,
                    retry_in_s=round(delay, 2),
                )
            except Exception:
                # a bug, not an outage: the buffer is untouched, so retrying is safe; the
                # per-event isolation in the pipeline keeps one bad event from looping here
                self.healthy = False
                self.metrics.inc("escrowguard_batch_failures_total")
                log.exception("batch_failed retry_in_s=%s", round(delay, 2))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.redis.retry_backoff_max_s)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, service: BatchConsumer) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.service.runtime.worker.revoke([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.assigned(list(assigned))


class BatchConsumer(Service):
    """Drains the input partitions with ``getmany()`` and commits after outputs are sent."""

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime
        s = runtime.settings
        self.consumer = AIOKafkaConsumer(**aiokafka_consumer(s.kafka, s.kafka.consumer_group))
        self._paused: set[TopicPartition] = set()

    async def on_start(self) -> None:
        await self.runtime.start()
        await self.consumer.start()
        self.consumer.subscribe(
            input_topics(self.runtime.settings.topics), listener=_Rebalance(self)
        )

    async def on_stop(self) -> None:
        await self.consumer.stop()
        await self.runtime.stop()

    async def assigned(self, tps: list[TopicPartition]) -> None:
        """Resume each partition from the earlier of Kafka's commit and Redis's position
        (a Redis that lost its last writes is replayed into, not skipped).

        The partitions stay paused while their positions are looked up, so no fetch can
        hand over records from before the seek.
        """
        if not tps:
            return
        self.consumer.pause(*tps)
        try:
            stored = await self.runtime.store.positions()
            beginning = await self.consumer.beginning_offsets(tps)
            positions = {}
            for tp in tps:
                committed = await self.consumer.committed(tp)
                redis_pos = stored.get(tp_key((tp.topic, tp.partition)))
                options = [o for o in (committed, redis_pos) if o is not None]
                offset = max(min(options), beginning[tp]) if options else beginning[tp]
                self.consumer.seek(tp, offset)
                positions[(tp.topic, tp.partition)] = offset
            self.runtime.worker.assign(positions, time.monotonic())
        finally:
            self.consumer.resume(*(set(tps) - self._paused))
        log_event(
            log,
            "partitions_assigned",
            count=len(tps),
            resume=",".join(f"{t}:{p}@{o}" for (t, p), o in sorted(positions.items())),
        )

    @Service.task
    async def _drain_loop(self) -> None:
        s = self.runtime.settings
        wait_ms = s.worker.batch_max_wait_ms
        while not self.should_stop:
            try:
                batches = await self.consumer.getmany(
                    timeout_ms=wait_ms, max_records=s.worker.batch_max_events
                )
            except KafkaError as exc:
                log_event(log, "fetch_failed", logging.WARNING, error=str(exc))
                await asyncio.sleep(1.0)
                continue
            messages = []
            now_s = time.monotonic()
            for records in batches.values():
                messages += [RawMessage(r.topic, r.partition, r.offset, r.value) for r in records]
            for tp in self.consumer.assignment():
                self.runtime.worker.buffer.note_fetch(
                    (tp.topic, tp.partition), self.consumer.highwater(tp), now_s
                )
            await self.runtime.decide(messages)
            await self._commit()
            self._flow_control()
            self._lag()

    async def _commit(self) -> None:
        offsets = {
            TopicPartition(topic, partition): offset
            for (topic, partition), offset in self.runtime.worker.buffer.commit_offsets().items()
        }
        if offsets:
            try:
                await self.consumer.commit(offsets)
            except KafkaError as exc:  # a rebalance in progress: the next batch commits
                log_event(log, "commit_failed", logging.WARNING, error=str(exc))

    def _flow_control(self) -> None:
        """Bounded buffer: pause partitions ahead in event time while it is full."""
        buffer = self.runtime.worker.buffer
        assigned = self.consumer.assignment()
        if buffer.over_capacity():
            keep = buffer.laggards()
            pause = {tp for tp in assigned if (tp.topic, tp.partition) not in keep}
            if pause - self._paused:
                self.consumer.pause(*(pause - self._paused))
                self._paused |= pause
        elif self._paused and len(buffer) < buffer.max_events // 2:
            self.consumer.resume(*self._paused)
            self._paused.clear()

    def _lag(self) -> None:
        metrics = self.runtime.metrics
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None:
                try:
                    position = self.consumer._subscription.assignment.state_value(tp).position
                except Exception:
                    continue
                if position is not None:
                    metrics.set(
                        "escrowguard_consumer_lag",
                        max(high - position, 0),
                        partition=tp_key((tp.topic, tp.partition)),
                    )
        metrics.set("escrowguard_reorder_buffer_events", len(self.runtime.worker.buffer))


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
