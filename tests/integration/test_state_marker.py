"""The state marker on a real Redis: the per-batch read reports it, the write refuses a batch
decided against another one (nothing written), and the end of a rebuild marks the state
whole only if it was still the rebuild's."""

from __future__ import annotations

import asyncio

import pytest

from escrowguard.errors import StoreError
from escrowguard.infra import redis_client
from escrowguard.models.features import FeatureWindows
from escrowguard.settings import Settings
from escrowguard.stream_app.ordering import UNBOUNDED
from escrowguard.stream_app.pipeline import Writes
from escrowguard.stream_app.state_marker import REBUILDING
from escrowguard.stream_app.store import MARKER_CHANGED, RedisStore, key_prefix

pytestmark = pytest.mark.integration


def _run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def _scenario(s: Settings) -> dict[str, object]:
    store = RedisStore(s, FeatureWindows())
    prefix = key_prefix(s)
    seen: dict[str, object] = {}
    try:
        # unchecked (marker None): reads and writes as before markers
        await store.write(Writes(), {"t:0": 5}, 0, {"t:0": 7})
        seen["unchecked_read"] = (await store.read([], [], UNBOUNDED, ())).frontier_us
        # a fresh state: create the marker; a second creator gets the first one's
        first = await store.create_marker("m1")
        second = await store.create_marker("m2")
        seen["created"] = (first, second)
        store.marker = first
        await store.write(Writes(), {"t:0": 6}, 0, {"t:0": 8})
        await store.read([], [], UNBOUNDED, ())
        # Redis loses the namespace's state (FLUSHALL, restart without persistence)
        await store.client.delete(f"{prefix}:marker", f"{prefix}:pos")
        for what, call in (
            ("read", store.read([], [], UNBOUNDED, ())),
            ("write", store.write(Writes(), {"t:0": 9}, 0, {"t:0": 9})),
        ):
            try:
                await call
                seen[what] = "no error"
            except StoreError as exc:
                seen[what] = exc.reason
        seen["pos_after_refused_write"] = await store.positions()
        # a rebuild: rebuilding marker, then whole again only if still the rebuild's
        await store.set_marker(REBUILDING + "r1")
        seen["finish_other"] = await store.finish_rebuild(REBUILDING + "r0", "r0")
        seen["finish_own"] = await store.finish_rebuild(REBUILDING + "r1", "r1")
        seen["marker_after"] = await store.get_marker()
        frontier = await store.client.hgetall(f"{prefix}:frontier")
        seen["frontier_after"] = {k.decode(): int(v) for k, v in frontier.items()}
    finally:
        await store.close()
    return seen


def test_the_marker_guards_reads_and_writes(topic_namespace: Settings) -> None:
    seen = _run(_scenario(topic_namespace))
    assert isinstance(seen, dict)
    assert seen["created"] == ("m1", "m1")
    assert seen["read"] == MARKER_CHANGED
    assert seen["write"] == MARKER_CHANGED
    assert seen["pos_after_refused_write"] == {}  # the refused batch wrote nothing
    assert seen["finish_other"] is False
    assert seen["finish_own"] is True
    assert seen["marker_after"] == "r1"
    # every partition's frontier reset: each holds the others back until its owner reports
    assert seen["frontier_after"] == {"t:0": -(2**62)}
    client = redis_client(topic_namespace.redis)
    try:
        assert client.get(f"{key_prefix(topic_namespace)}:marker") == b"r1"
    finally:
        client.close()
