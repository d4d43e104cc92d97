"""Feature definitions, once, for training (offline) and scoring (streaming).

Each function turns one event plus its as-of *context* (the entity state visible to it:
everything strictly before its ``occurred_at``) into a vector of floats whose order is given
by the matching ``*_FEATURES`` tuple. Offline, ``models.history`` builds contexts from an
in-memory state while walking a history in time order; online, the Redis store returns the
same context types. Neither path can see the future, so there is no train/serve skew and no
leakage by construction.

Ratios are log ratios (0 = "like before"), so a whale and a small backer are compared with
their own history, and missing history is the neutral value.
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Final

import msgspec

from escrowguard.models.records import (
    BackerRef,
    MilestoneRef,
    PledgeRecord,
    ProjectRef,
    ResolutionRecord,
    VoteRecord,
)

US: Final = 1_000_000
DAY_US: Final = 86_400 * US


class FeatureWindows(msgspec.Struct, frozen=True):
    """Event-time windows the features use (from settings; recorded in the model bundle)."""

    backer_history_s: int = 30 * 86_400
    backer_burst_s: int = 3_600
    backer_day_s: int = 86_400
    wallet_s: int = 7 * 86_400
    late_pledge_s: int = 2 * 86_400
    approval_target: float = 0.7

    @classmethod
    def from_settings(cls, features: object, approval_target: float) -> FeatureWindows:
        """Build from ``settings.features`` (duck-typed to keep models free of settings)."""
        return cls(
            backer_history_s=features.backer_history_window_s,  # type: ignore[attr-defined]
            backer_burst_s=features.backer_burst_window_s,  # type: ignore[attr-defined]
            backer_day_s=features.backer_day_window_s,  # type: ignore[attr-defined]
            wallet_s=features.wallet_window_s,  # type: ignore[attr-defined]
            late_pledge_s=features.late_pledge_window_s,  # type: ignore[attr-defined]
            approval_target=approval_target,
        )


# --- contexts: what an event may see ----------------------------------------------------


class PledgeContext(msgspec.Struct, gc=False):
    """As-of state for a pledge: its backer, its project, and its source wallet's history
    (the pledges it funded; the creators who used it as a creator wallet)."""

    backer: BackerRef | None
    backer_pledges: list[PledgeRecord]  # the backer's pledges in the history window
    project: ProjectRef | None
    project_pledges: list[PledgeRecord]  # all of the project's pledges so far
    wallet_creators: dict[str, int]  # creators who used the source wallet so far -> first use
    wallet_pledges: list[PledgeRecord]  # pledges funded by the source wallet, wallet window
    milestones: list[MilestoneRef]  # the project's milestones created so far


class VoteContext(msgspec.Struct, gc=False):
    """As-of state for a vote: the milestone, its votes so far, the project and its history."""

    milestone: MilestoneRef | None
    project: ProjectRef | None
    project_pledges: list[PledgeRecord]
    votes: list[VoteRecord]  # earlier votes on this milestone
    resolutions: list[ResolutionRecord]  # earlier resolved milestones of the project


class ResolutionContext(msgspec.Struct, gc=False):
    """As-of state for a milestone resolution."""

    milestone: MilestoneRef | None
    project: ProjectRef | None
    project_pledges: list[PledgeRecord]
    votes: list[VoteRecord]  # every vote on this milestone
    resolutions: list[ResolutionRecord]  # earlier resolutions of the project's milestones
    milestones: list[MilestoneRef]  # the project's milestones created so far


# --- pledges ----------------------------------------------------------------------------

PLEDGE_FEATURES: Final = (
    "log_amount",
    "backer_prior_pledges",
    "amount_vs_backer_mean",
    "amount_vs_backer_max",
    "amount_vs_project_mean",
    "backer_pledges_1h",
    "backer_pledges_24h",
    "log_since_prev_pledge_s",
    "log_account_age_s",
    "project_funding_ratio",
    "campaign_fraction",
    "source_is_creator_wallet",
    "source_is_creator_other_wallet",
    "source_not_own_wallet",
    "wallet_backers",
)
#: Columns the pledge-anomaly model (IsolationForest) reads: behaviour, not identity rules.
ANOMALY_FEATURES: Final = (
    "log_amount",
    "backer_prior_pledges",
    "amount_vs_backer_mean",
    "amount_vs_backer_max",
    "amount_vs_project_mean",
    "backer_pledges_1h",
    "backer_pledges_24h",
    "log_since_prev_pledge_s",
    "log_account_age_s",
)


def pledge_features(
    t_us: int,
    amount_cents: int,
    backer_id: str,
    source_wallet: str,
    ctx: PledgeContext,
    windows: FeatureWindows,
) -> list[float]:
    """Feature vector of one pledge (order: ``PLEDGE_FEATURES``).

    >>> from escrowguard.models.records import BackerRef
    >>> ctx = PledgeContext(BackerRef(0, "e0", "b1", "w1"), [], None, [], {}, [], [])
    >>> v = pledge_features(3_600 * US, 10_000, "b1", "w1", ctx, FeatureWindows())
    >>> dict(zip(PLEDGE_FEATURES, v))["log_amount"] == math.log1p(100.0)
    True
    """
    amount = amount_cents / 100.0
    history = [p for p in ctx.backer_pledges if p.t_us >= t_us - windows.backer_history_s * US]
    if history:
        amounts = [p.amount_cents for p in history]
        vs_mean = math.log(amount_cents * len(amounts) / sum(amounts))
        vs_max = math.log(amount_cents / max(amounts))
        since_prev_s = (t_us - max(p.t_us for p in history)) / US
    else:
        vs_mean = vs_max = 0.0
        since_prev_s = float(windows.backer_history_s)
    burst = sum(1 for p in history if p.t_us >= t_us - windows.backer_burst_s * US)
    day = sum(1 for p in history if p.t_us >= t_us - windows.backer_day_s * US)
    project = ctx.project
    project_cents = [p.amount_cents for p in ctx.project_pledges]
    vs_project = (
        math.log(amount_cents * len(project_cents) / sum(project_cents)) if project_cents else 0.0
    )
    account_age_s = (t_us - ctx.backer.t_us) / US if ctx.backer else 0.0
    funding_ratio = sum(project_cents) / project.goal_cents if project else 0.0
    if project and project.deadline_us > project.t_us:
        campaign = (t_us - project.t_us) / (project.deadline_us - project.t_us)
    else:
        campaign = 0.0
    creator_wallet = project.creator_wallet if project else None
    own_wallet = ctx.backer.wallet if ctx.backer else source_wallet
    other_creator_wallet = (
        project is not None
        and source_wallet != creator_wallet
        and project.creator_id in ctx.wallet_creators
    )
    wallet_backers = {p.backer_id for p in ctx.wallet_pledges} | {backer_id}
    return [
        math.log1p(amount),
        float(len(history)),
        vs_mean,
        vs_max,
        vs_project,
        float(burst),
        float(day),
        math.log1p(max(since_prev_s, 0.0)),
        math.log1p(max(account_age_s, 0.0)),
        funding_ratio,
        min(max(campaign, 0.0), 1.0),
        1.0 if source_wallet == creator_wallet else 0.0,
        1.0 if other_creator_wallet else 0.0,
        1.0 if source_wallet != own_wallet else 0.0,
        float(len(wallet_backers)),
    ]


# --- milestone votes --------------------------------------------------------------------

VOTE_FEATURES: Final = (
    "votes",
    "log_weight",
    "approval_weighted",
    "approval_unweighted",
    "unique_voters",
    "weight_hhi",
    "top3_weight_share",
    "shared_wallet_voter_share",
    "largest_shared_wallet_group",
    "largest_group_agreement",
    "late_weight_share",
    "window_fraction",
    "project_funding_ratio",
    "creator_reputation",
    "milestone_index",
    "milestone_share_of_goal",
    "prior_resolved",
    "prior_low_approval",
    "prior_mean_approval",
)
#: The milestone-risk model (GradientBoosting) reads every vote-state feature.
RISK_FEATURES: Final = VOTE_FEATURES


def vote_state_features(
    t_us: int,
    votes: Sequence[VoteRecord],
    milestone: MilestoneRef,
    project: ProjectRef | None,
    project_pledges: Sequence[PledgeRecord],
    resolutions: Sequence[ResolutionRecord],
    windows: FeatureWindows,
) -> list[float]:
    """Feature vector of a milestone's vote state at ``t_us`` (order: ``VOTE_FEATURES``).

    ``votes`` are the votes cast so far, the triggering vote included; a backer's latest
    vote is the one that counts.
    """
    latest: dict[str, VoteRecord] = {}
    for v in votes:
        latest[v.backer_id] = v
    ballots = list(latest.values())
    total_weight = sum(v.weight for v in ballots)
    approve_weight = sum(v.weight for v in ballots if v.approve)
    n = len(ballots)
    weights = sorted((v.weight for v in ballots), reverse=True)
    if total_weight > 0:
        hhi = sum((w / total_weight) ** 2 for w in weights)
        top3 = sum(weights[:3]) / total_weight
        approval_w = approve_weight / total_weight
    else:
        hhi = 1.0 / n if n else 0.0
        top3 = 1.0 if n else 0.0
        approval_w = sum(v.approve for v in ballots) / n if n else 0.0
    index = index_pledges(project_pledges)
    share, largest, agreement = _shared_wallet_stats(ballots, index)
    late = _late_weight_share(ballots, index, project, windows.late_pledge_s)
    span = milestone.closes_us - milestone.opens_us
    window = (t_us - milestone.opens_us) / span if span > 0 else 1.0
    funded = index.total_cents
    goal = project.goal_cents if project else 0
    prior_low = sum(1 for r in resolutions if r.approval_rate < windows.approval_target)
    prior_mean = (
        sum(r.approval_rate for r in resolutions) / len(resolutions) if resolutions else 1.0
    )
    return [
        float(len(votes)),
        math.log1p(total_weight),
        approval_w,
        sum(v.approve for v in ballots) / n if n else 0.0,
        float(n),
        hhi,
        top3,
        share,
        float(largest),
        agreement,
        late,
        min(max(window, 0.0), 1.0),
        funded / goal if goal else 0.0,
        project.reputation if project else 0.0,
        float(milestone.index),
        milestone.funding_cents / goal if goal else 0.0,
        float(len(resolutions)),
        float(prior_low),
        prior_mean,
    ]


class PledgeIndex(msgspec.Struct, frozen=True, gc=False):
    """What vote features need from a project's pledges, computed once per pledge set."""

    total_cents: int
    first_pledge_us: dict[str, int]  # backer -> time of their first pledge to the project
    shared_wallets: tuple[tuple[str, frozenset[str]], ...]  # wallets funding >= 2 backers


_INDEX_CACHE: OrderedDict[tuple[str, int, str], PledgeIndex] = OrderedDict()
_INDEX_CACHE_SIZE: Final = 4096


def index_pledges(pledges: Sequence[PledgeRecord]) -> PledgeIndex:
    """Index a project's pledges (memoised: every vote of a milestone sees the same set).

    The cache key (project, count, last event id) names one as-of slice of one project's
    pledge log exactly: logs are sorted by (time, event id) and reads are prefixes (or the
    newest-N window of a prefix), so equal keys mean equal lists.
    """
    if not pledges:
        return PledgeIndex(0, {}, ())
    key = (pledges[0].project_id, len(pledges), pledges[-1].event_id)
    cached = _INDEX_CACHE.get(key)
    if cached is not None:
        _INDEX_CACHE.move_to_end(key)
        return cached
    first: dict[str, int] = {}
    backers_by_wallet: dict[str, set[str]] = defaultdict(set)
    total = 0
    for p in pledges:
        total += p.amount_cents
        if p.backer_id not in first or p.t_us < first[p.backer_id]:
            first[p.backer_id] = p.t_us
        backers_by_wallet[p.source_wallet].add(p.backer_id)
    shared = tuple(
        (wallet, frozenset(backers))
        for wallet, backers in sorted(backers_by_wallet.items())
        if len(backers) >= 2
    )
    index = PledgeIndex(total, first, shared)
    _INDEX_CACHE[key] = index
    if len(_INDEX_CACHE) > _INDEX_CACHE_SIZE:
        _INDEX_CACHE.popitem(last=False)
    return index


def _late_weight_share(
    ballots: Sequence[VoteRecord],
    index: PledgeIndex,
    project: ProjectRef | None,
    late_s: int,
) -> float:
    """Share of the vote weight held by voters who first backed the project only in the
    last ``late_s`` seconds of its campaign (voting power bought at the last minute)."""
    total = sum(v.weight for v in ballots)
    if project is None or total <= 0:
        return 0.0
    cutoff = project.deadline_us - late_s * US
    first = index.first_pledge_us
    late = sum(v.weight for v in ballots if first.get(v.backer_id, 0) >= cutoff)
    return late / total


def _shared_wallet_stats(
    ballots: Sequence[VoteRecord], index: PledgeIndex
) -> tuple[float, int, float]:
    """Share of voters funded from a wallet that funded several of the project's backers;
    the size of the largest such group of voters; and how alike that group voted."""
    voters = {v.backer_id: v.approve for v in ballots}
    if not voters:
        return 0.0, 0, 0.0
    shared_voters: set[str] = set()
    largest: list[str] = []
    for _, funded in index.shared_wallets:
        group = sorted(b for b in funded if b in voters)
        shared_voters.update(group)
        if len(group) > len(largest):
            largest = group
    if largest:
        approvals = sum(voters[b] for b in largest)
        agreement = max(approvals, len(largest) - approvals) / len(largest)
    else:
        agreement = 0.0
    return len(shared_voters) / len(voters), len(largest), agreement


# --- projects ---------------------------------------------------------------------------

PROJECT_FEATURES: Final = (
    "reputation_score",
    "funding_goal",
    "days_to_deadline",
    "pledge_count",
    "avg_pledge",
    "unique_backers",
    "milestone_count",
)
#: The project-success model (RandomForest) reads the report's table; funding_ratio is left
#: out on purpose (it made the report's model leak the label).
SUCCESS_FEATURES: Final = PROJECT_FEATURES


def project_features(
    observed_us: int,
    project: ProjectRef,
    pledges: Sequence[PledgeRecord],
    milestone_count: int,
) -> list[float]:
    """Feature vector of a project as of ``observed_us`` (order: ``PROJECT_FEATURES``).

    ``pledges`` must be the project's pledges strictly before ``observed_us``.
    """
    total = sum(p.amount_cents for p in pledges)
    return [
        project.reputation,
        project.goal_cents / 100.0,
        max(project.deadline_us - observed_us, 0) / DAY_US,
        float(len(pledges)),
        total / 100.0 / len(pledges) if pledges else 0.0,
        float(len({p.backer_id for p in pledges})),
        float(milestone_count),
    ]


def checkpoint_us(project: ProjectRef, fraction: float) -> int:
    """Event time at which a project's success is scored: ``fraction`` of its campaign.

    >>> checkpoint_us(ProjectRef(0, "e", "p", "c", "w", 5.0, 100, 10 * DAY_US), 0.5) // DAY_US
    5
    """
    return project.t_us + int((project.deadline_us - project.t_us) * fraction)
