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
from collections import OrderedDict
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
    decode_milestone_ref,
    decode_project,
    encode_backer,
    encode_milestone_ref,
    encode_pledge,
    encode_project,
    encode_resolution,
    encode_vote,
    parse_milestones,
    parse_pledges,
    parse_resolutions,
    parse_votes,
    parse_wallet_creators,
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
#: StoreError reason: the namespace's state marker is not the one this store decides against
#: (state_marker.py); the write script's refusal carries MARKER_ERROR.
MARKER_CHANGED: Final = "state_marker_changed"
MARKER_ERROR: Final = "ESCROWGUARD_STATE_MARKER"
_FINISH_REBUILD: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for _, tp in ipairs(redis.call('HKEYS', KEYS[2])) do redis.call('HSET', KEYS[2], tp, ARGV[3]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


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


class PrefixCache:
    """As-of prefixes of the two long logs (a project's pledges, a milestone's votes).

    Once read as of an event inside the frontier, the first ``n`` entries of a log never
    change (nothing earlier can be applied any more: docs/ordering.md), so the worker keeps
    them and asks Redis only for entries past what it holds. Bounded by entries, not logs
    (a log's length is unbounded): least recently used logs are dropped, and fetched in full
    the next time they are read.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self.entries = 0
        self._logs: OrderedDict[str, list[Any]] = OrderedDict()

    def have(self, key: str) -> int:
        """How many entries of the log are held."""
        log = self._logs.get(key)
        return 0 if log is None else len(log)

    def extend(self, key: str, start: int, tail: list[Any]) -> list[Any]:
        """Held entries up to ``start`` plus ``tail``; returns the log."""
        log = self._logs.get(key)
        if log is None:
            log = []
            if not tail:
                return log
            self._logs[key] = log
        else:
            self._logs.move_to_end(key)
        if tail:
            if start > len(log):
                raise StoreError(f"prefix cache lost entries of {key} within one read")
            self.entries -= len(log)
            if start == len(log):
                log.extend(tail)  # the usual case: append in place, no copy of the prefix
            else:
                log[start:] = tail
            self.entries += len(log)
        return log

    def trim(self) -> None:
        """Drop least recently used logs down to the bound. Called between reads only: the
        entries one read sends for a log assume the cache still holds what it had."""
        while self.entries > self.max_entries and self._logs:
            _, dropped = self._logs.popitem(last=False)
            self.entries -= len(dropped)

    def clear(self) -> None:
        """Forget everything (e.g. the store restarted and may have lost data)."""
        self._logs.clear()
        self.entries = 0


def _candidate(p: Pending, dedupe: DedupeScheme, cache: PrefixCache) -> list[Any]:
    ev = p.event
    head = [
        _KIND[type(ev)],
        p.t_us,
        ev.event_id,
        seen_shard(ev.event_id),
        dedupe.generation(p.t_us),
    ]
    if isinstance(ev, PledgeCreated):
        have_pp = cache.have(f"pp:{ev.project_id}")
        return [*head, ev.backer_id, ev.project_id, ev.source_wallet, have_pp, 0]
    if isinstance(ev, BackerRegistered):
        return [*head, ev.backer_id, "", "", 0, 0]
    if isinstance(ev, ProjectCreated):
        return [*head, ev.project_id, "", "", 0, 0]
    # milestone created / vote / resolution
    have_pp = cache.have(f"pp:{ev.project_id}")
    have_mv = cache.have(f"mv:{ev.milestone_id}")
    return [*head, ev.project_id, ev.milestone_id, "", have_pp, have_mv]


def _prefix(cache: PrefixCache, key: str, answer: Sequence[Any], parse: Any) -> list[Any]:
    """The as-of log from a Lua prefix answer {count, first index sent, entries}."""
    n, start, tail = int(answer[0]), int(answer[1]), _text(answer[2])
    return cache.extend(key, start, parse(tail))[:n]


def decode_context(event: Any, row: Sequence[Any], cache: PrefixCache) -> object:
    """Turn one Lua result row into the context type ``checks``/``features`` expect."""
    text: list[Any] = [_text(x) if not isinstance(x, list) else x for x in row]
    if isinstance(event, PledgeCreated):
        return PledgeContext(
            backer=decode_backer(text[1]) if text[1] else None,
            backer_pledges=parse_pledges(text[2]),
            project=decode_project(text[3]) if text[3] else None,
            project_pledges=_prefix(cache, f"pp:{event.project_id}", text[4], parse_pledges),
            wallet_creators=parse_wallet_creators(text[5]),
            wallet_pledges=parse_pledges(text[6]),
            milestones=parse_milestones(text[7]),
        )
    if isinstance(event, VoteCast | MilestoneResolved):
        common: dict[str, Any] = {
            "milestone": decode_milestone_ref(text[1]) if text[1] else None,
            "project": decode_project(text[2]) if text[2] else None,
            "project_pledges": _prefix(cache, f"pp:{event.project_id}", text[3], parse_pledges),
            "votes": _prefix(cache, f"mv:{event.milestone_id}", text[4], parse_votes),
            "resolutions": parse_resolutions(text[5]),
        }
        if isinstance(event, VoteCast):
            return VoteContext(**common)
        return ResolutionContext(**common, milestones=parse_milestones(text[6]))
    if isinstance(event, BackerRegistered):
        return decode_backer(text[1]) if text[1] else None
    if isinstance(event, ProjectCreated):
        return decode_project(text[1]) if text[1] else None
    return (
        decode_project(text[1]) if text[1] else None,
        decode_milestone_ref(text[2]) if text[2] else None,
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
        self.cache = PrefixCache(settings.worker.prefix_cache_max_entries)
        # The state marker this store decides against (state_marker.py): reads raise
        # StoreError("state_marker_changed") and writes are refused unless Redis still holds
        # it. None: not checked (tools and tests that drive the store directly).
        self.marker: str | None = None
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
            if MARKER_ERROR in str(exc):
                raise StoreError(
                    f"Redis no longer holds the state marker {self.marker!r} ({what}): {exc}",
                    MARKER_CHANGED,
                ) from exc
            raise StoreError(f"Redis rejected {what}: {exc}", "store_rejected") from exc
        except redis_errors.RedisError as exc:
            raise StoreError(f"Redis failed during {what}: {exc}") from exc

    async def ping(self) -> str:
        """Check the connection; returns the server's run id (changes on restart)."""
        info = await self._call("ping", self.client.info("server"))
        return str(info.get("run_id", ""))

    async def clear(self) -> int:
        """Delete every key of this namespace (``rebuild-state`` starts from nothing: what a
        worker wrote after Redis lost its data is wrong); returns how many were deleted."""

        async def scan() -> list[Any]:
            return [k async for k in self.client.scan_iter(match=f"{self.prefix}:*", count=1000)]

        keys = await self._call("clear", scan())
        deleted = 0
        for start in range(0, len(keys), 500):
            deleted += await self._call("clear", self.client.delete(*keys[start : start + 500]))
        return deleted

    async def get_marker(self) -> str | None:
        """The namespace's state marker (None when Redis holds none)."""
        raw = await self._call("marker", self.client.get(f"{self.prefix}:marker"))
        return None if raw is None else _text(raw)

    async def create_marker(self, marker: str) -> str:
        """Mark the namespace's state unless it already is; returns the marker it holds
        (another worker starting at the same moment may have won)."""
        key = f"{self.prefix}:marker"
        await self._call("marker", self.client.set(key, marker, nx=True))
        return _text(await self._call("marker", self.client.get(key)))

    async def set_marker(self, marker: str) -> None:
        """Overwrite the marker (``rebuild-state``: "rebuilding:<id>" before it writes)."""
        await self._call("marker", self.client.set(f"{self.prefix}:marker", marker))

    async def finish_rebuild(self, rebuilding: str, marker: str) -> bool:
        """End of ``rebuild-state``: if the marker is still ``rebuilding``, reset every
        partition's frontier (each holds the others back until its owner reports again, as
        on a fresh deployment) and mark the state whole, atomically. False when the marker
        changed meanwhile (Redis lost data again, or another rebuild started)."""
        done = await self._call(
            "finish rebuild",
            self.client.eval(
                _FINISH_REBUILD,
                2,
                f"{self.prefix}:marker",
                f"{self.prefix}:frontier",
                rebuilding,
                marker,
                str(-(2**62)),
            ),
        )
        return bool(done)

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
        # an ungated read (on-demand scoring) may see past the frontier: never cache it
        cache = self.cache if gate else PrefixCache()
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
                [_candidate(p, self.dedupe, cache) for p in candidates],
                self.settings.features.max_members_per_read,
                gate,
                list(days),
            ]
        )
        raw = await self._call("read", self._read(args=[payload]))
        frontier, pmax, rows, bandit_rows, *rest = _DECODE.decode(raw)
        if self.marker is not None:
            current = (_text(rest[0]) or None) if rest else None
            if current != self.marker:
                raise StoreError(
                    f"Redis holds state marker {current!r}, not {self.marker!r}", MARKER_CHANGED
                )
        events = []
        for pending, row in zip(candidates, rows, strict=False):
            seen = _text(row[0]) or None
            ctx = decode_context(pending.event, row, cache)
            events.append(EventRead(seen, _as_of_project(ctx, pending.event)))
        cache.trim()
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
                self.marker,
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
