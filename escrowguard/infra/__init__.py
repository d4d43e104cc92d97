"""Infrastructure: embedded servers for machines without Docker, topic admin, smoke check.

The one place (with ``stream_app/`` and ``producers/``) that touches Kafka and Redis clients
outside the worker. Public API:

- ``EmbeddedServers``, ``RedisAclUser``, ``servers_for``, ``settings_for``,
  ``serve_embedded``: embedded Tansu + valkey-server;
- ``create_topics``, ``require_topics``, ``existing_topics``, ``delete_topics``,
  ``redis_client``: what the replay tool, the worker and the tests share;
- ``kafka_answers``, ``redis_answers``, ``wait_until``, ``free_port``: readiness by polling;
- ``check_servers`` (in ``escrowguard.infra.check``): the ``escrowguard infra check`` smoke test.
"""

from __future__ import annotations

from escrowguard.infra.admin import (
    KafkaTarget,
    create_topics,
    delete_topics,
    existing_topics,
    redis_client,
    require_topics,
    topic_partitions,
)
from escrowguard.infra.embedded import (
    EmbeddedServers,
    RedisAclUser,
    serve_embedded,
    servers_for,
    settings_for,
)
from escrowguard.infra.processes import (
    HOST,
    broker_binary,
    free_port,
    kafka_answers,
    redis_answers,
    redis_server_binary,
    wait_until,
)

__all__ = [
    "HOST",
    "EmbeddedServers",
    "KafkaTarget",
    "RedisAclUser",
    "broker_binary",
    "create_topics",
    "delete_topics",
    "existing_topics",
    "free_port",
    "kafka_answers",
    "redis_answers",
    "redis_client",
    "redis_server_binary",
    "require_topics",
    "serve_embedded",
    "servers_for",
    "settings_for",
    "topic_partitions",
    "wait_until",
]
