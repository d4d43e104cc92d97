"""In-memory entity state with as-of reads: the offline twin of the Redis feature store.

``effects_of(event)`` says what an event adds to the state (one definition, used by this
module and by ``stream_app.store``). ``MemoryState`` applies effects in any order and answers
"what could an event at time t see?" by reading only records strictly before t, so the
result never depends on arrival order. Training walks a history through it; unit tests and
the stream pipeline's in-batch overlay use it too.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TypeVar

import msgspec

from escrowguard.events import (
    AnyEvent,
    BackerRegistered,
    MilestoneCreated,
    MilestoneResolved,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
    to_us,
)
from escrowguard.models.features import (
    US,
    FeatureWindows,
    PledgeContext,
    ResolutionContext,
    VoteContext,
)
from escrowguard.models.records import (
    BackerRef,
    MilestoneRef,
    PledgeRecord,
    ProjectRef,
    ResolutionRecord,
    VoteRecord,
)

R = TypeVar("R", PledgeRecord, VoteRecord, ResolutionRecord, MilestoneRef)


class Effects(msgspec.Struct, frozen=True, gc=False):
    """The records one event adds to the state (exactly one field is set)."""

    backer: BackerRef | None = None
    project: ProjectRef | None = None
    milestone: MilestoneRef | None = None
    pledge: PledgeRecord | None = None
    vote: tuple[str, VoteRecord] | None = None  # (milestone_id, vote)
    resolution: tuple[str, ResolutionRecord] | None = None  # (project_id, resolution)

    @property
    def event_id(self) -> str:
        """The id of the event these effects came from."""
        for record in (self.backer, self.project, self.milestone, self.pledge):
            if record is not None:
                return record.event_id
        pair = self.vote or self.resolution
        assert pair is not None
        return pair[1].event_id


def effects_of(event: AnyEvent) -> Effects:
    """What ``event`` adds to the entity state."""
    t = event.occurred_us
    eid = event.event_id
    if isinstance(event, PledgeCreated):
        return Effects(
            pledge=PledgeRecord(
                t,
                eid,
                event.backer_id,
                event.project_id,
                event.amount_cents,
                event.source_wallet,
                event.voting_power,
            )
        )
    if isinstance(event, VoteCast):
        return Effects(
            vote=(
                event.milestone_id,
                VoteRecord(
                    t,
                    eid,
                    event.backer_id,
                    event.approve,
                    event.vote_weight,
                ),
            )
        )
    if isinstance(event, BackerRegistered):
        return Effects(backer=BackerRef(t, eid, event.backer_id, event.wallet))
    if isinstance(event, ProjectCreated):
        return Effects(
            project=ProjectRef(
                t,
                eid,
                event.project_id,
                event.creator_id,
                event.creator_wallet,
                event.creator_reputation,
                event.funding_goal_cents,
                to_us(event.deadline),
            )
        )
    if isinstance(event, MilestoneCreated):
        return Effects(
            milestone=MilestoneRef(
                t,
                eid,
                event.milestone_id,
                event.project_id,
                event.index,
                event.funding_amount_cents,
                to_us(event.voting_opens_at),
                to_us(event.voting_closes_at),
            )
        )
    if isinstance(event, MilestoneResolved):
        return Effects(
            resolution=(
                event.project_id,
                ResolutionRecord(
                    t,
                    eid,
                    event.milestone_id,
                    event.approval_rate,
                    event.approved,
                ),
            )
        )
    raise TypeError(f"not an event: {type(event).__name__}")  # pragma: no cover


def _before(records: Sequence[R], t_us: int, since_us: int | None = None) -> list[R]:
    """Records with since_us <= t < t_us (records sorted by t_us)."""
    hi = bisect.bisect_left(records, t_us, key=lambda r: r.t_us)
    lo = 0 if since_us is None else bisect.bisect_left(records, since_us, key=lambda r: r.t_us)
    return list(records[lo:hi])


def _insert(records: list[R], record: R) -> None:
    if not records or (records[-1].t_us, records[-1].event_id) <= (record.t_us, record.event_id):
        records.append(record)
    else:
        bisect.insort(records, record, key=lambda r: (r.t_us, r.event_id))


Ref = TypeVar("Ref", BackerRef, ProjectRef, MilestoneRef)


def _keep_earliest(refs: dict[str, Ref], key: str, ref: Ref) -> None:
    """Reference data is written once; if two events claim one id, the earliest wins."""
    current = refs.get(key)
    if current is None or (ref.t_us, ref.event_id) < (current.t_us, current.event_id):
        refs[key] = ref


class MemoryState:
    """Entity state in plain Python containers; as-of reads; idempotent by event id."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.backers: dict[str, BackerRef] = {}
        self.projects: dict[str, ProjectRef] = {}
        self.milestones: dict[str, MilestoneRef] = {}
        self.project_milestones: dict[str, list[MilestoneRef]] = defaultdict(list)
        self.wallet_creators: dict[str, dict[str, int]] = defaultdict(dict)
        self.backer_pledges: dict[str, list[PledgeRecord]] = defaultdict(list)
        self.project_pledges: dict[str, list[PledgeRecord]] = defaultdict(list)
        self.wallet_pledges: dict[str, list[PledgeRecord]] = defaultdict(list)
        self.milestone_votes: dict[str, list[VoteRecord]] = defaultdict(list)
        self.project_resolutions: dict[str, list[ResolutionRecord]] = defaultdict(list)

    # --- writes ---

    def apply(self, event: AnyEvent) -> bool:
        """Add an event's effects; False (and no change) if its id was applied before."""
        if event.event_id in self.seen:
            return False
        self.seen.add(event.event_id)
        self.apply_effects(effects_of(event))
        return True

    def apply_effects(self, fx: Effects) -> None:
        """Add records (no de-duplication: callers decide)."""
        if fx.pledge is not None:
            p = fx.pledge
            _insert(self.backer_pledges[p.backer_id], p)
            _insert(self.project_pledges[p.project_id], p)
            _insert(self.wallet_pledges[p.source_wallet], p)
        elif fx.vote is not None:
            milestone_id, v = fx.vote
            _insert(self.milestone_votes[milestone_id], v)
        elif fx.backer is not None:
            _keep_earliest(self.backers, fx.backer.backer_id, fx.backer)
        elif fx.project is not None:
            pr = fx.project
            _keep_earliest(self.projects, pr.project_id, pr)
            creators = self.wallet_creators[pr.creator_wallet]
            creators[pr.creator_id] = min(creators.get(pr.creator_id, pr.t_us), pr.t_us)
        elif fx.milestone is not None:
            m = fx.milestone
            _keep_earliest(self.milestones, m.milestone_id, m)
            _insert(self.project_milestones[m.project_id], m)
        elif fx.resolution is not None:
            project_id, r = fx.resolution
            _insert(self.project_resolutions[project_id], r)

    def apply_all(self, events: Iterable[AnyEvent]) -> None:
        """Apply many events (any order gives the same state)."""
        for event in events:
            self.apply(event)

    # --- as-of reads ---

    def backer_as_of(self, backer_id: str, t_us: int) -> BackerRef | None:
        """The backer's registration if it happened before ``t_us``."""
        ref = self.backers.get(backer_id)
        return ref if ref is not None and ref.t_us < t_us else None

    def project_as_of(self, project_id: str, t_us: int) -> ProjectRef | None:
        """The project's creation record if it happened before ``t_us``."""
        ref = self.projects.get(project_id)
        return ref if ref is not None and ref.t_us < t_us else None

    def milestone_as_of(self, milestone_id: str, t_us: int) -> MilestoneRef | None:
        """The milestone's creation record if it happened before ``t_us``."""
        ref = self.milestones.get(milestone_id)
        return ref if ref is not None and ref.t_us < t_us else None

    def pledge_context(
        self,
        t_us: int,
        backer_id: str,
        project_id: str,
        source_wallet: str,
        windows: FeatureWindows,
    ) -> PledgeContext:
        """Everything a pledge at ``t_us`` may see."""
        project = self.project_as_of(project_id, t_us)
        creators = {
            c: first
            for c, first in self.wallet_creators.get(source_wallet, {}).items()
            if first < t_us
        }
        return PledgeContext(
            backer=self.backer_as_of(backer_id, t_us),
            backer_pledges=_before(
                self.backer_pledges.get(backer_id, ()),
                t_us,
                t_us - windows.backer_history_s * US,
            ),
            project=project,
            project_pledges=_before(self.project_pledges.get(project_id, ()), t_us),
            wallet_creators=creators,
            wallet_pledges=_before(
                self.wallet_pledges.get(source_wallet, ()), t_us, t_us - windows.wallet_s * US
            ),
            milestones=_before(self.project_milestones.get(project_id, ()), t_us),
        )

    def vote_context(self, t_us: int, project_id: str, milestone_id: str) -> VoteContext:
        """Everything a vote at ``t_us`` may see."""
        return VoteContext(
            milestone=self.milestone_as_of(milestone_id, t_us),
            project=self.project_as_of(project_id, t_us),
            project_pledges=_before(self.project_pledges.get(project_id, ()), t_us),
            votes=_before(self.milestone_votes.get(milestone_id, ()), t_us),
            resolutions=_before(self.project_resolutions.get(project_id, ()), t_us),
        )

    def context_for(self, event: AnyEvent, windows: FeatureWindows) -> object:
        """The as-of context ``checks.check_event`` and the feature functions take."""
        t = event.occurred_us
        if isinstance(event, PledgeCreated):
            return self.pledge_context(
                t, event.backer_id, event.project_id, event.source_wallet, windows
            )
        if isinstance(event, VoteCast):
            return self.vote_context(t, event.project_id, event.milestone_id)
        if isinstance(event, MilestoneResolved):
            return self.resolution_context(t, event.project_id, event.milestone_id)
        if isinstance(event, BackerRegistered):
            return self.backers.get(event.backer_id)
        if isinstance(event, ProjectCreated):
            return self.projects.get(event.project_id)
        return (self.project_as_of(event.project_id, t), self.milestones.get(event.milestone_id))

    def resolution_context(
        self, t_us: int, project_id: str, milestone_id: str
    ) -> ResolutionContext:
        """Everything a milestone resolution at ``t_us`` may see."""
        return ResolutionContext(
            milestone=self.milestone_as_of(milestone_id, t_us),
            project=self.project_as_of(project_id, t_us),
            project_pledges=_before(self.project_pledges.get(project_id, ()), t_us),
            votes=_before(self.milestone_votes.get(milestone_id, ()), t_us),
            resolutions=_before(self.project_resolutions.get(project_id, ()), t_us),
            milestones=_before(self.project_milestones.get(project_id, ()), t_us),
        )


# --- merging two partial views (the stream pipeline's in-batch overlay) ------------------


def _merge_records(a: list[R], b: list[R]) -> list[R]:
    if not b:
        return a
    if not a:
        return b
    ids = {r.event_id for r in a}
    merged = a + [r for r in b if r.event_id not in ids]
    merged.sort(key=lambda r: (r.t_us, r.event_id))
    return merged


def _earliest(a: Ref | None, b: Ref | None) -> Ref | None:
    if a is None or b is None:
        return a or b
    return a if (a.t_us, a.event_id) <= (b.t_us, b.event_id) else b


def with_overlay(
    stored: object, overlay: MemoryState, event: AnyEvent, windows: FeatureWindows
) -> object:
    """The context of ``event`` over stored state plus not-yet-stored ``overlay`` events.

    Every read is keyed by a field of the event itself (never by another read's result),
    so the two partial contexts merge without a second lookup.
    """
    return merge_contexts(stored, overlay.context_for(event, windows))


def merge_contexts(a: object, b: object) -> object:
    """Union of two as-of contexts of the same event (e.g. stored state + this batch)."""
    if isinstance(a, PledgeContext) and isinstance(b, PledgeContext):
        creators = dict(a.wallet_creators)
        for c, first in b.wallet_creators.items():
            creators[c] = min(creators.get(c, first), first)
        return PledgeContext(
            backer=_earliest(a.backer, b.backer),
            backer_pledges=_merge_records(a.backer_pledges, b.backer_pledges),
            project=_earliest(a.project, b.project),
            project_pledges=_merge_records(a.project_pledges, b.project_pledges),
            wallet_creators=creators,
            wallet_pledges=_merge_records(a.wallet_pledges, b.wallet_pledges),
            milestones=_merge_records(a.milestones, b.milestones),
        )
    if isinstance(a, VoteContext) and isinstance(b, VoteContext):
        return VoteContext(
            milestone=_earliest(a.milestone, b.milestone),
            project=_earliest(a.project, b.project),
            project_pledges=_merge_records(a.project_pledges, b.project_pledges),
            votes=_merge_records(a.votes, b.votes),
            resolutions=_merge_records(a.resolutions, b.resolutions),
        )
    if isinstance(a, ResolutionContext) and isinstance(b, ResolutionContext):
        return ResolutionContext(
            milestone=_earliest(a.milestone, b.milestone),
            project=_earliest(a.project, b.project),
            project_pledges=_merge_records(a.project_pledges, b.project_pledges),
            votes=_merge_records(a.votes, b.votes),
            resolutions=_merge_records(a.resolutions, b.resolutions),
            milestones=_merge_records(a.milestones, b.milestones),
        )
    if isinstance(a, tuple) and isinstance(b, tuple):
        return (_earliest(a[0], b[0]), _earliest(a[1], b[1]))
    return _earliest(a, b)  # type: ignore[type-var]
