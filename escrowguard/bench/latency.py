"""Produce-to-output latency under offered load.

A replay process (``escrowguard replay --rate R``, its own process like a platform
producer) sends a slice of a history at each load level, one level after the other, to a
worker that is already running and caught up. The latency of an output is the time between
the *send* of the event that caused it and the *receipt* of the output by a consumer:

- send time: the Kafka record timestamp of the input event (CreateTime, set by the
  producer's ``send()``; the wire contract has no field for it and forbids unknown ones, and
  ``occurred_at`` is event time, years away from the wall clock in a replay). Read back from
  the input topics once the load is over, keyed by event id.
- receipt time: the wall clock in this process when a consumer (no group, every partition
  assigned, ``fetch_max_wait_ms`` from settings) gets the output from ``poll``.

Both clocks are this machine's ``time.time()``. Alerts name their triggering events
(``event_ids``; the trigger is the latest sent of them), decisions name one (``event_id``);
freezes (which name alerts) and operational alerts without events are not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import msgspec
import numpy as np
from kafka import KafkaConsumer, TopicPartition

from escrowguard.errors import InfraError
from escrowguard.kafka_config import client_options
from escrowguard.settings import Settings
from escrowguard.topics import ALERTS, MILESTONE_DECISIONS, input_topics, output_topic


class _Trigger(msgspec.Struct):
    event_ids: list[str] = []
    event_id: str | None = None


class _EventId(msgspec.Struct):
    event_id: str = ""


_TRIGGER = msgspec.json.Decoder(_Trigger)
_EVENT_ID = msgspec.json.Decoder(_EventId)


def _trigger_ids(value: bytes) -> list[str]:
    """The events an output names as its cause."""
    trigger = _TRIGGER.decode(value)
    return trigger.event_ids or ([trigger.event_id] if trigger.event_id else [])


def _consumer(settings: Settings, suffix: str) -> KafkaConsumer:
    return KafkaConsumer(
        **client_options(settings.kafka, client_suffix=suffix),
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
    )


def _assign_all(consumer: KafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return partitions


class OutputReceipts(threading.Thread):
    """Reads alerts and milestone decisions as they arrive, in a thread of its own;
    ``receipts`` holds (receipt wall-clock ms, triggering event ids)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="bench-output-receipts", daemon=True)
        self.settings = settings
        self.receipts: list[tuple[float, list[str]]] = []
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()
        self._ready = threading.Event()

    def run(self) -> None:
        try:
            consumer = _consumer(self.settings, "bench-latency")
            topics = [output_topic(self.settings.topics, s) for s in (ALERTS, MILESTONE_DECISIONS)]
            _assign_all(consumer, topics)
            self._ready.set()
            try:
                while not self._stop_requested.is_set():
                    batches = consumer.poll(timeout_ms=100)
                    now_ms = time.time() * 1000
                    for records in batches.values():
                        for record in records:
                            trigger = _TRIGGER.decode(record.value)
                            ids = trigger.event_ids or (
                                [trigger.event_id] if trigger.event_id else []
                            )
                            if ids:
                                self.receipts.append((now_ms, ids))
            finally:
                consumer.close()
        except BaseException as exc:  # reported by stop()
            self.error = exc
            self._ready.set()

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the partitions are assigned."""
        if not self._ready.wait(timeout_s) or self.error is not None:
            raise InfraError(f"the output reader did not start: {self.error}")

    def stop(self) -> list[tuple[float, list[str]]]:
        """Stop reading; the receipts."""
        self._stop_requested.set()
        self.join(30)
        if self.error is not None:
            raise InfraError(f"the output reader failed: {self.error}")
        return self.receipts


def send_times_ms(settings: Settings, timeout_s: float = 120.0) -> dict[str, float]:
    """event id -> Kafka record timestamp (ms) of every message on the input topics."""
    consumer = _consumer(settings, "bench-send-times")
    try:
        partitions = _assign_all(consumer, input_topics(settings.topics))
        sent: dict[str, float] = {}
        done: set[TopicPartition] = set()
        deadline = time.monotonic() + timeout_s
        while len(done) < len(partitions):
            if time.monotonic() > deadline:
                raise InfraError("could not read the input topics back in time")
            for records in consumer.poll(timeout_ms=200, max_records=50_000).values():
                for record in records:
                    sent[_EVENT_ID.decode(record.value).event_id] = float(record.timestamp)
            for tp in partitions:
                high = consumer.highwater(tp)
                if high is not None and consumer.position(tp) >= high:
                    done.add(tp)
        return sent
    finally:
        consumer.close()


@dataclass
class LoadLevel:
    """One offered load: its share of capacity, rate, events and what was measured."""

    percent: int
    rate_eps: float
    event_ids: list[str]
    send_seconds: float = 0.0
    drain_seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def percentiles(self) -> dict[str, float | None]:
        """p50 and p99 in ms (None without samples)."""
        if not self.latencies_ms:
            return {"p50": None, "p99": None}
        p50, p99 = np.percentile(np.asarray(self.latencies_ms), [50, 99])
        return {"p50": round(float(p50), 1), "p99": round(float(p99), 1)}


def assign_latencies(
    levels: Sequence[LoadLevel],
    receipts: Iterable[tuple[float, list[str]]],
    sent_ms: dict[str, float],
) -> int:
    """Give each output's latency to the level that sent its trigger; outputs whose trigger
    is unknown (not sent by a level) are skipped. Returns how many were counted.

    >>> lv = LoadLevel(50, 10.0, ["e1", "e2"])
    >>> assign_latencies([lv], [(1100.0, ["e1"]), (2300.0, ["e1", "e2"])], {"e1": 1000.0,
    ...                  "e2": 2000.0})
    2
    >>> lv.latencies_ms
    [100.0, 300.0]
    """
    level_of = {eid: level for level in levels for eid in level.event_ids}
    counted = 0
    for receipt_ms, ids in receipts:
        known = [(sent_ms[i], i) for i in ids if i in sent_ms and i in level_of]
        if not known:
            continue
        sent, trigger = max(known)
        level_of[trigger].latencies_ms.append(receipt_ms - sent)
        counted += 1
    return counted


def event_ids(lines: Iterable[bytes]) -> list[str]:
    """The event id of each wire-format line."""
    return [_EVENT_ID.decode(line).event_id for line in lines]


def plan_levels(
    percents: Sequence[int], capacity_eps: float, seconds: float, ids: Sequence[str]
) -> list[LoadLevel]:
    """Levels of ``percent`` of ``capacity_eps`` for ``seconds`` each, taking consecutive
    event ids (InfraError when there are too few).

    >>> [len(lv.event_ids) for lv in plan_levels([25, 50], 10.0, 2.0, list("abcdefghijklmno"))]
    [5, 10]
    """
    levels, start = [], 0
    for pct in percents:
        rate = capacity_eps * pct / 100
        n = max(1, round(rate * seconds))
        if start + n > len(ids):
            raise InfraError(f"the load history has {len(ids):,} events, too few")
        levels.append(LoadLevel(pct, rate, list(ids[start : start + n])))
        start += n
    return levels
