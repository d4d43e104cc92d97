"""The feature store in memory: same contract as ``store.RedisStore``, no server.

For unit tests of the whole pipeline (ordering, redelivery, several workers sharing one
store) and for the contract test suite that runs on both stores, so they cannot drift
apart. Never used by a running worker.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Mapping, Sequence

from escrowguard.models.features import (
    FeatureWindows,
    PledgeContext,
    ResolutionContext,
    VoteContext,
)
from escrowguard.models.state import MemoryState
from escrowguard.settings import BanditSettings
from escrowguard.stream_app.ordering import NEVER, Pending
from escrowguard.stream_app.pipeline import DAY_US, BatchReads, EventRead, Writes


class MemoryStore:
    """A dict-backed feature store with the RedisStore interface."""

    def __init__(
        self, windows: FeatureWindows, bandit: BanditSettings, max_members: int = 2000
    ) -> None:
        self.windows = windows
        self.bandit = bandit
        self.max_members = max_members
        self.state = MemoryState()
        self.seen: dict[str, str] = {}
        self.frontier: dict[str, int] = {}
        self.processed_max = NEVER
        self.pos: dict[str, int] = {}
        self.arms: dict[str, str] = {}
        self.outcomes: list[tuple[int, str, bool]] = []  # (t_us, milestone_id, approved)
        self.counters: dict[str, int] = {}

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> str:
        """A constant run id (the store never restarts)."""
        return "memory"

    async def register_partitions(self, tps: Iterable[str]) -> None:
        """Make every input partition hold the frontier back until its owner reports."""
        for tp in tps:
            self.frontier.setdefault(tp, NEVER)

    async def positions(self) -> dict[str, int]:
        """Per partition, the next offset whose effects are not stored yet."""
        return dict(self.pos)

    async def read(
        self,
        candidates: Sequence[Pending],
        own: Sequence[str],
        own_bound: int,
        cached_days: Collection[int],
        gate: bool = True,
        days: Collection[int] = (),
    ) -> BatchReads:
        """The frontier and the as-of context of every eligible candidate."""
        mine = set(own)
        others = [t for tp, t in self.frontier.items() if tp not in mine] if gate else []
        frontier = min([own_bound, *others])
        events = []
        wanted: set[int] = set(days)
        for pending in candidates:
            if pending.t_us > frontier:
                break
            ctx = self.state.context_for(pending.event, self.windows)
            ctx = self._cap(ctx)
            events.append(EventRead(self.seen.get(pending.event.event_id), ctx))
            if isinstance(ctx, VoteContext) and ctx.milestone is not None:
                day = ctx.milestone.opens_us // DAY_US - 1
                if day not in cached_days:
                    wanted.add(day)
        bandit = {day: self._bandit_counts(day) for day in sorted(wanted)}
        return BatchReads(frontier, self.processed_max, events, bandit)

    def _cap(self, ctx: object) -> object:
        """Keep the newest ``max_members`` of each windowed log, as the Redis read does
        (a project's pledges and a milestone's votes are read in full, as prefixes)."""
        n = self.max_members
        if isinstance(ctx, PledgeContext):
            ctx.backer_pledges = ctx.backer_pledges[-n:]
            ctx.wallet_pledges = ctx.wallet_pledges[-n:]
            ctx.milestones = ctx.milestones[-n:]
        elif isinstance(ctx, VoteContext | ResolutionContext):
            ctx.resolutions = ctx.resolutions[-n:]
            if isinstance(ctx, ResolutionContext):
                ctx.milestones = ctx.milestones[-n:]
        return ctx

    def _bandit_counts(self, day: int) -> dict[str, tuple[int, int]]:
        lo = bisect.bisect_left(self.outcomes, ((day - self.bandit.window_days) * DAY_US,))
        hi = bisect.bisect_left(self.outcomes, (day * DAY_US,))
        counts: dict[str, list[int]] = {}
        for _, milestone_id, approved in self.outcomes[lo:hi]:
            arm = self.arms.get(milestone_id)
            if arm is not None:
                c = counts.setdefault(arm, [0, 0])
                c[0 if approved else 1] += 1
        return {arm: (c[0], c[1]) for arm, c in counts.items()}

    async def write(
        self,
        writes: Writes,
        frontiers: Mapping[str, int],
        processed_max: int,
        positions: Mapping[str, int],
        labels_key: str = "",
    ) -> int:
        """Apply a decided batch; returns the label counter."""
        fresh = {eid for eid, _, _ in writes.seen if eid not in self.seen}
        for event_id, _, pos in writes.seen:
            self.seen.setdefault(event_id, pos)
        for fx in writes.effects:
            if fx.event_id not in fresh:
                continue  # a retried write: already applied
            self.state.apply_effects(fx)
            if fx.resolution is not None:
                _, r = fx.resolution
                bisect.insort(self.outcomes, (r.t_us, r.milestone_id, r.approved))
        for milestone_id, arm in writes.arms.items():
            self.arms.setdefault(milestone_id, arm)
        self.frontier.update(frontiers)
        self.processed_max = max(self.processed_max, processed_max)
        self.pos.update(positions)
        if labels_key and writes.labels:
            self.counters[labels_key] = self.counters.get(labels_key, 0) + writes.labels
            return self.counters[labels_key]
        return 0
