"""``escrowguard infra check``: a timed smoke test of whatever servers are configured.

Produce to a fresh topic with kafka-python, consume it in a consumer group with kafka-python
and with aiokafka (optionally also with the libraries' default group settings, to reproduce
the join-time measurements of docs/infra.md), and round-trip Redis. Embedded servers are
started for whichever of Kafka and Redis is not configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from aiokafka import AIOKafkaConsumer
from kafka import KafkaConsumer, KafkaProducer

from escrowguard.errors import InfraError
from escrowguard.infra.admin import create_topics, delete_topics, redis_client
from escrowguard.infra.embedded import servers_for
from escrowguard.infra.processes import kafka_answers, wait_until
from escrowguard.kafka_config import aiokafka_consumer, client_options
from escrowguard.settings import Settings

#: Group settings that only aiokafka understands (kafka-python sends max_poll_interval_ms).
_AIOKAFKA_ONLY = ("rebalance_timeout_ms",)
#: The keys of ``aiokafka_consumer`` that are group timings (dropped for a defaults run).
GROUP_TIMINGS = (
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "max_poll_interval_ms",
    "rebalance_timeout_ms",
)
CONSUME_TIMEOUT_S = 120.0


@dataclass
class CheckReport:
    """What ``check_servers`` measured: step name -> milliseconds, plus the endpoints."""

    bootstrap_servers: str
    redis_url: str
    embedded: bool
    timings_ms: dict[str, float] = field(default_factory=dict)


def check_servers(
    settings: Settings, messages: int = 100, compare_defaults: bool = False
) -> CheckReport:
    """Produce, consume in a group (kafka-python and aiokafka), and round-trip Redis."""
    with servers_for(settings) as (s, embedded):
        report = CheckReport(s.kafka.bootstrap_servers, s.redis.url, embedded is not None)
        _check_kafka(s, messages, report, compare_defaults)
        _check_redis(s, report)
    return report


def _timed(report: CheckReport, step: str, started: float) -> None:
    report.timings_ms[step] = round((time.monotonic() - started) * 1000, 1)


def group_options(s: Settings, client: str, tuned: bool = True) -> dict[str, Any]:
    """Consumer options for a throw-away group: tuned [kafka] timings, or library defaults."""
    opts = aiokafka_consumer(s.kafka, f"{s.kafka.consumer_group}-check-{uuid.uuid4().hex[:8]}")
    if client == "kafka-python":
        for key in _AIOKAFKA_ONLY:
            opts.pop(key, None)
    if not tuned:
        for key in GROUP_TIMINGS:
            opts.pop(key, None)
    return opts


def _check_kafka(s: Settings, messages: int, report: CheckReport, defaults: bool) -> None:
    started = time.monotonic()
    bootstrap = s.kafka.bootstrap_servers
    wait_until(lambda: kafka_answers(bootstrap, api="api_versions"), f"Kafka at {bootstrap}", 30)
    _timed(report, "kafka_reachable", started)
    topic = s.topics.name(f"infra-check-{uuid.uuid4().hex[:8]}")
    started = time.monotonic()
    create_topics(s, [topic])
    _timed(report, "create_topic", started)
    try:
        started = time.monotonic()
        producer = KafkaProducer(**client_options(s.kafka, client_suffix="check"))
        try:
            futures = [producer.send(topic, key=b"%d" % i, value=b"x") for i in range(messages)]
            producer.flush()
            for future in futures:
                future.get(timeout=30)
        finally:
            producer.close()
        _timed(report, f"produce_{messages}", started)
        runs = [True, False] if defaults else [True]
        for tuned in runs:
            label = "tuned" if tuned else "defaults"
            started = time.monotonic()
            _consume_kafka_python(topic, messages, group_options(s, "kafka-python", tuned))
            _timed(report, f"kafka_python_join_and_consume_{label}", started)
            started = time.monotonic()
            asyncio.run(_consume_aiokafka(topic, messages, group_options(s, "aiokafka", tuned)))
            _timed(report, f"aiokafka_join_and_consume_{label}", started)
    finally:
        with contextlib.suppress(InfraError):
            delete_topics(s, [topic])


def _consume_kafka_python(topic: str, want: int, options: dict[str, Any]) -> None:
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    consumer = KafkaConsumer(topic, **options)
    seen = 0
    try:
        while seen < want:
            if time.monotonic() > deadline:
                raise InfraError(f"kafka-python consumer got {seen}/{want} messages in time")
            seen += sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
    finally:
        consumer.close()


async def _consume_aiokafka(topic: str, want: int, options: dict[str, Any]) -> None:
    deadline = time.monotonic() + CONSUME_TIMEOUT_S
    consumer = AIOKafkaConsumer(topic, **options)
    await consumer.start()
    seen = 0
    try:
        while seen < want:
            if time.monotonic() > deadline:
                raise InfraError(f"aiokafka consumer got {seen}/{want} messages in time")
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(batch) for batch in batches.values())
    finally:
        await consumer.stop()


def _check_redis(s: Settings, report: CheckReport) -> None:
    client = redis_client(s.redis)
    key = f"{s.redis.key_prefix}:infra-check:{uuid.uuid4().hex[:8]}"
    try:
        started = time.monotonic()
        client.set(key, "ok", ex=60)
        value = client.get(key)
        client.delete(key)
        _timed(report, "redis_set_get_del", started)
    except redis.RedisError as exc:
        raise InfraError(
            f"Redis at {s.redis.url} failed: {exc}", reason="store_unavailable"
        ) from exc
    finally:
        client.close()
    if value != b"ok":
        raise InfraError(f"Redis round trip returned {value!r}", reason="store_unavailable")
