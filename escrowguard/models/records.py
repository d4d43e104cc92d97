"""What the feature store keeps about each entity, and the as-of views features are read from.

Every record carries its event time (``t_us``) and ``event_id``. The store holds, per entity,
reference data (written once) and event logs (appended, keyed by event id). A *view* is what
an event is allowed to see: the state as of that event's time, excluding the event itself and
everything at or after its timestamp. The same view types come from the in-memory state
(offline training, unit tests) and from Redis (streaming), so one set of feature functions
serves both.

Records are encoded as ``\\x1f``-separated strings for Redis members: ids may contain any
character except control characters (the wire contract forbids those), so the unit separator
cannot collide.
"""

from __future__ import annotations

from typing import Final

import msgspec

SEP: Final = "\x1f"  # between the fields of a record (ASCII unit separator)
RS: Final = "\x1e"  # between the records of a log read (ASCII record separator)


class BackerRef(msgspec.Struct, frozen=True, gc=False):
    """A registered backer account."""

    t_us: int
    event_id: str
    backer_id: str
    wallet: str


class ProjectRef(msgspec.Struct, frozen=True, gc=False):
    """A project's campaign as created."""

    t_us: int
    event_id: str
    project_id: str
    creator_id: str
    creator_wallet: str
    reputation: float
    goal_cents: int
    deadline_us: int


class MilestoneRef(msgspec.Struct, frozen=True, gc=False):
    """A milestone as planned: payout and voting window."""

    t_us: int
    event_id: str
    milestone_id: str
    project_id: str
    index: int
    funding_cents: int
    opens_us: int
    closes_us: int


class PledgeRecord(msgspec.Struct, frozen=True, gc=False):
    """One pledge, as kept in the backer's, the project's and the source wallet's logs."""

    t_us: int
    event_id: str
    backer_id: str
    project_id: str
    amount_cents: int
    source_wallet: str
    voting_power: float


class VoteRecord(msgspec.Struct, frozen=True, gc=False):
    """One vote on a milestone."""

    t_us: int
    event_id: str
    backer_id: str
    approve: bool
    weight: float


class ResolutionRecord(msgspec.Struct, frozen=True, gc=False):
    """A milestone's final vote outcome (the label)."""

    t_us: int
    event_id: str
    milestone_id: str
    approval_rate: float
    approved: bool


# --- member encoding (Redis) ------------------------------------------------------------


def encode_pledge(r: PledgeRecord) -> str:
    """Redis member text of a pledge record (its score is ``t_us``)."""
    return SEP.join(
        (
            r.event_id,
            r.backer_id,
            r.project_id,
            str(r.amount_cents),
            r.source_wallet,
            repr(r.voting_power),
        )
    )


def parse_pledges(log: str) -> list[PledgeRecord]:
    """Pledge records from a log text: entries ``score<US>member`` joined by ``<RS>``."""
    out = []
    for entry in log.split(RS) if log else ():
        t, eid, backer, project, cents, wallet, power = entry.split(SEP)
        out.append(PledgeRecord(int(t), eid, backer, project, int(cents), wallet, float(power)))
    return out


def encode_vote(r: VoteRecord) -> str:
    """Redis member text of a vote record."""
    return SEP.join((r.event_id, r.backer_id, "1" if r.approve else "0", repr(r.weight)))


def parse_votes(log: str) -> list[VoteRecord]:
    """Vote records from a log text (see ``parse_pledges``)."""
    out = []
    for entry in log.split(RS) if log else ():
        t, eid, backer, approve, weight = entry.split(SEP)
        out.append(VoteRecord(int(t), eid, backer, approve == "1", float(weight)))
    return out


def encode_resolution(r: ResolutionRecord) -> str:
    """Redis member text of a resolution record."""
    return SEP.join((r.event_id, r.milestone_id, repr(r.approval_rate), "1" if r.approved else "0"))


def parse_resolutions(log: str) -> list[ResolutionRecord]:
    """Resolution records from a log text (see ``parse_pledges``)."""
    out = []
    for entry in log.split(RS) if log else ():
        t, eid, milestone, rate, approved = entry.split(SEP)
        out.append(ResolutionRecord(int(t), eid, milestone, float(rate), approved == "1"))
    return out


def encode_milestone(r: MilestoneRef) -> str:
    """Redis member text of a milestone reference (kept in the project's milestone log)."""
    return SEP.join(
        (
            r.event_id,
            r.milestone_id,
            r.project_id,
            str(r.index),
            str(r.funding_cents),
            str(r.opens_us),
            str(r.closes_us),
        )
    )


def parse_milestones(log: str) -> list[MilestoneRef]:
    """Milestone references from a log text (see ``parse_pledges``)."""
    return [_milestone(entry.split(SEP)) for entry in log.split(RS)] if log else []


def _milestone(fields: list[str]) -> MilestoneRef:
    t, eid, mid, pid, index, cents, opens, closes = fields
    return MilestoneRef(int(t), eid, mid, pid, int(index), int(cents), int(opens), int(closes))


def parse_wallet_creators(log: str) -> dict[str, int]:
    """creator_id -> first use, from the log text of a wallet's creators."""
    out = {}
    for entry in log.split(RS) if log else ():
        t, creator = entry.split(SEP)
        out[creator] = int(t)
    return out


def encode_project(r: ProjectRef) -> str:
    """Stored text of a project reference."""
    return SEP.join(
        (
            str(r.t_us),
            r.event_id,
            r.project_id,
            r.creator_id,
            r.creator_wallet,
            repr(r.reputation),
            str(r.goal_cents),
            str(r.deadline_us),
        )
    )


def decode_project(text: str) -> ProjectRef:
    """Inverse of ``encode_project``."""
    t, eid, pid, cid, wallet, rep, goal, deadline = text.split(SEP)
    return ProjectRef(int(t), eid, pid, cid, wallet, float(rep), int(goal), int(deadline))


def encode_backer(r: BackerRef) -> str:
    """Stored text of a backer reference."""
    return SEP.join((str(r.t_us), r.event_id, r.backer_id, r.wallet))


def decode_backer(text: str) -> BackerRef:
    """Inverse of ``encode_backer``."""
    t, eid, bid, wallet = text.split(SEP)
    return BackerRef(int(t), eid, bid, wallet)


def encode_milestone_ref(r: MilestoneRef) -> str:
    """Stored text of a milestone reference (its own key)."""
    return str(r.t_us) + SEP + encode_milestone(r)


def decode_milestone_ref(text: str) -> MilestoneRef:
    """Inverse of ``encode_milestone_ref``."""
    return _milestone(text.split(SEP))
