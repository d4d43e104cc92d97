"""One contract, two stores: the Redis store (Lua) decides exactly what the in-memory store
decides, and ends up holding the same state, on a whole synthetic history."""

from __future__ import annotations

import pytest

from escrowguard.events import decode
from escrowguard.infra import redis_client
from escrowguard.models.features import FeatureWindows
from escrowguard.models.history import walk_history
from escrowguard.settings import Settings
from escrowguard.stream_app.store import RedisStore, key_prefix
from tests.unit.streamsim import simulate
from tests.unit.test_stream_simulation import decided, history_lines

pytestmark = pytest.mark.integration


def redis_factory(namespace: Settings):
    def build(settings: Settings, windows: FeatureWindows) -> RedisStore:
        merged = settings.replace(
            redis={"url": namespace.redis.url, "key_prefix": namespace.redis.key_prefix}
        )
        return RedisStore(merged, windows)

    return build


def test_redis_store_decides_like_the_memory_store(topic_namespace: Settings) -> None:
    expected = decided(simulate(history_lines(), partitions=4, workers=2, seed=21))
    dep = simulate(
        history_lines(),
        partitions=4,
        workers=2,
        seed=21,
        store_factory=redis_factory(topic_namespace),
        base=topic_namespace,
    )
    assert decided(dep) == expected


def test_redis_store_survives_crashes_like_the_memory_store(topic_namespace: Settings) -> None:
    expected = decided(simulate(history_lines(), partitions=1, workers=1, seed=0))
    dep = simulate(
        history_lines(),
        partitions=3,
        workers=2,
        seed=22,
        crash_rate=0.05,
        store_factory=redis_factory(topic_namespace),
        base=topic_namespace,
    )
    assert dep.collector.crashes >= 3
    assert decided(dep) == expected


def test_redis_state_matches_the_offline_walk(topic_namespace: Settings) -> None:
    """Every pledge and vote of the history is stored once, under its entity's keys."""
    dep = simulate(
        history_lines(),
        partitions=2,
        workers=1,
        seed=23,
        store_factory=redis_factory(topic_namespace),
        base=topic_namespace,
    )
    offline = walk_history([decode(x) for x in history_lines()], FeatureWindows())
    client = redis_client(topic_namespace.redis)
    prefix = key_prefix(dep.settings)
    try:

        def count(pattern: str) -> int:
            return sum(client.zcard(k) for k in client.scan_iter(match=pattern, count=1000))

        pledges, votes = count(f"{prefix}:pp:*"), count(f"{prefix}:mv:*")
    finally:
        client.close()
    assert pledges == sum(len(v) for v in offline.state.project_pledges.values())
    assert votes == sum(len(v) for v in offline.state.milestone_votes.values())
