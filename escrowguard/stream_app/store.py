"""The Redis feature store: two Lua calls per batch (read as-of contexts; apply writes).

Lua, not MULTI, because a batch's reads depend on what it reads (a pledge's project names
the creator whose wallets to read) and its writes branch (reference data: earliest wins).
Every write is idempotent: log members and de-duplication entries are keyed by event id,
reference data keeps the earliest record, frontiers and positions are overwritten. The
scripts touch keys they compute, so on Redis Cluster all keys must share one slot (a
``{hash tag}`` key prefix); see docs/reliability.md.

This is the only module that imports redis.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from escrowguard.errors import StoreError
from escrowguard.events import (
    BackerRegistered,
    MilestoneCreated,
    MilestoneResolved,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
)
from escrowguard.logs import log_event
from escrowguard.models.features import (
    FeatureWindows,
    PledgeContext,
    ResolutionContext,
    VoteContext,
)
from escrowguard.models.records import (
    decode_backer,
    decode_milestone,
    decode_milestone_ref,
    decode_pledge,
    decode_project,
    decode_resolution,
    decode_vote,
    encode_backer,
    encode_milestone,
    encode_milestone_ref,
    encode_pledge,
    encode_project,
    encode_resolution,
    encode_vote,
)
from escrowguard.settings import Settings
from escrowguard.stream_app.ordering import Pending
from escrowguard.stream_app.pipeline import BatchReads, EventRead, Writes

log = logging.getLogger(__name__)

SEEN_SHARDS: Final = 1024
DAY_US: Final = 86_400 * 1_000_000
_KIND: Final = {
    BackerRegistered: 1,
    ProjectCreated: 2,
    MilestoneCreated: 3,
    PledgeCreated: 4,
    VoteCast: 5,
    MilestoneResolved: 6,
}
_DECODE = msgspec.msgpack.Decoder()
_ENCODE = msgspec.msgpack.Encoder()


def key_prefix(settings: Settings) -> str:
    """The namespace of one deployment (or one backtest): Redis prefix + topic prefix."""
    return f"{settings.redis.key_prefix}:{settings.topics.prefix.rstrip('.')}"


def seen_shard(event_id: str) -> int:
    """Which de-duplication hash an event id lives in."""
    return zlib.crc32(event_id.encode()) % SEEN_SHARDS


class DedupeScheme(msgspec.Struct, frozen=True):
    """Event ids are remembered per event-time generation (a third of the dedupe TTL); a
    lookup checks the event's generation and its two neighbours."""

    generation_us: int

    def generation(self, t_us: int) -> int:
        """The generation an event time falls in."""
        return t_us // self.generation_us


def _candidate(p: Pending, dedupe: DedupeScheme) -> list[Any]:
    ev = p.event
    head = [
        _KIND[type(ev)],
        p.t_us,
        ev.event_id,
        seen_shard(ev.event_id),
        dedupe.generation(p.t_us),
    ]
    if isinstance(ev, PledgeCreated):
        return [*head, ev.backer_id, ev.project_id, ev.source_wallet]
    if isinstance(ev, BackerRegistered):
        return [*head, ev.backer_id, "", ""]
    if isinstance(ev, ProjectCreated):
        return [*head, ev.project_id, "", ""]
    return [*head, ev.project_id, ev.milestone_id, ""]  # milestone / vote / resolution


def _pairs(flat: Sequence[Any]) -> Iterable[tuple[int, str]]:
    for i in range(0, len(flat), 2):
        yield int(flat[i + 1]), flat[i]


def decode_context(event: Any, row: Sequence[Any]) -> object:
    """Turn one Lua result row into the context type ``checks``/``features`` expect."""
    if isinstance(event, PledgeCreated):
        return PledgeContext(
            backer=decode_backer(row[1]) if row[1] else None,
            backer_pledges=[decode_pledge(t, m) for t, m in _pairs(row[2])],
            project=decode_project(row[3]) if row[3] else None,
            project_pledges=[decode_pledge(t, m) for t, m in _pairs(row[4])],
            wallet_creators={m: t for t, m in _pairs(row[5])},
            wallet_pledges=[decode_pledge(t, m) for t, m in _pairs(row[6])],
            milestones=[decode_milestone(t, m) for t, m in _pairs(row[7])],
        )
    if isinstance(event, VoteCast):
        return VoteContext(
            milestone=decode_milestone_ref(row[1]) if row[1] else None,
            project=decode_project(row[2]) if row[2] else None,
            project_pledges=[decode_pledge(t, m) for t, m in _pairs(row[3])],
            votes=[decode_vote(t, m) for t, m in _pairs(row[4])],
            resolutions=[decode_resolution(t, m) for t, m in _pairs(row[5])],
        )
    if isinstance(event, MilestoneResolved):
        return ResolutionContext(
            milestone=decode_milestone_ref(row[1]) if row[1] else None,
            project=decode_project(row[2]) if row[2] else None,
            project_pledges=[decode_pledge(t, m) for t, m in _pairs(row[3])],
            votes=[decode_vote(t, m) for t, m in _pairs(row[4])],
            resolutions=[decode_resolution(t, m) for t, m in _pairs(row[5])],
            milestones=[decode_milestone(t, m) for t, m in _pairs(row[6])],
        )
    if isinstance(event, BackerRegistered):
        return decode_backer(row[1]) if row[1] else None
    if isinstance(event, ProjectCreated):
        return decode_project(row[1]) if row[1] else None
    return (
        decode_project(row[1]) if row[1] else None,
        decode_milestone_ref(row[2]) if row[2] else None,
    )


def _as_of_project(ctx: object, event: Any) -> object:
    """Reads return reference data whatever its time; features see it only as of the event."""
    t = event.occurred_us
    if isinstance(ctx, PledgeContext | VoteContext | ResolutionContext):
        if ctx.project is not None and ctx.project.t_us >= t:
            ctx.project = None
        if isinstance(ctx, PledgeContext):
            if ctx.backer is not None and ctx.backer.t_us >= t:
                ctx.backer = None
        elif ctx.milestone is not None and ctx.milestone.t_us >= t:
            ctx.milestone = None
    elif isinstance(ctx, tuple) and ctx[0] is not None and ctx[0].t_us >= t:
        ctx = (None, ctx[1])
    return ctx


class RedisStore:
    """The feature store on a real Redis (or Valkey) server."""

    def __init__(self, settings: Settings, windows: FeatureWindows) -> None:
        r = settings.redis
        self.prefix = key_prefix(settings)
        self.windows = windows
        self.settings = settings
        self.dedupe = DedupeScheme(settings.worker.dedupe_ttl_s * 1_000_000 // 3)
        self.client = aioredis.from_url(
            r.url,
            username=r.username or None,
            password=r.password.reveal() or None,
            socket_timeout=r.socket_timeout_s,
            socket_connect_timeout=r.socket_timeout_s,
            health_check_interval=30,
        )
        lua = resources.files("escrowguard.stream_app")
        self._read = self.client.register_script(lua.joinpath("store_read.lua").read_text())
        self._write = self.client.register_script(lua.joinpath("store_write.lua").read_text())
        self._bucket = self.client.register_script(lua.joinpath("store_ratelimit.lua").read_text())
        f = settings.features
        self._ttls = [
            f.project_state_ttl_s,
            settings.worker.dedupe_ttl_s,
            2 * f.backer_history_window_s,
            2 * f.wallet_window_s,
        ]
        self._trims = [
            windows.backer_history_s * 1_000_000,
            windows.wallet_s * 1_000_000,
            (settings.bandit.window_days + 60) * DAY_US,
        ]

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.aclose()

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as exc:
            raise StoreError(
                f"Redis unreachable during {what}: {exc}", "store_unavailable"
            ) from exc
        except redis_errors.ResponseError as exc:
            raise StoreError(f"Redis rejected {what}: {exc}", "store_rejected") from exc
        except redis_errors.RedisError as exc:
            raise StoreError(f"Redis failed during {what}: {exc}") from exc

    async def ping(self) -> str:
        """Check the connection; returns the server's run id (changes on restart)."""
        info = await self._call("ping", self.client.info("server"))
        return str(info.get("run_id", ""))

    async def register_partitions(self, tps: Iterable[str]) -> None:
        """Make every input partition hold the frontier back until its owner reports."""
        key = f"{self.prefix}:frontier"
        pipe = self.client.pipeline(transaction=False)
        for tp in tps:
            pipe.hsetnx(key, tp, str(-(2**62)))
        await self._call("register partitions", pipe.execute())

    async def positions(self) -> dict[str, int]:
        """Per partition, the next offset whose effects are not in Redis yet."""
        raw = await self._call("positions", self.client.hgetall(f"{self.prefix}:pos"))
        return {k.decode(): int(v) for k, v in raw.items()}

    async def read(
        self,
        candidates: Sequence[Pending],
        own: Sequence[str],
        own_bound: int,
        cached_days: Collection[int],
        gate: bool = True,
        days: Collection[int] = (),
    ) -> BatchReads:
        """One Lua call: the frontier, and the as-of context of every eligible candidate
        (with ``gate=False``, of every candidate: on-demand scoring does not wait)."""
        payload = _ENCODE.encode(
            [
                self.prefix,
                list(own),
                own_bound,
                self.windows.backer_history_s * 1_000_000,
                self.windows.wallet_s * 1_000_000,
                self.settings.bandit.window_days,
                DAY_US,
                list(cached_days),
                [_candidate(p, self.dedupe) for p in candidates],
                self.settings.features.max_members_per_read,
                gate,
                list(days),
            ]
        )
        raw = await self._call("read", self._read(args=[payload]))
        frontier, pmax, rows, bandit_rows = _DECODE.decode(raw)
        events = []
        for pending, row in zip(candidates, rows, strict=False):
            seen = row[0].decode() if isinstance(row[0], bytes) else (row[0] or None)
            ctx = decode_context(pending.event, [_text(x) for x in row])
            events.append(EventRead(seen, _as_of_project(ctx, pending.event)))
        bandit: dict[int, dict[str, tuple[int, int]]] = {}
        for flat in bandit_rows:
            counts = {}
            for i in range(1, len(flat), 3):
                counts[_text(flat[i])] = (int(flat[i + 1]), int(flat[i + 2]))
            bandit[int(flat[0])] = counts
        return BatchReads(int(frontier), int(pmax), events, bandit)

    async def write(
        self,
        writes: Writes,
        frontiers: Mapping[str, int],
        processed_max: int,
        positions: Mapping[str, int],
        labels_key: str = "",
    ) -> int:
        """One Lua call applying a decided batch; returns the label counter."""
        seen = [
            [eid, seen_shard(eid), self.dedupe.generation(t), pos] for eid, t, pos in writes.seen
        ]
        backers, projects, milestones, pledges, votes, resolutions = [], [], [], [], [], []
        for fx in writes.effects:
            if fx.pledge is not None:
                p = fx.pledge
                pledges.append(
                    [p.t_us, encode_pledge(p), p.backer_id, p.project_id, p.source_wallet]
                )
            elif fx.vote is not None:
                mid, v = fx.vote
                votes.append([v.t_us, encode_vote(v), mid])
            elif fx.resolution is not None:
                pid, r = fx.resolution
                resolutions.append(
                    [r.t_us, encode_resolution(r), pid, r.milestone_id, "1" if r.approved else "0"]
                )
            elif fx.backer is not None:
                b = fx.backer
                backers.append([b.backer_id, encode_backer(b), b.t_us, b.event_id])
            elif fx.project is not None:
                pr = fx.project
                projects.append(
                    [
                        pr.project_id,
                        encode_project(pr),
                        pr.t_us,
                        pr.event_id,
                        pr.creator_id,
                        pr.creator_wallet,
                    ]
                )
            elif fx.milestone is not None:
                m = fx.milestone
                milestones.append(
                    [
                        m.milestone_id,
                        encode_milestone_ref(m),
                        m.t_us,
                        m.event_id,
                        m.project_id,
                        encode_milestone(m),
                    ]
                )
        payload = _ENCODE.encode(
            [
                self.prefix,
                seen,
                backers,
                projects,
                milestones,
                pledges,
                votes,
                resolutions,
                [[m, a] for m, a in sorted(writes.arms.items())],
                [[tp, t] for tp, t in sorted(frontiers.items())],
                processed_max,
                [[tp, off] for tp, off in sorted(positions.items())],
                labels_key,
                writes.labels,
                self._ttls,
                self._trims,
            ]
        )
        result = await self._call("write", self._write(args=[payload]))
        return int(result)

    async def take_token(self, client: str, per_minute: int) -> tuple[bool, int]:
        """Token bucket (Redis clock, shared by all workers): (allowed, retry-after seconds)."""
        key = f"{self.prefix}:rate:{client}"
        allowed, retry, _ = await self._call(
            "rate limit", self._bucket(keys=[key], args=[per_minute, per_minute / 60.0])
        )
        return bool(allowed), int(retry)

    async def wait_until_available(self, stop: asyncio.Event | None = None) -> str:
        """Retry with exponential backoff until Redis answers; returns its run id."""
        delay = self.settings.redis.retry_backoff_initial_s
        while True:
            try:
                return await self.ping()
            except StoreError as exc:
                log_event(
                    log,
                    "redis_unavailable",
                    logging.WARNING,
                    retry_in_s=round(delay, 2),
                    error=exc.message,
                )
                if stop is not None and stop.is_set():
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.redis.retry_backoff_max_s)


def _text(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.decode()
    if isinstance(x, list):
        return [_text(i) for i in x]
    return x
