"""Event-time ordering across topics, partitions and workers: the reorder buffer.

Kafka orders messages within a partition only. escrowguard scores each event against the
state as of its own ``occurred_at``, which is only well defined once every event before it,
on every partition of every input topic, has been applied. The rule (docs/ordering.md):

- each partition ``p`` has a frontier ``f(p)``: every event on ``p`` earlier than ``f(p)``
  has been applied. An owner computes it from what it has buffered and what it has seen
  (``min(first unprocessed event time, latest event time seen)``; +inf when the partition
  is caught up and idle) and publishes it in Redis;
- the global frontier ``F`` is the minimum over all input partitions;
- a worker processes its buffered events in ``(occurred_at, event_id)`` order while
  ``occurred_at <= F``.

This module is the pure per-worker half: it tracks partitions, buffers events, offers the
next candidates, computes frontiers to publish and offsets that are safe to commit. Time
comes in as arguments; nothing here reads a clock.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Iterable, Sequence
from typing import Any, Final, NamedTuple

import msgspec

from escrowguard.events import AnyEvent

NEVER: Final = -(2**62)  # "nothing seen yet": holds the frontier back
UNBOUNDED: Final = 2**62  # an idle partition does not hold the frontier back


class Position(NamedTuple):
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    def text(self) -> str:
        """``topic:partition:offset``."""
        return f"{self.topic}:{self.partition}:{self.offset}"

    def tag(self) -> str:
        """What is stored with an event id for de-duplication: a CRC-32 of ``text()``.

        It tells a redelivery (same id, same position) from a duplicate (same id, another
        position). Ten digits instead of a topic name and two numbers: Redis keeps it as an
        integer, and the de-duplication entries were the biggest state per entity
        (docs/performance.md). A duplicate whose position collides (one in 2**32) is taken for
        a redelivery: decided again with the stored state, and its outputs keep their ids.
        """
        return str(zlib.crc32(self.text().encode()))


TopicPartition = tuple[str, int]


class Pending(msgspec.Struct, gc=False):
    """A decoded event waiting in the buffer for the frontier to pass it."""

    event: AnyEvent
    pos: Position
    t_us: int
    received_s: float
    raw: bytes  # the message as received (kept for dead letters)

    @property
    def order(self) -> tuple[int, str]:
        """Processing order: event time, then event id."""
        return (self.t_us, self.event.event_id)


class _LazyMin:
    """A min-heap of ``(key, token)`` with removal by token (lazy: removed entries are
    dropped when they reach the top), so every operation is O(log n) amortised."""

    __slots__ = ("_gone", "_heap")

    def __init__(self) -> None:
        self._heap: list[tuple[Any, int]] = []
        self._gone: dict[int, int] = {}

    def push(self, key: Any, token: int) -> None:
        heapq.heappush(self._heap, (key, token))

    def discard(self, token: int) -> None:
        self._gone[token] = self._gone.get(token, 0) + 1

    def min(self) -> Any:
        """The smallest live key, or None."""
        heap, gone = self._heap, self._gone
        while heap:
            key, token = heap[0]
            count = gone.get(token)
            if not count:
                return key
            heapq.heappop(heap)
            if count == 1:
                del gone[token]
            else:
                gone[token] = count - 1
        return None


class _Partition:
    __slots__ = (
        "caught_up_since",
        "fetched_s",
        "highwater",
        "last_data_s",
        "max_t_us",
        "next_offset",
        "unfinished",
        "waiting",
        "waiting_offsets",
    )

    def __init__(self, now_s: float, start_offset: int) -> None:
        self.max_t_us = NEVER
        self.next_offset = start_offset
        self.highwater: int | None = None
        self.last_data_s = now_s
        self.fetched_s = now_s  # when a fetch response last told its high watermark
        self.caught_up_since: float | None = None  # first of the fetches finding nothing new
        self.waiting = _LazyMin()  # (event time, offset) of events not decided yet
        self.waiting_offsets = _LazyMin()  # the same events, by offset
        self.unfinished = _LazyMin()  # offsets of messages whose outputs are not sent yet


class ReorderBuffer:
    """Buffers decoded events of the partitions this worker owns; bounded.

    Every per-batch operation costs O(batch x log buffer), never O(buffer): the order heap
    hands out candidates by popping them (``take_candidates``) and takes back the ones that
    were not decided (``requeue``); per-partition lazy heaps answer "oldest waiting event"
    and "first unfinished offset" for frontiers, store positions and commits.
    """

    def __init__(self, max_events: int, idle_s: float) -> None:
        self.max_events = max_events
        self.idle_s = idle_s
        self._parts: dict[TopicPartition, _Partition] = {}
        self._heap: list[tuple[int, str, int, Pending]] = []
        self._seq = 0

    # --- ownership ---

    def assign(self, positions: dict[TopicPartition, int], now_s: float) -> None:
        """Start tracking partitions from their next offsets (anything buffered for them
        before is dropped: it will be fetched again from there)."""
        self.revoke(positions)
        for tp, offset in positions.items():
            self._parts[tp] = _Partition(now_s, offset)

    def revoke(self, tps: Iterable[TopicPartition]) -> None:
        """Forget partitions (and their buffered events: the new owner re-reads them)."""
        gone = {tp for tp in tps if tp in self._parts}
        for tp in gone:
            del self._parts[tp]
        if gone:
            self._heap = [item for item in self._heap if item[3].pos[:2] not in gone]
            heapq.heapify(self._heap)

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions this worker owns, sorted."""
        return sorted(self._parts)

    # --- intake ---

    def note_fetch(self, tp: TopicPartition, highwater: int | None, now_s: float) -> None:
        """Record a fetch response's high watermark (how far the partition goes)."""
        part = self._parts.get(tp)
        if part is not None and highwater is not None:
            part.highwater = highwater
            part.fetched_s = now_s
            if part.next_offset < highwater:
                part.caught_up_since = None
            elif part.caught_up_since is None:
                part.caught_up_since = now_s

    def accepts(self, pos: Position, strict_offsets: bool = True) -> bool:
        """Whether a fetched message is new for this worker: its partition is owned and
        (``strict_offsets``) it comes after everything taken from that partition (a fetch
        that raced a seek or a rebalance can return stale or repeated messages)."""
        part = self._parts.get(pos[:2])
        return part is not None and (not strict_offsets or pos.offset >= part.next_offset)

    def next_offset(self, tp: TopicPartition) -> int | None:
        """The next offset expected from a partition (None if not owned)."""
        part = self._parts.get(tp)
        return None if part is None else part.next_offset

    def add(self, pending: Pending) -> None:
        """Buffer a decoded event."""
        part = self._parts[pending.pos[:2]]
        offset = pending.pos.offset
        self._seen(part, offset, pending.received_s)
        part.max_t_us = max(part.max_t_us, pending.t_us)
        part.waiting.push((pending.t_us, offset), offset)
        part.waiting_offsets.push(offset, offset)
        part.unfinished.push(offset, offset)
        self._seq += 1
        heapq.heappush(self._heap, (pending.t_us, pending.event.event_id, self._seq, pending))

    def add_finished(self, pos: Position, now_s: float) -> None:
        """A message that needs no ordering (e.g. undecodable, dead-lettered at once) but
        whose offset may only be committed once its output is sent: call ``finish`` then."""
        part = self._parts[pos[:2]]
        self._seen(part, pos.offset, now_s)
        part.unfinished.push(pos.offset, pos.offset)

    @staticmethod
    def _seen(part: _Partition, offset: int, now_s: float) -> None:
        part.next_offset = max(part.next_offset, offset + 1)
        part.last_data_s = now_s
        part.caught_up_since = None

    # --- release ---

    def __len__(self) -> int:
        return len(self._heap)

    def own_bound(self, now_s: float) -> int:
        """Latest event time this worker's own partitions allow: events on them before it
        have all arrived (per-partition order), unless the partition is idle."""
        bound = UNBOUNDED
        for part in self._parts.values():
            if not self._idle(part, now_s):
                bound = min(bound, part.max_t_us)
        return bound

    def _idle(self, part: _Partition, now_s: float) -> bool:
        # idle: fetches kept finding nothing new for idle_s, counted from the first of them.
        # Time the worker itself spent not fetching (Redis down, a slow batch) says nothing
        # about the partition: judged from the last data on the clock alone, partitions
        # looked idle after every stall and the frontier ran past messages still in Kafka
        # (too_late / unknown_* dead letters).
        since = part.caught_up_since
        return since is not None and part.fetched_s - since >= self.idle_s

    def take_candidates(self, limit: int, bound: int) -> list[Pending]:
        """Pop up to ``limit`` events in processing order with time <= ``bound``. Give the
        undecided ones back with ``requeue``."""
        out: list[Pending] = []
        heap = self._heap
        while heap and len(out) < limit and heap[0][0] <= bound:
            out.append(heapq.heappop(heap)[3])
        return out

    def requeue(self, pendings: Iterable[Pending]) -> None:
        """Put events back in the order heap (not decided this time)."""
        for p in pendings:
            if p.pos[:2] in self._parts:
                self._seq += 1
                heapq.heappush(self._heap, (p.t_us, p.event.event_id, self._seq, p))

    def mark_decided(self, pendings: Sequence[Pending]) -> None:
        """These events' effects are about to be stored: they no longer hold the frontier
        or the store position back (undo with ``unmark_decided`` if storing fails)."""
        for p in pendings:
            part = self._parts.get(p.pos[:2])
            if part is not None:
                part.waiting.discard(p.pos.offset)
                part.waiting_offsets.discard(p.pos.offset)

    def unmark_decided(self, pendings: Sequence[Pending]) -> None:
        """Undo ``mark_decided``."""
        for p in pendings:
            part = self._parts.get(p.pos[:2])
            if part is not None:
                part.waiting.push((p.t_us, p.pos.offset), p.pos.offset)
                part.waiting_offsets.push(p.pos.offset, p.pos.offset)

    def finish(self, positions: Iterable[Position]) -> None:
        """Outputs for these messages are sent: their offsets may be committed."""
        for pos in positions:
            part = self._parts.get(pos[:2])
            if part is not None:
                part.unfinished.discard(pos.offset)

    # --- what to publish and commit ---

    def frontiers(self, now_s: float) -> dict[TopicPartition, int]:
        """Per owned partition: every event on it earlier than this has been applied."""
        out = {}
        for tp, part in self._parts.items():
            seen = UNBOUNDED if self._idle(part, now_s) else part.max_t_us
            first = part.waiting.min()
            out[tp] = min(first[0] if first is not None else UNBOUNDED, seen)
        return out

    def applied_offsets(self) -> dict[TopicPartition, int]:
        """Per owned partition, the first offset whose effects may not be stored yet (the
        oldest event still waiting in the buffer): where to resume if the store lost data."""
        out = {}
        for tp, part in self._parts.items():
            first = part.waiting_offsets.min()
            out[tp] = part.next_offset if first is None else first
        return out

    def commit_offsets(self) -> dict[TopicPartition, int]:
        """Per owned partition, the offset to commit: the first message not finished."""
        out = {}
        for tp, part in self._parts.items():
            first = part.unfinished.min()
            out[tp] = part.next_offset if first is None else first
        return out

    def over_capacity(self) -> bool:
        """Whether to stop fetching from partitions that are ahead in event time."""
        return len(self._heap) >= self.max_events

    def laggards(self) -> set[TopicPartition]:
        """Partitions to keep fetching while the buffer is full: those holding the frontier
        back (lowest event time among the non-idle ones), and the idle ones.

        Idle partitions hold nothing back (``own_bound`` skips them): were one of them the
        "laggard", the partition really holding the frontier would stay paused, nothing
        more could be decided, and the buffer would never drain (a deadlock)."""
        idle = {tp for tp, p in self._parts.items() if self._idle(p, 0.0)}
        active = {tp: p for tp, p in self._parts.items() if tp not in idle}
        if not active:
            return set(self._parts)
        lowest = min(p.max_t_us for p in active.values())
        # idle partitions stay fetched too: paused, their high watermark would go stale
        return idle | {tp for tp, p in active.items() if p.max_t_us == lowest}
