"""Shared fixtures: one set of real servers per session, and a private namespace per test.

Where the servers come from, first match wins:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL`` (existing servers; ESCROWGUARD_* overrides apply);
   when only one is set, the other is embedded;
2. a Docker daemon that answers: testcontainers with ``apache/kafka`` (KRaft) and ``redis``;
3. the embedded Tansu broker + valkey-server (``escrowguard.infra.EmbeddedServers``).

Fixtures:
- ``servers`` (session): a ``Servers`` (bootstrap_servers, redis_url, source, embedded);
- ``settings``: a ``Settings`` pointed at those servers (default namespace);
- ``topic_namespace``: ``Settings`` with a unique ``topics.prefix`` and ``redis.key_prefix``,
  every topic created; the test's Redis keys are deleted afterwards;
- ``private_servers``: fresh ``EmbeddedServers`` (Redis append-only) for tests that pause,
  kill or restart a server; ``escrowguard.infra.settings_for`` points settings at them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from escrowguard.infra import (
    EmbeddedServers,
    create_topics,
    free_port,
    kafka_answers,
    redis_answers,
    wait_until,
)
from escrowguard.settings import Settings, load_settings
from tests.redis_state import drop_namespace_keys

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7.4-alpine"
_MARKER_BY_DIR = {"integration": "integration", "faults": "faults"}


@dataclass(frozen=True)
class Servers:
    """Where the session's Kafka and Redis are, and how they were obtained."""

    bootstrap_servers: str
    redis_url: str
    source: str  # "env", "docker", "embedded" or "env+embedded"
    embedded: EmbeddedServers | None = None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory too, so ``-m "not integration"`` never starts a server."""
    for item in items:
        try:
            parts = item.path.relative_to(config.rootpath).parts
        except ValueError:
            continue
        marker = _MARKER_BY_DIR.get(parts[1]) if len(parts) > 2 and parts[0] == "tests" else None
        if marker and marker not in item.keywords:
            item.add_marker(getattr(pytest.mark, marker))


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    """Kafka + Redis for the whole session (env, else Docker, else embedded)."""
    env_kafka = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    env_redis = os.environ.get("REDIS_URL", "")
    if env_kafka and env_redis:
        wait_until(
            lambda: kafka_answers(env_kafka, api="api_versions"), f"Kafka at {env_kafka}", 30
        )
        yield Servers(env_kafka, env_redis, "env")
    elif env_kafka or env_redis:
        with EmbeddedServers(kafka=not env_kafka, redis=not env_redis) as embedded:
            yield Servers(
                env_kafka or embedded.bootstrap_servers,
                env_redis or embedded.redis_url,
                "env+embedded",
                embedded,
            )
    elif _docker_answers():
        yield from _docker_servers()
    else:
        with EmbeddedServers() as embedded:
            yield Servers(embedded.bootstrap_servers, embedded.redis_url, "embedded", embedded)


def _docker_servers() -> Iterator[Servers]:
    """apache/kafka (single-node KRaft) and redis containers (unverified here: no Docker)."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.redis import RedisContainer

    port = free_port()  # the same port inside and outside, so the advertised address works
    kafka = (
        DockerContainer(KAFKA_IMAGE)
        .with_bind_ports(port, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS=f"PLAINTEXT://:{port},CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
    )
    redis_container = RedisContainer(REDIS_IMAGE)
    with kafka, redis_container:
        bootstrap = f"127.0.0.1:{port}"
        wait_until(lambda: kafka_answers(bootstrap), "Kafka container", 120)
        redis_url = f"redis://127.0.0.1:{redis_container.get_exposed_port(6379)}/0"
        wait_until(lambda: redis_answers(redis_url), "Redis container", 60)
        yield Servers(bootstrap, redis_url, "docker")


@pytest.fixture(scope="session")
def settings(servers: Servers) -> Settings:
    """Settings pointed at the session's servers (defaults, or the environment's for env);
    immutable, so one per session."""
    base = load_settings(env=os.environ if servers.source.startswith("env") else {})
    return base.replace(
        kafka={"bootstrap_servers": servers.bootstrap_servers},
        redis={"url": servers.redis_url},
    )


@pytest.fixture
def topic_namespace(settings: Settings) -> Iterator[Settings]:
    """Settings with a topic prefix and Redis key prefix of this test's own; topics exist."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    namespaced = settings.replace(topics={"prefix": f"{tag}."}, redis={"key_prefix": tag})
    create_topics(namespaced)
    yield namespaced
    drop_namespace_keys(namespaced)


@pytest.fixture
def private_servers() -> Iterator[EmbeddedServers]:
    """Embedded servers of this test's own (Redis append-only), free to pause or restart."""
    with EmbeddedServers(redis_appendonly=True) as embedded:
        yield embedded
