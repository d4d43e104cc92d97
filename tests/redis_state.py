"""A comparable snapshot of escrowguard's Redis state, for tests that compare runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from escrowguard.infra import redis_client
from escrowguard.settings import Settings

#: Key suffixes that are not feature state: rate-limit buckets (they follow the wall clock
#: and HTTP traffic, not the event history).
NOT_STATE = (":rate:",)


def redis_state(
    client: redis.Redis, prefix: str, exclude: Iterable[str] = NOT_STATE
) -> dict[str, Any]:
    """Every key under ``prefix:`` with its value, by type (TTLs left out: they follow the
    wall clock). Keys containing any of ``exclude`` are skipped."""
    skip = tuple(exclude)
    state: dict[str, Any] = {}
    for raw in client.scan_iter(match=f"{prefix}:*", count=1000):
        key = raw.decode() if isinstance(raw, bytes) else raw
        if any(part in key for part in skip):
            continue
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            state[key] = client.get(key)
        elif kind == "hash":
            state[key] = client.hgetall(key)
        elif kind == "zset":
            state[key] = client.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            state[key] = sorted(client.smembers(key))
        elif kind == "list":
            state[key] = client.lrange(key, 0, -1)
        elif kind != "none":  # "none": expired between SCAN and TYPE
            raise AssertionError(f"unexpected Redis type {kind} for {key}")
    return state


def drop_namespace_keys(settings: Settings) -> None:
    """Delete every Redis key of a namespace (tests clean up after themselves)."""
    client = redis_client(settings.redis)
    try:
        keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()
