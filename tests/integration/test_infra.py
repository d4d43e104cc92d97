"""The real servers: Kafka round trips, Redis round trips, the broker's caveats, and the
embedded servers' lifecycle (no process left behind, even when their parent is killed).

The caveat tests document the embedded broker's behaviour (docs/infra.md): when a future
build changes it, they fail and the documentation and the workarounds must be revisited.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import redis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka import TopicPartition as AIOTopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from escrowguard.errors import InfraError
from escrowguard.infra import (
    EmbeddedServers,
    RedisAclUser,
    create_topics,
    existing_topics,
    kafka_answers,
    redis_answers,
    redis_client,
    require_topics,
    settings_for,
)
from escrowguard.infra.check import check_servers
from escrowguard.kafka_config import aiokafka_consumer, client_options
from escrowguard.settings import Settings, load_settings
from escrowguard.topics import all_topics, input_topics

pytestmark = pytest.mark.integration


def _produce(settings: Settings, topic: str, values: list[bytes], **kw: object) -> set[tuple]:
    """Send with kafka-python, wait for every ack; the acked (partition, offset) pairs."""
    producer = KafkaProducer(**client_options(settings.kafka, "test"), **kw)  # type: ignore[arg-type]
    try:
        futures = [producer.send(topic, key=v, value=v) for v in values]
        producer.flush()
        return {(m.partition, m.offset) for m in (f.get(timeout=30) for f in futures)}
    finally:
        producer.close()


def _read_all(settings: Settings, topic: str, want: int) -> tuple[list[bytes], KafkaConsumer]:
    """Read a topic from the beginning without a group until ``want`` records arrived."""
    consumer = KafkaConsumer(**client_options(settings.kafka, "test"), enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    values: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(values) < want and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            values += [r.value for r in records]
    return values, consumer


# --- round trips through the real servers ----------------------------------------------------


def test_kafka_python_producer_to_aiokafka_consumer_group(topic_namespace: Settings) -> None:
    topic = input_topics(topic_namespace.topics)[2]
    values = [f"pledge-{i}".encode() for i in range(300)]
    _produce(topic_namespace, topic, values)

    async def consume() -> tuple[list[bytes], dict[int, int]]:
        group = f"{topic_namespace.topics.prefix}group"
        consumer = AIOKafkaConsumer(topic, **aiokafka_consumer(topic_namespace.kafka, group))
        await consumer.start()
        got: list[bytes] = []
        try:
            deadline = time.monotonic() + 60
            while len(got) < len(values) and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got += [r.value for r in records]
            await consumer.commit()
            committed = {tp.partition: await consumer.committed(tp) for tp in consumer.assignment()}
        finally:
            await consumer.stop()
        return got, committed

    got, committed = asyncio.run(consume())
    assert sorted(got) == sorted(values)
    assert sum(offset or 0 for offset in committed.values()) == len(values)
    assert len(committed) == topic_namespace.topics.partitions


def test_redis_round_trip_and_lua(topic_namespace: Settings) -> None:
    client = redis_client(topic_namespace.redis)
    prefix = topic_namespace.redis.key_prefix
    try:
        assert client.set(f"{prefix}:k", "v", ex=60)
        assert client.get(f"{prefix}:k") == b"v"
        script = """
        local seen = redis.call('SET', KEYS[1], '1', 'NX', 'EX', 60)
        if not seen then return -1 end
        return redis.call('HINCRBY', KEYS[2], 'amount_cents', ARGV[1])
        """
        keys = [f"{prefix}:seen:e1", f"{prefix}:project:p1"]
        assert client.eval(script, 2, *keys, 1250) == 1250
        assert client.eval(script, 2, *keys, 1250) == -1  # the same event id: applied once
        assert client.hget(keys[1], "amount_cents") == b"1250"
    finally:
        client.close()


def test_infra_check_passes_on_the_session_servers(settings: Settings) -> None:
    report = check_servers(settings, messages=50)
    assert not report.embedded  # the settings name servers: none are started
    assert {
        "create_topic",
        "produce_50",
        "kafka_python_join_and_consume_tuned",
        "aiokafka_join_and_consume_tuned",
        "redis_set_get_del",
    } <= set(report.timings_ms)


# --- topics are created explicitly, and required ---------------------------------------------


def test_create_topics_is_idempotent(settings: Settings) -> None:
    s = settings.replace(topics={"prefix": f"ct{uuid.uuid4().hex[:8]}."})
    assert sorted(create_topics(s)) == sorted(all_topics(s.topics))
    assert create_topics(s) == []
    assert set(all_topics(s.topics)) <= existing_topics(s)


def test_require_topics_names_the_missing_ones_and_creates_nothing(settings: Settings) -> None:
    s = settings.replace(topics={"prefix": f"rq{uuid.uuid4().hex[:8]}."})
    create_topics(s, input_topics(s.topics)[:2])
    with pytest.raises(InfraError) as err:
        require_topics(s)
    assert err.value.reason == "topics_missing"
    missing = all_topics(s.topics)[2:]
    assert all(name in str(err.value) for name in missing)
    assert not set(missing) & existing_topics(s)  # checking did not auto-create them
    require_topics(s, input_topics(s.topics)[:2])


# --- the broker caveats (DESIGN.md, docs/infra.md) ---------------------------------------------


def test_pre_created_topic_loses_nothing(settings: Settings) -> None:
    topic = f"loss{uuid.uuid4().hex[:8]}"
    create_topics(settings, [topic], partitions=4)
    values = [b"%06d" % i for i in range(5000)]
    acked = _produce(settings, topic, values, linger_ms=5)
    assert len(acked) == len(values)  # every ack has its own (partition, offset)
    got, consumer = _read_all(settings, topic, len(values))
    highwater = sum(consumer.highwater(tp) or 0 for tp in consumer.assignment())
    consumer.close()
    assert sorted(got) == values
    assert highwater == len(values)


def test_highwater_not_end_offsets_says_a_consumer_caught_up(
    settings: Settings, servers: object
) -> None:
    topic = f"hw{uuid.uuid4().hex[:8]}"
    create_topics(settings, [topic], partitions=1)
    tp = TopicPartition(topic, 0)
    producer = KafkaProducer(**client_options(settings.kafka, "test"), linger_ms=50)
    for i in range(10):
        producer.send(topic, b"single-%d" % i, partition=0).get(timeout=30)
    for i in range(10):
        producer.send(topic, b"batch-%d" % i, partition=0)
    producer.flush()
    producer.close()

    got, consumer = _read_all(settings, topic, 20)
    end_offset = consumer.end_offsets([tp])[tp]
    assert len(got) == 20
    assert consumer.highwater(tp) == 20
    consumer.close()

    async def aiokafka_highwater() -> int | None:
        consumer = AIOKafkaConsumer(
            **client_options(settings.kafka, "test"), enable_auto_commit=False
        )
        await consumer.start()
        atp = AIOTopicPartition(topic, 0)
        try:
            consumer.assign([atp])
            await consumer.seek_to_beginning(atp)
            n = 0
            while n < 20:
                n += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())
            return consumer.highwater(atp)
        finally:
            await consumer.stop()

    assert asyncio.run(aiokafka_highwater()) == 20
    if getattr(servers, "embedded", None) is not None:
        # the embedded build's ListOffsets(latest) under-reports: last batch's base offset + 1
        assert end_offset < 20
    else:
        assert end_offset == 20


def test_aiokafka_idempotent_producer_is_refused_by_the_embedded_broker(
    private_servers: EmbeddedServers,
) -> None:
    async def start_idempotent() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=private_servers.bootstrap_servers, enable_idempotence=True
        )
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(AIOKafkaError):  # InitProducerId answers UNKNOWN_SERVER_ERROR
        asyncio.run(start_idempotent())
    # kafka-python (idempotent by default since 3.0) gets a producer id and works
    topic = f"idem{uuid.uuid4().hex[:8]}"
    create_topics(private_servers.bootstrap_servers, [topic], partitions=1)
    producer = KafkaProducer(
        bootstrap_servers=private_servers.bootstrap_servers, enable_idempotence=True
    )
    assert producer.send(topic, b"x").get(timeout=30).offset == 0
    producer.close()


def test_sasl_broker_refuses_clients_and_scram_users_cannot_be_added() -> None:
    with EmbeddedServers(redis=False, kafka_authentication=True) as servers:
        assert kafka_answers(servers.bootstrap_servers, api="api_versions")
        assert not kafka_answers(servers.bootstrap_servers, api="metadata")  # unauthenticated
        with pytest.raises(InfraError) as err:
            servers.create_scram_user("scorer", "s3cret-pw")
        assert err.value.reason == "scram_unsupported"


# --- embedded Redis options --------------------------------------------------------------------


def test_redis_acl_user_is_confined_to_its_key_prefix() -> None:
    scorer = RedisAclUser("scorer", "scorer-pw", key_pattern="eg:*")
    with EmbeddedServers(kafka=False, redis_password="admin-pw", redis_acl_users=[scorer]) as s:
        assert not redis_answers(s.redis_url)  # the default user needs the password
        assert redis_answers(s.redis_url, password="admin-pw")
        client = redis.Redis.from_url(s.redis_url, username="scorer", password="scorer-pw")
        try:
            assert client.set("eg:state", "1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set("other:state", "1")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.flushall()
        finally:
            client.close()
        with pytest.raises(redis.exceptions.AuthenticationError):
            redis.Redis.from_url(s.redis_url, username="scorer", password="wrong").ping()


def test_restart_redis_keeps_append_only_data(private_servers: EmbeddedServers) -> None:
    url = private_servers.redis_url
    redis.Redis.from_url(url).set("eg:kept", "1")
    private_servers.restart_redis()
    assert private_servers.redis_url == url  # same port
    assert redis.Redis.from_url(url).get("eg:kept") == b"1"
    redis.Redis.from_url(url).set("eg:kept-hard", "2")
    private_servers.restart_redis(hard=True)  # SIGKILL: the AOF write already reached the OS
    assert redis.Redis.from_url(url).mget("eg:kept", "eg:kept-hard") == [b"1", b"2"]
    assert any(Path(private_servers.redis_data_dir).rglob("*.aof"))


def test_pause_and_resume(private_servers: EmbeddedServers) -> None:
    s = settings_for(load_settings(env={}), private_servers)
    private_servers.pause_redis()
    assert not redis_answers(s.redis.url, timeout_s=0.3)
    private_servers.resume_redis()
    assert redis_answers(s.redis.url)
    private_servers.pause_broker()
    assert not kafka_answers(s.kafka.bootstrap_servers, timeout_s=0.3)
    private_servers.resume_broker()
    assert kafka_answers(s.kafka.bootstrap_servers)


# --- no process left behind ------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pids: list[int], timeout_s: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if not _gone(p)]


def test_stop_leaves_no_process_and_no_temp_dir() -> None:
    servers = EmbeddedServers(redis_appendonly=True).start()
    pids = servers.pids()
    workdir = servers.redis_data_dir.parent
    assert len(pids) == 2 and workdir.is_dir()
    servers.pause_broker()  # a paused server must still stop
    servers.stop()
    assert _wait_gone(pids) == []
    assert not workdir.exists()


_PARENT = """
import json, sys, time
from escrowguard.infra import EmbeddedServers
servers = EmbeddedServers().start()
print(json.dumps(servers.pids()), flush=True)
time.sleep(600)
"""


def test_servers_die_with_their_killed_parent() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert len(pids) == 2 and not any(_gone(p) for p in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        assert _wait_gone(pids) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(10)


_DIE_IN_GROUP = r"""
import os, sys
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata
bootstrap, topic, group = sys.argv[1:4]
consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         session_timeout_ms=6000, heartbeat_interval_ms=1000)
consumer.subscribe([topic])
while not consumer.assignment():
    consumer.poll(200)
consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(7, "", -1)})
os._exit(0)  # no LeaveGroup: a crashed member
"""


def test_admin_offset_commit_is_refused_after_a_member_died(settings: Settings) -> None:
    """Broker caveat: a member that died without leaving is never expired for admin commits,
    so `alter_group_offsets` answers UNKNOWN_MEMBER_ID (we waited 60 s: 10 session timeouts);
    committing as a fresh member of the group works (`supervisor.rewind_group`)."""
    from kafka import KafkaAdminClient
    from kafka.structs import OffsetAndMetadata

    from escrowguard.stream_app.supervisor import committed_offsets, rewind_group

    tag = f"t{uuid.uuid4().hex[:10]}"
    scoped = settings.replace(topics={"prefix": f"{tag}.", "partitions": 1})
    create_topics(scoped)
    topic = input_topics(scoped.topics)[0]
    _produce(scoped, topic, [b"x"] * 10)
    group = f"{tag}-group"
    bootstrap = scoped.kafka.bootstrap_servers
    subprocess.run([sys.executable, "-c", _DIE_IN_GROUP, bootstrap, topic, group], check=True)
    assert committed_offsets(scoped, group) == {(topic, 0): 7}
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        time.sleep(scoped.kafka.session_timeout_ms / 1000 * 2)  # well past the session timeout
        result = admin.alter_group_offsets(
            group, {TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)}
        )
    finally:
        admin.close()
    assert result[TopicPartition(topic, 0)].__name__ == "UnknownMemberIdError"
    assert committed_offsets(scoped, group) == {(topic, 0): 7}
    assert rewind_group(scoped, group) == len(input_topics(scoped.topics))
    assert committed_offsets(scoped, group)[(topic, 0)] == 0
