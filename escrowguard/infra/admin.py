"""Topic administration (create, require, delete) and client factories, for every component.

Topics are always created explicitly, never auto-created (docs/infra.md: the embedded broker
is not safe with auto-created topics); the replay tool and the worker call
``require_topics`` and refuse to start when one is missing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import redis
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from escrowguard.errors import InfraError
from escrowguard.kafka_config import client_options
from escrowguard.logs import log_event
from escrowguard.settings import KafkaSettings, RedisSettings, Settings
from escrowguard.topics import all_topics

logger = logging.getLogger(__name__)

_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


#: What the topic helpers accept: full settings, the [kafka] section, or a PLAINTEXT bootstrap.
KafkaTarget = Settings | KafkaSettings | str


def _connection(target: KafkaTarget) -> tuple[str, dict[str, Any]]:
    """(bootstrap servers, kafka-python keyword arguments) for a target."""
    if isinstance(target, str):
        return target, {}
    kafka = target.kafka if isinstance(target, Settings) else target
    opts = client_options(kafka, client_suffix="admin")
    return ",".join(opts.pop("bootstrap_servers")), opts


@contextlib.contextmanager
def _admin(target: KafkaTarget, timeout_s: float) -> Iterator[KafkaAdminClient]:
    bootstrap, opts = _connection(target)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, bootstrap_timeout_ms=int(timeout_s * 1000), **opts
        )
    except KafkaError as exc:
        raise InfraError(
            f"cannot reach Kafka at {bootstrap}: {exc}", reason="broker_unavailable"
        ) from exc
    try:
        yield admin
    except KafkaError as exc:
        raise InfraError(f"Kafka admin request to {bootstrap} failed: {exc}") from exc
    finally:
        admin.close()


def existing_topics(target: KafkaTarget, timeout_s: float = 30.0) -> set[str]:
    """Names of the topics the cluster has (a metadata read that never auto-creates)."""
    with _admin(target, timeout_s) as admin:
        return set(admin.list_topics())


def topic_partitions(
    target: KafkaTarget, names: Iterable[str], timeout_s: float = 30.0
) -> dict[str, int]:
    """Partition count of each named topic, from cluster metadata (missing topics omitted)."""
    wanted = list(names)
    with _admin(target, timeout_s) as admin:
        described = admin.describe_topics(wanted)
    return {
        str(t.get("name") or t.get("topic")): len(t["partitions"])
        for t in described
        if not t.get("error_code") and t.get("partitions")
    }


def create_topics(
    target: KafkaTarget,
    names: Iterable[str] | None = None,
    partitions: int | None = None,
    replication_factor: int | None = None,
    *,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet, then wait until metadata lists all of them.

    Idempotent: existing topics are left as they are. ``names`` defaults to every topic of
    ``target`` (a ``Settings``), ``partitions`` and ``replication_factor`` to its [topics].
    Returns the names it created.
    """
    wanted = list(dict.fromkeys(names if names is not None else _all_topics(target)))
    topic_settings = target.topics if isinstance(target, Settings) else None
    partitions = partitions or (topic_settings.partitions if topic_settings else 1)
    replication_factor = replication_factor or (
        topic_settings.replication_factor if topic_settings else 1
    )
    with _admin(target, timeout_s) as admin:
        have = set(admin.list_topics())
        missing = [name for name in wanted if name not in have]
        if missing:
            spec = {
                name: {"num_partitions": partitions, "replication_factor": replication_factor}
                for name in missing
            }
            result = admin.create_topics(spec, timeout_ms=int(timeout_s * 1000), raise_errors=False)
            failed = {
                t["name"]: t.get("error_message") or t["error_code"]
                for t in result["topics"]
                if t["error_code"] not in (0, _TOPIC_EXISTS)
            }
            if failed:
                raise InfraError(f"could not create topics: {failed}")
        admin.wait_for_topics(wanted, timeout_ms=int(timeout_s * 1000))
    log_event(
        logger, "topics_ready", created=len(missing), total=len(wanted), partitions=partitions
    )
    return missing


def require_topics(
    target: KafkaTarget, names: Iterable[str] | None = None, *, timeout_s: float = 30.0
) -> None:
    """Raise InfraError naming every topic the cluster lacks; never creates one.

    ``names`` defaults to every topic of ``target`` (a ``Settings``): inputs and outputs.
    """
    wanted = list(dict.fromkeys(names if names is not None else _all_topics(target)))
    have = existing_topics(target, timeout_s)
    missing = [name for name in wanted if name not in have]
    if missing:
        raise InfraError(
            f"missing Kafka topics: {', '.join(missing)}. Create them first with "
            "`escrowguard infra create-topics` (auto-created topics can lose records)",
            reason="topics_missing",
        )


def delete_topics(target: KafkaTarget, names: Iterable[str]) -> None:
    """Delete topics, ignoring the ones that do not exist (best effort, for clean-ups)."""
    with _admin(target, 10.0) as admin:
        admin.delete_topics(list(names), raise_errors=False)


def _all_topics(target: KafkaTarget) -> list[str]:
    if not isinstance(target, Settings):
        raise InfraError("name the topics, or pass Settings to use every configured topic")
    return all_topics(target.topics)


def redis_client(redis_settings: RedisSettings) -> redis.Redis:
    """A redis-py client for the configured Redis (credentials from settings, not the URL)."""
    return redis.Redis.from_url(
        redis_settings.url,
        username=redis_settings.username or None,
        password=redis_settings.password.reveal() or None,
        socket_timeout=redis_settings.socket_timeout_s,
        socket_connect_timeout=redis_settings.socket_timeout_s,
    )
