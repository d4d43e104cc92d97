"""Stream-level checks: does an event make sense given what happened before it?

The wire contract (``events.decode``) checks one message alone; these checks need history:
a pledge to a project that does not exist (yet), a vote from someone who never backed the
project, a vote outside its window. Each returns a ``Reason`` or None, from the event's
as-of context only, so the verdict is the same whatever order messages arrived in.
"""

from __future__ import annotations

from escrowguard.events import (
    AnyEvent,
    BackerRegistered,
    MilestoneCreated,
    MilestoneResolved,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
)
from escrowguard.models.features import PledgeContext, ResolutionContext, VoteContext
from escrowguard.models.records import BackerRef, MilestoneRef, ProjectRef
from escrowguard.reasons import Reason


def is_earlier(ref: BackerRef | ProjectRef | MilestoneRef, t_us: int, event_id: str) -> bool:
    """Whether a stored reference was created before an event (ties broken by event id)."""
    return (ref.t_us, ref.event_id) < (t_us, event_id)


def check_registration(ev: BackerRegistered, existing: BackerRef | None) -> Reason | None:
    """A backer id is registered once."""
    if existing is not None and is_earlier(existing, ev.occurred_us, ev.event_id):
        return Reason.ALREADY_EXISTS
    return None


def check_project(ev: ProjectCreated, existing: ProjectRef | None) -> Reason | None:
    """A project id is created once."""
    if existing is not None and is_earlier(existing, ev.occurred_us, ev.event_id):
        return Reason.ALREADY_EXISTS
    return None


def check_milestone(
    ev: MilestoneCreated, project: ProjectRef | None, existing: MilestoneRef | None
) -> Reason | None:
    """A milestone belongs to a project created before it, and is created once."""
    if project is None:
        return Reason.UNKNOWN_PROJECT
    if existing is not None and is_earlier(existing, ev.occurred_us, ev.event_id):
        return Reason.ALREADY_EXISTS
    return None


def check_pledge(ev: PledgeCreated, ctx: PledgeContext) -> Reason | None:
    """A pledge needs an existing project with an open campaign and a registered backer."""
    if ctx.project is None:
        return Reason.UNKNOWN_PROJECT
    if ctx.backer is None:
        return Reason.UNKNOWN_BACKER
    if ev.occurred_us >= ctx.project.deadline_us:
        return Reason.CAMPAIGN_CLOSED
    return None


def check_vote(ev: VoteCast, ctx: VoteContext) -> Reason | None:
    """A vote needs the milestone (of that project), an open window and a real backer."""
    m = ctx.milestone
    if m is None or m.project_id != ev.project_id:
        return Reason.UNKNOWN_MILESTONE
    if ctx.project is None:
        return Reason.UNKNOWN_PROJECT
    if not m.opens_us <= ev.occurred_us <= m.closes_us:
        return Reason.VOTING_CLOSED
    if not any(p.backer_id == ev.backer_id for p in ctx.project_pledges):
        return Reason.NOT_A_BACKER
    return None


def check_resolution(ev: MilestoneResolved, ctx: ResolutionContext) -> Reason | None:
    """A resolution names a known milestone of that project, resolved once."""
    m = ctx.milestone
    if m is None or m.project_id != ev.project_id:
        return Reason.UNKNOWN_MILESTONE
    if any(r.milestone_id == ev.milestone_id for r in ctx.resolutions):
        return Reason.ALREADY_EXISTS
    return None


def check_event(event: AnyEvent, ctx: object) -> Reason | None:
    """Dispatch to the check for the event's type; ``ctx`` as from ``context_for``."""
    if isinstance(event, PledgeCreated):
        return check_pledge(event, ctx)  # type: ignore[arg-type]
    if isinstance(event, VoteCast):
        return check_vote(event, ctx)  # type: ignore[arg-type]
    if isinstance(event, MilestoneResolved):
        return check_resolution(event, ctx)  # type: ignore[arg-type]
    if isinstance(event, BackerRegistered):
        return check_registration(event, ctx)  # type: ignore[arg-type]
    if isinstance(event, ProjectCreated):
        return check_project(event, ctx)  # type: ignore[arg-type]
    assert isinstance(event, MilestoneCreated) and isinstance(ctx, tuple)
    project: ProjectRef | None = ctx[0]
    existing: MilestoneRef | None = ctx[1]
    return check_milestone(event, project, existing)
