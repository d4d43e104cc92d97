"""Sending a replay plan with kafka-python: ordered, acknowledged, bounded, never hanging.

Producer settings: ``acks="all"``; idempotence when the broker grants a producer id (the
embedded Tansu build does; ``open_producer`` checks), else ``enable_idempotence=False``
with ``max_in_flight_requests_per_connection=1`` so a retried batch can never overtake the
next one: the worker relies on per-partition event-time order. ``linger_ms`` and
``batch_size`` are sized for bulk throughput (docs/operations.md has the measurements).

The loop stops at the first failed send (a gap would leave later events without their
predecessors; rerunning is safe, the worker de-duplicates by event id). At most
``MAX_PENDING`` events wait for their acknowledgement at any time (kafka-python's
accumulator is unbounded), and a broker that stops answering ends the replay after one
delivery timeout instead of hanging in ``flush``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from kafka import KafkaProducer
from kafka.errors import KafkaConfigurationError, KafkaError, KafkaTimeoutError
from kafka.partitioner.default import DefaultPartitioner

from escrowguard.errors import PublishError
from escrowguard.kafka_config import client_options
from escrowguard.logs import log_event
from escrowguard.producers.replay_plan import Pacer, ReplayPlan
from escrowguard.settings import Settings

logger = logging.getLogger(__name__)

LINGER_MS: Final = 10
BATCH_SIZE_BYTES: Final = 256 * 1024
#: gzip (zlib, in the standard library) shrinks what kafka-python must checksum in pure
#: Python (crc32c) about 5x: +50% events/s here, and a smaller in-memory broker.
COMPRESSION: Final = "gzip"
#: A send fails after this many request timeouts (120 s with the default 30 s).
DELIVERY_TIMEOUT_REQUESTS: Final = 4
#: How long to wait for the broker to grant an idempotent producer id before falling back.
PRODUCER_ID_WAIT_S: Final = 10.0
#: Events handed to the producer and not yet acknowledged, at most.
MAX_PENDING: Final = 20_000
#: Waits shorter than this are carried over (the token bucket keeps the debt), not slept.
MIN_SLEEP_S: Final = 0.001
_CHECK_EVERY: Final = 1024
_KEEP_ERRORS: Final = 5


class KeyedPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (murmur2 of the key, as the Java client), with the
    answer cached per (topic, key): keys repeat (projects, backers) and murmur2 is pure
    Python there. Same partitions as the default, so other producers agree with it."""

    MAX_KEYS: Final = 1_000_000

    def __init__(self) -> None:
        self._cache: dict[tuple[str, bytes], int] = {}

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: Any,
        cluster: Any,
    ) -> int:
        """The key's partition (a keyless record goes wherever the default sends it)."""
        if serialized_key is None:
            return int(super().partition(topic, key, None, value, serialized_value, cluster))
        cached = self._cache.get((topic, serialized_key))
        if cached is None:
            if len(self._cache) >= self.MAX_KEYS:
                self._cache.clear()
            cached = super().partition(topic, key, serialized_key, value, serialized_value, cluster)
            self._cache[(topic, serialized_key)] = cached
        return cached


def open_producer(settings: Settings, client_suffix: str = "replay") -> tuple[KafkaProducer, bool]:
    """A kafka-python producer for ordered bulk sends, and whether it is idempotent.

    Tries ``enable_idempotence=True`` and waits for the broker's producer id; a broker that
    does not grant one gets a non-idempotent producer with one request in flight instead.
    """
    base: dict[str, Any] = {
        **client_options(settings.kafka, client_suffix=client_suffix),
        "acks": "all",
        "linger_ms": LINGER_MS,
        "batch_size": BATCH_SIZE_BYTES,
        "compression_type": COMPRESSION,
        "allow_auto_create_topics": False,
        "partitioner": KeyedPartitioner(),
        "delivery_timeout_ms": DELIVERY_TIMEOUT_REQUESTS * settings.kafka.request_timeout_ms,
    }
    try:
        producer = KafkaProducer(**base, enable_idempotence=True)
    except KafkaConfigurationError:  # a broker older than 0.11: no idempotent produce
        producer = None
    except KafkaError as exc:
        raise PublishError(f"cannot connect a producer to Kafka: {exc}") from exc
    if producer is not None:
        if _granted_producer_id(producer, PRODUCER_ID_WAIT_S):
            return producer, True
        producer.close(timeout=5)
    log_event(logger, "idempotence_unavailable", level=logging.WARNING, fallback="max_in_flight=1")
    try:
        fallback = KafkaProducer(
            **base, enable_idempotence=False, max_in_flight_requests_per_connection=1
        )
    except KafkaError as exc:
        raise PublishError(f"cannot connect a producer to Kafka: {exc}") from exc
    return fallback, False


def _granted_producer_id(producer: KafkaProducer, timeout_s: float) -> bool:
    # kafka-python has no public "was my producer id granted" call; its transaction manager
    # (present exactly when idempotence is on) knows.
    manager = getattr(producer, "_transaction_manager", None)
    if manager is None:
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if manager.has_producer_id():
            return True
        if manager.has_fatal_error():
            return False
        time.sleep(0.005)
    return False


@dataclass
class _Tally:
    """Send outcomes, updated from kafka-python's sender thread."""

    topics: list[str]
    acked: list[int] = field(init=False)
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.acked = [0] * len(self.topics)

    def on_ack(self, topic_index: int, _metadata: object) -> None:
        with self.lock:
            self.acked[topic_index] += 1

    def on_error(self, topic_index: int, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            self._keep(f"{self.topics[topic_index]}: {exc!r}")

    def note(self, problem: str) -> None:
        """Record a problem that is not one event's failure (a stall, a flush timeout)."""
        with self.lock:
            self._keep(problem)

    def _keep(self, error: str) -> None:
        if len(self.errors) < _KEEP_ERRORS:
            self.errors.append(error)

    def done(self) -> int:
        return sum(self.acked) + self.failed


@dataclass(frozen=True)
class SendOutcome:
    """What happened to the events of a plan once the producer was closed."""

    acked: dict[str, int]
    failed: int
    unconfirmed: int
    attempted: int
    interrupted: bool
    idempotent: bool
    errors: tuple[str, ...]
    elapsed_s: float


def send_plan(
    settings: Settings,
    plan: ReplayPlan,
    topic_names: list[str],
    *,
    speed: float | None = None,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> SendOutcome:
    """Send the plan in order (pacing if asked) and wait for every acknowledgement.

    ``topic_names`` are the full names of ``INPUT_TOPIC_SUFFIXES`` in order. Stops at the
    first failure, a stall of one delivery timeout, or Ctrl-C; ``on_progress`` receives the
    number of events handed over so far.
    """
    producer, idempotent = open_producer(settings)
    stall_s = DELIVERY_TIMEOUT_REQUESTS * settings.kafka.request_timeout_ms / 1000 + 5
    tally = _Tally(topic_names)
    started = clock()
    attempted, interrupted = 0, False
    try:
        attempted, interrupted = _send_loop(
            producer,
            plan,
            topic_names,
            tally,
            Pacer(speed, rate, _first_us(plan)),
            stall_s,
            on_progress,
            clock,
            sleep,
        )
    finally:
        if not _wait_until_done(tally, attempted, stall_s, clock, sleep):
            tally.note(f"no acknowledgement for {stall_s:.0f} s: the broker is not answering")
        _close(producer)
    with tally.lock:
        acked, failed, errors = list(tally.acked), tally.failed, tuple(tally.errors)
    return SendOutcome(
        acked={t: n for t, n in zip(topic_names, acked, strict=True) if n},
        failed=failed,
        unconfirmed=max(0, attempted - sum(acked) - failed),
        attempted=attempted,
        interrupted=interrupted,
        idempotent=idempotent,
        errors=errors,
        elapsed_s=clock() - started,
    )


def _first_us(plan: ReplayPlan) -> int:
    return plan.occurred_us[plan.order[0]] if plan else 0


def _send_loop(
    producer: KafkaProducer,
    plan: ReplayPlan,
    topic_names: list[str],
    tally: _Tally,
    pacer: Pacer,
    stall_s: float,
    on_progress: Callable[[int], None] | None,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> tuple[int, bool]:
    """(events handed to the producer, interrupted by Ctrl-C)."""
    values, keys, topic_index, occurred = plan.values, plan.keys, plan.topic_index, plan.occurred_us
    send = producer.send
    attempted = 0
    started = clock()
    try:
        for i in plan.order:
            if pacer.paced:
                wait_s = pacer.delay_s(occurred[i], clock() - started)
                if wait_s >= MIN_SLEEP_S:
                    if on_progress is not None:
                        on_progress(attempted)  # a slow replay's bar moves before each wait
                    sleep(wait_s)
            t = topic_index[i]
            try:
                future = send(topic_names[t], value=values[i], key=keys[i])
            except KafkaError as exc:
                tally.on_error(t, exc)
                break
            future.add_callback(tally.on_ack, t)
            future.add_errback(tally.on_error, t)
            attempted += 1
            if attempted % _CHECK_EVERY == 0:
                if on_progress is not None:
                    on_progress(attempted)
                if not _wait_for_room(tally, attempted, stall_s, clock, sleep):
                    break
            elif pacer.paced and tally.failed:
                break
    except KeyboardInterrupt:
        return attempted, True
    finally:
        if on_progress is not None:
            on_progress(attempted)
    return attempted, False


def _wait_until_done(
    tally: _Tally,
    attempted: int,
    stall_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """Wait until every handed-over event is acknowledged or failed (what ``flush`` does,
    but bounded by progress: kafka-python's flush timeout applies per batch)."""
    last_done, last_change = tally.done(), clock()
    while last_done < attempted:
        if clock() - last_change > stall_s:
            return False
        sleep(0.005)
        done = tally.done()
        if done != last_done:
            last_done, last_change = done, clock()
    return True


def _close(producer: KafkaProducer) -> None:
    """Close; with batches still unacknowledged, abandon them (they fail, as errbacks)."""
    try:
        producer.close(timeout=5)
    except KafkaTimeoutError:
        # kafka-python 3.0 close() flushes first and raises when a batch is incomplete,
        # leaving the sender running: stop it the way close() would have.
        sender = getattr(producer, "_sender", None)
        if sender is not None:
            sender.force_close()
            sender.join(5)
        producer._closed = True


def _wait_for_room(
    tally: _Tally,
    attempted: int,
    stall_s: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """Block while more than MAX_PENDING events await acknowledgement; False on a failure
    or when nothing was acknowledged for ``stall_s``."""
    last_done, last_change = tally.done(), clock()
    while attempted - last_done > MAX_PENDING:
        if tally.failed:
            return False
        if clock() - last_change > stall_s:
            tally.note(f"no acknowledgement for {stall_s:.0f} s: the broker is not answering")
            return False
        sleep(0.005)
        done = tally.done()
        if done != last_done:
            last_done, last_change = done, clock()
    return not tally.failed
