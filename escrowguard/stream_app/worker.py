"""The scoring worker's loop body, independent of how messages are consumed.

``ScoringWorker`` takes raw messages from a consumption adapter (the aiokafka batch consumer
or the Faust agent, ``app.py``), decodes them, buffers them until the event-time frontier
passes them, and decides them batch by batch:

    read contexts (Lua) -> decide (pure) -> write effects + frontier (Lua)
    -> send outputs and dead letters (acks=all) -> mark finished -> commit offsets

Any failure after the read rewinds the adapter to the last committed offsets; everything
it then re-reads is either a redelivery (same position, already applied: decided again to
re-send the same output ids) or not yet applied. Nothing is lost, nothing counted twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from escrowguard.errors import DecodeError
from escrowguard.events import decode
from escrowguard.logs import log_event
from escrowguard.outputs import Alert, AnyOutput, DeadLetter, MilestoneDecision, PayoutFreeze
from escrowguard.reasons import Reason
from escrowguard.settings import Settings
from escrowguard.stream_app.emit import dead_letter
from escrowguard.stream_app.faults import kill_point
from escrowguard.stream_app.metrics import Metrics
from escrowguard.stream_app.ordering import (
    UNBOUNDED,
    Pending,
    Position,
    ReorderBuffer,
    TopicPartition,
)
from escrowguard.stream_app.pipeline import (
    DAY_US,
    BatchProcessor,
    BatchReads,
    MissingBanditDays,
    Writes,
)
from escrowguard.topics import input_topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RawMessage:
    """One consumed message, as any consumption adapter hands it over."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


class Store(Protocol):
    """The feature store contract (``store.RedisStore``, ``memory_store.MemoryStore``)."""

    async def read(
        self,
        candidates: Sequence[Pending],
        own: Sequence[str],
        own_bound: int,
        cached_days: Collection[int],
        gate: bool = True,
        days: Collection[int] = (),
    ) -> BatchReads: ...

    async def write(
        self,
        writes: Writes,
        frontiers: dict[str, int],
        processed_max: int,
        positions: dict[str, int],
        labels_key: str = "",
    ) -> int: ...


class Sender(Protocol):
    """Where outputs go (``emit.Publisher`` or a list in tests)."""

    async def send_all(self, outputs: Sequence[AnyOutput]) -> None: ...


def tp_key(tp: TopicPartition) -> str:
    """``topic:partition``: how partitions are named in the store."""
    return f"{tp[0]}:{tp[1]}"


class ScoringWorker:
    """Decode, order, decide, store, emit; one instance per worker process."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        processor: BatchProcessor,
        sender: Sender,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.processor = processor
        self.sender = sender
        self.metrics = metrics or Metrics()
        w = settings.worker
        self.buffer = ReorderBuffer(w.reorder_buffer_max_events, w.idle_partition_ms / 1000)
        self.topic_suffix = {
            name: name[len(settings.topics.prefix) :] for name in input_topics(settings.topics)
        }
        self._dead: list[tuple[DeadLetter, Position]] = []
        self._bandit: dict[int, dict[str, tuple[int, int]]] = {}
        self._processed_max = -(2**62)
        self._published: dict[str, int] = {}
        self._last_log_s = 0.0
        # Called after every decided batch: the batch consumer commits there, so draining a
        # long backlog does not hold every commit back until the whole drain ends (a worker
        # killed every few batches of a backlog would otherwise never commit anything).
        self.after_batch: Callable[[], Awaitable[None]] | None = None

    # --- partitions ---

    def assign(self, positions: dict[TopicPartition, int], now_s: float) -> None:
        """Partitions given to this worker, each with the offset it resumes from."""
        self.buffer.assign(positions, now_s)

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Partitions taken away (their buffered events are re-read by the new owner)."""
        self.buffer.revoke(tps)
        self._dead = [(d, p) for d, p in self._dead if p[:2] not in set(tps)]

    def store_restarted(self) -> None:
        """Redis restarted, maybe without its last second of writes: forget what this worker
        learnt from it (the latest event time applied, bandit posteriors, the frontiers last
        published), so the events replayed into it are not taken for late ones."""
        self._processed_max = -(2**62)
        self._bandit = {}
        self._published = {}

    # --- intake ---

    def ingest(
        self,
        messages: Iterable[RawMessage],
        now_s: float,
        wall: datetime,
        strict_offsets: bool = True,
    ) -> None:
        """Decode messages into the buffer; contract violations become dead letters.

        ``strict_offsets`` drops messages at offsets already taken (the batch consumer
        seeks, and a fetch racing the seek can return them again). The Faust agent never
        seeks: everything it hands over is kept, a repeat is decided as a redelivery.
        """
        w = self.settings.worker
        future_limit_us = _to_us(wall) + w.max_future_skew_s * 1_000_000
        for msg in messages:
            pos = Position(msg.topic, msg.partition, msg.offset)
            if not self.buffer.accepts(pos, strict_offsets):
                self.metrics.inc("escrowguard_stale_messages_total")
                if self.metrics.get("escrowguard_stale_messages_total") < 5:
                    log_event(
                        log,
                        "stale_message",
                        logging.WARNING,
                        position=pos.text(),
                        owned=pos[:2] in set(self.buffer.partitions),
                        next_offset=self.buffer.next_offset(pos[:2]),
                    )
                continue
            raw = msg.value or b""
            self.metrics.inc("escrowguard_events_in_total", topic=msg.topic)
            try:
                event = decode(raw, max_bytes=w.max_message_bytes, unknown_fields=w.unknown_fields)
            except DecodeError as exc:
                self._reject(raw, pos, exc.reason, str(exc), None, now_s, wall)
                continue
            if self.topic_suffix.get(msg.topic) != event.topic_suffix:
                self._reject(
                    raw,
                    pos,
                    Reason.WRONG_TOPIC,
                    f"{event.event_type} belongs on the '{event.topic_suffix}' topic",
                    event.event_id,
                    now_s,
                    wall,
                )
                continue
            t_us = event.occurred_us
            if t_us > future_limit_us:
                self._reject(
                    raw,
                    pos,
                    Reason.FUTURE_TIMESTAMP,
                    f"occurred_at is more than {w.max_future_skew_s} s in the future",
                    event.event_id,
                    now_s,
                    wall,
                )
                continue
            self.buffer.add(Pending(event, pos, t_us, now_s, raw))

    def _reject(
        self,
        raw: bytes,
        pos: Position,
        reason: str,
        detail: str,
        event_id: str | None,
        now_s: float,
        wall: datetime,
    ) -> None:
        self.buffer.add_finished(pos, now_s)
        self._dead.append((dead_letter(raw, pos, reason, detail, event_id, wall), pos))

    # --- deciding ---

    async def drain(self, now_s: float, wall: datetime) -> int:
        """Decide every buffered event the frontier allows; returns how many."""
        decided = 0
        while True:
            bound = self.buffer.own_bound(now_s)
            candidates = self.buffer.take_candidates(self.settings.worker.batch_max_events, bound)
            if not candidates and not self._dead:
                return decided
            try:
                n, waiting = await self._decide(candidates, bound, now_s, wall)
            except BaseException:
                # nothing moved on: the same events are decided again by the retry
                self.buffer.requeue(candidates)
                raise
            decided += n
            if n and self.after_batch is not None:
                await self.after_batch()
            if waiting:
                return decided  # waiting for the frontier: nothing more to do now

    async def _decide(
        self, candidates: list[Pending], bound: int, now_s: float, wall: datetime
    ) -> tuple[int, bool]:
        """One batch: read, decide, store, send. Returns (messages finished, waiting)."""
        started = time.perf_counter()
        own = [tp_key(tp) for tp in self.buffer.partitions]
        outputs: list[AnyOutput] = [d for d, _ in self._dead]
        finished = [p for _, p in self._dead]
        processed: list[Pending] = []
        if candidates:
            reads = await self.store.read(candidates, own, bound, self._bandit.keys())
            # posteriors as of a past day never change: keep them, and hand the processor
            # every one it may need (the store skipped the cached days)
            self._bandit.update(reads.bandit)
            reads.bandit = self._bandit
            if reads.events:
                while True:
                    try:
                        outcome = self.processor.process(candidates, reads, wall)
                        break
                    except MissingBanditDays as missing:
                        # posteriors for milestones decided only within this batch
                        extra = await self.store.read([], own, bound, (), days=missing.days)
                        self._bandit.update(extra.bandit)
                processed = outcome.processed
                if outcome.outcomes_from_us is not None:
                    # posteriors of days after a newly applied outcome were read without it
                    self._bandit = {
                        d: c
                        for d, c in self._bandit.items()
                        if d * DAY_US <= outcome.outcomes_from_us
                    }
                fresh_max = max((p.t_us for p in processed), default=self._processed_max)
                self.buffer.mark_decided(processed)
                try:
                    kill_point("before_store")
                    labels = await self.store.write(
                        outcome.writes,
                        {tp_key(tp): t for tp, t in self.buffer.frontiers(now_s).items()},
                        max(self._processed_max, fresh_max),
                        {tp_key(tp): off for tp, off in self.buffer.applied_offsets().items()},
                        labels_key=f"labels:{self.processor.models.version}",
                    )
                    kill_point("after_store")
                    outputs += outcome.outputs
                    for note in outcome.dead_letters:
                        p = note.pending
                        outputs.append(
                            dead_letter(
                                p.raw, p.pos, note.reason, note.detail, p.event.event_id, wall
                            )
                        )
                    outputs += self.processor.monitor_alerts(labels, wall)
                    # Only once everything is stored and sent does the buffer move on: a
                    # failure leaves it as it was, and the retry decides the same batch
                    # again (now as redeliveries) and re-sends the same ids.
                    await self.sender.send_all(outputs)
                    kill_point("after_emit", outputs)
                except BaseException:
                    self.buffer.unmark_decided(processed)
                    raise
                self._processed_max = max(self._processed_max, fresh_max)
                self._published = {}
                finished += [p.pos for p in processed]
                self._count(processed, outcome.duplicates, outcome.redeliveries)
        if not processed:
            await self.sender.send_all(outputs)
        decided_ids = {id(p) for p in processed}
        self.buffer.requeue(p for p in candidates if id(p) not in decided_ids)
        self.buffer.finish(finished)
        self._dead = []
        self._count_outputs(outputs)
        self.metrics.observe("escrowguard_batch_size", len(finished))
        self.metrics.observe("escrowguard_batch_seconds", time.perf_counter() - started)
        if not processed:
            await self._publish_frontiers(now_s)
        return len(finished), not processed and not outputs

    async def _publish_frontiers(self, now_s: float) -> None:
        """Tell the other workers how far this one got, even when it decided nothing
        (else two workers each waiting on the other's frontier would wait forever)."""
        frontiers = {tp_key(tp): t for tp, t in self.buffer.frontiers(now_s).items()}
        if frontiers != self._published:
            await self.store.write(
                Writes(),
                frontiers,
                self._processed_max,
                {tp_key(tp): off for tp, off in self.buffer.applied_offsets().items()},
            )
            self._published = frontiers

    # --- bookkeeping ---

    def _count(self, processed: Sequence[Pending], duplicates: int, redeliveries: int) -> None:
        m = self.metrics
        for p in processed:
            m.inc("escrowguard_events_scored_total", event_type=p.event.event_type)
        if duplicates:
            m.inc("escrowguard_duplicates_total", duplicates)
        if redeliveries:
            m.inc("escrowguard_redeliveries_total", redeliveries)

    def _count_outputs(self, outputs: Sequence[AnyOutput]) -> None:
        m = self.metrics
        for o in outputs:
            if isinstance(o, Alert):
                m.inc("escrowguard_alerts_total", kind=o.kind)
            elif isinstance(o, PayoutFreeze):
                m.inc("escrowguard_freezes_total")
            elif isinstance(o, MilestoneDecision):
                m.inc("escrowguard_decisions_total", route=o.route)
            else:
                m.inc("escrowguard_dead_letters_total", reason=o.reason)

    def status(self, now_s: float) -> dict[str, object]:
        """A snapshot for /health and logs."""
        frontiers = self.buffer.frontiers(now_s)
        finite = [t for t in frontiers.values() if t < UNBOUNDED]
        return {
            "partitions": len(self.buffer.partitions),
            "buffered": len(self.buffer),
            "frontier_us": min(finite) if finite else None,
            "processed_max_us": self._processed_max,
        }

    def maybe_log(self, now_s: float, every_s: float = 10.0) -> None:
        """One INFO line with progress every ``every_s`` seconds."""
        if now_s - self._last_log_s < every_s:
            return
        self._last_log_s = now_s
        m = self.metrics
        log_event(
            log,
            "worker_progress",
            scored=int(sum(m.values.get("escrowguard_events_scored_total", {}).values())),
            dead_letters=int(sum(m.values.get("escrowguard_dead_letters_total", {}).values())),
            alerts=int(sum(m.values.get("escrowguard_alerts_total", {}).values())),
            buffered=len(self.buffer),
        )


def _to_us(moment: datetime) -> int:
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp() * 1_000_000)
