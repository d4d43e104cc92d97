"""The batch consumption path: aiokafka ``getmany()`` in the consumer group.

``BatchLoop`` drains the input partitions in batches, hands them to the ``Runtime``,
commits each partition up to its first message whose outputs are not sent yet, and pauses
partitions that run ahead in event time while the reorder buffer is full. It resumes each
partition from the earlier of Kafka's commit and Redis's stored position, so a Redis that
lost its last writes (restart without the last second of its append-only file) is replayed
into, not skipped; it does the same when it sees Redis restart mid-stream. While Redis has
lost the state (``Runtime.state_lost``) every partition stays paused (the worker stays in the
group and fetches nothing); once a whole state is marked again it rewinds the same way.

Two users: ``BatchConsumer``, the Faust service of a running worker, and
``rebuild_state``, which replays the input topics into an empty Redis and stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service

from escrowguard.errors import StoreError
from escrowguard.kafka_config import aiokafka_consumer
from escrowguard.logs import log_event
from escrowguard.stream_app.runtime import Runtime
from escrowguard.stream_app.worker import RawMessage, tp_key
from escrowguard.topics import input_topics

log = logging.getLogger(__name__)


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, loop: BatchLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.loop.runtime.worker.revoke([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.loop.assigned(list(assigned))


class BatchLoop:
    """One consumer in the group, feeding one ``Runtime``."""

    def __init__(self, runtime: Runtime, group: str | None = None) -> None:
        self.runtime = runtime
        s = runtime.settings
        self.consumer = AIOKafkaConsumer(
            **aiokafka_consumer(s.kafka, group or s.kafka.consumer_group)
        )
        self._paused: set[TopicPartition] = set()
        runtime.worker.after_batch = self._commit

    async def start(self) -> None:
        """Start the runtime and the consumer; join the group."""
        await self.runtime.start()
        await self.consumer.start()
        self.consumer.subscribe(
            input_topics(self.runtime.settings.topics), listener=_Rebalance(self)
        )

    async def stop(self) -> None:
        """Leave the group and stop the runtime."""
        await self.consumer.stop()
        await self.runtime.stop()

    async def assigned(self, tps: list[TopicPartition]) -> None:
        """Resume each partition from the earlier of Kafka's commit and Redis's position.

        The partitions stay paused while their positions are looked up, so no fetch can
        hand over records from before the seek.
        """
        if not tps:
            return
        self.consumer.pause(*tps)
        try:
            positions = await self._resume_positions(tps)
            self.runtime.worker.assign(positions, time.monotonic())
        finally:
            if self.runtime.state_lost is None:  # else they stay paused: nothing is decided
                self.consumer.resume(*(set(tps) - self._paused))
        log_event(
            log,
            "partitions_assigned",
            count=len(tps),
            resume=",".join(f"{t}:{p}@{o}" for (t, p), o in sorted(positions.items())),
        )

    async def _resume_positions(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
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
        return positions

    async def rewind_to_store(self) -> None:
        """Redis restarted: resume every owned partition from what Redis still holds."""
        tps = sorted(self.consumer.assignment())
        if not tps:
            return
        self.runtime.store.cache.clear()
        self.consumer.pause(*tps)
        try:
            stored = await self._stored_positions()
            unsent = self.runtime.worker.buffer.commit_offsets()
            positions = {}
            for tp in tps:
                key = (tp.topic, tp.partition)
                options = [o for o in (stored.get(tp_key(key)), unsent.get(key)) if o is not None]
                if options:
                    positions[key] = min(options)
                    self.consumer.seek(tp, positions[key])
            self.runtime.worker.assign(positions, time.monotonic())
        finally:
            self.consumer.resume(*(set(tps) - self._paused))
        log_event(
            log,
            "rewound_to_store",
            logging.WARNING,
            resume=",".join(f"{t}:{p}@{o}" for (t, p), o in sorted(positions.items())),
        )

    async def _stored_positions(self) -> dict[str, int]:
        """Redis's positions, retried with backoff (a restarted Redis answers "loading"
        until it has read its append-only file back)."""
        delay = self.runtime.settings.redis.retry_backoff_initial_s
        while True:
            try:
                return await self.runtime.store.positions()
            except StoreError as exc:
                log_event(log, "rewind_retry", logging.WARNING, error=exc.message, retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.runtime.settings.redis.retry_backoff_max_s)

    async def step(self) -> int:
        """Fetch one batch, decide what the frontier allows, commit. Returns messages read."""
        s = self.runtime.settings
        try:
            batches = await self.consumer.getmany(
                timeout_ms=s.worker.batch_max_wait_ms, max_records=s.worker.batch_max_events
            )
        except KafkaError as exc:
            log_event(log, "fetch_failed", logging.WARNING, error=str(exc))
            await asyncio.sleep(1.0)
            return 0
        messages = []
        now_s = time.monotonic()
        for records in batches.values():
            messages += [RawMessage(r.topic, r.partition, r.offset, r.value) for r in records]
        for tp in self.consumer.assignment():
            self.runtime.worker.buffer.note_fetch(
                (tp.topic, tp.partition), self.consumer.highwater(tp), now_s
            )
        await self.runtime.decide(messages)
        if self.runtime.state_lost is not None:
            # decide nothing, fetch nothing (the buffer would only grow); rewound later
            held = set(self.consumer.assignment()) - self.consumer.paused()
            if held:
                self.consumer.pause(*held)
            self._lag()
            return len(messages)
        if self.runtime.store_restarted:
            self.runtime.store_restarted = False
            await self.rewind_to_store()
        await self._commit()
        self._flow_control()
        self._lag()
        return len(messages)

    def caught_up(self) -> bool:
        """Every assigned partition read to its high watermark and the buffer empty."""
        assignment = self.consumer.assignment()
        if not assignment or len(self.runtime.worker.buffer):
            return False
        for tp in assignment:
            high = self.consumer.highwater(tp)
            next_offset = self.runtime.worker.buffer.next_offset((tp.topic, tp.partition))
            if high is None or next_offset is None or next_offset < high:
                return False
        return True

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
        """Bounded buffer: pause partitions ahead in event time while it is full.

        Once full, and until it drains to half, the paused set follows the laggards after
        every batch: the partition holding the frontier back changes as events are decided,
        and it must be the one fetched (else nothing more can be decided: a deadlock)."""
        buffer = self.runtime.worker.buffer
        assigned = self.consumer.assignment()
        self._paused &= assigned  # a rebalance took the others (and their pause) away
        if buffer.over_capacity() or (self._paused and len(buffer) >= buffer.max_events // 2):
            keep = buffer.laggards()
            pause = {tp for tp in assigned if (tp.topic, tp.partition) not in keep}
            if pause - self._paused:
                self.consumer.pause(*(pause - self._paused))
            if self._paused - pause:
                self.consumer.resume(*(self._paused - pause))
            self._paused = pause
        elif self._paused:
            self.consumer.resume(*self._paused)
            self._paused.clear()

    def _lag(self) -> None:
        metrics = self.runtime.metrics
        buffer = self.runtime.worker.buffer
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            next_offset = buffer.next_offset((tp.topic, tp.partition))
            if high is not None and next_offset is not None:
                metrics.set(
                    "escrowguard_consumer_lag",
                    max(high - next_offset, 0),
                    partition=tp_key((tp.topic, tp.partition)),
                )
        metrics.set("escrowguard_reorder_buffer_events", len(buffer))


class BatchConsumer(Service):
    """The batch path as a Faust app service (started and stopped with the app)."""

    def __init__(self, runtime: Runtime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.loop_ = BatchLoop(runtime)

    async def on_start(self) -> None:
        await self.loop_.start()

    async def on_stop(self) -> None:
        await self.loop_.stop()

    @Service.task
    async def _drain_loop(self) -> None:
        while not self.should_stop:
            await self.loop_.step()
