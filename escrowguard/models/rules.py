"""The detection rules, as pure functions over feature values and thresholds.

Each rule returns the analyst-facing reasons when it fires and ``None`` when it does not, so
"did it fire" and "why" can never disagree. Thresholds come from ``settings.thresholds``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from escrowguard.models.records import MilestoneRef, ResolutionRecord
from escrowguard.outputs import AlertReason
from escrowguard.settings import ThresholdSettings

Route = Literal["auto_approve", "manual_review"]


def wash_trading(
    f: Mapping[str, float], source_wallet: str, creator_wallet: str
) -> list[AlertReason] | None:
    """The creator funding their own project: the pledge comes from a creator wallet.

    >>> wash_trading({"source_is_creator_wallet": 1.0, "source_is_creator_other_wallet": 0.0},
    ...              "w9", "w9")[0].feature
    'source_is_creator_wallet'
    """
    reasons = []
    if f["source_is_creator_wallet"] >= 1.0:
        reasons.append(
            AlertReason(
                "source_is_creator_wallet",
                source_wallet,
                creator_wallet,
                "the pledge was paid from the project's own creator wallet",
            )
        )
    if f["source_is_creator_other_wallet"] >= 1.0:
        reasons.append(
            AlertReason(
                "source_is_creator_other_wallet",
                source_wallet,
                creator_wallet,
                "the pledge was paid from a wallet the creator used on an earlier project",
            )
        )
    return reasons or None


def sybil_vote(f: Mapping[str, float], th: ThresholdSettings) -> list[AlertReason] | None:
    """A milestone vote swayed by few hands: weight concentrated in few voters, or many
    voters funded from one shared wallet voting alike."""
    reasons = []
    if (
        f["votes"] >= th.sybil_min_votes
        and f["weight_hhi"] > th.sybil_max_hhi
        and f["late_weight_share"] >= th.sybil_min_late_weight_share
    ):
        reasons.append(
            AlertReason(
                "weight_hhi",
                round(f["weight_hhi"], 4),
                th.sybil_max_hhi,
                f"vote weight is concentrated: Herfindahl index {f['weight_hhi']:.2f} over "
                f"{int(f['unique_voters'])} voters (top 3 hold {f['top3_weight_share']:.0%})",
            )
        )
        reasons.append(
            AlertReason(
                "late_weight_share",
                round(f["late_weight_share"], 4),
                th.sybil_min_late_weight_share,
                f"{f['late_weight_share']:.0%} of the vote weight belongs to backers who "
                "first pledged in the campaign's last 48 hours",
            )
        )
    if (
        f["largest_shared_wallet_group"] >= th.sybil_min_shared_wallet_voters
        and f["shared_wallet_voter_share"] >= th.sybil_max_shared_wallet_share
        and f["largest_group_agreement"] >= 0.9
    ):
        reasons.append(
            AlertReason(
                "shared_wallet_voter_share",
                round(f["shared_wallet_voter_share"], 4),
                th.sybil_max_shared_wallet_share,
                f"{int(f['largest_shared_wallet_group'])} voters were funded from one shared "
                f"wallet and voted alike ({f['largest_group_agreement']:.0%} agreement)",
            )
        )
    return reasons or None


def exit_scam(
    funding_ratio: float,
    resolutions: Sequence[ResolutionRecord],
    th: ThresholdSettings,
) -> list[AlertReason] | None:
    """A well-funded project whose milestones keep getting low approval after its creator
    was paid once: the last ``exit_scam_min_low_milestones`` resolutions are all below
    ``exit_scam_low_approval`` and an approved milestone came before them.

    ``resolutions`` are the project's resolved milestones so far in time order, the
    triggering one included.
    """
    n = th.exit_scam_min_low_milestones
    if funding_ratio < th.exit_scam_min_funding_ratio or len(resolutions) <= n:
        return None
    streak = resolutions[-n:]
    if any(r.approval_rate >= th.exit_scam_low_approval for r in streak):
        return None
    if not any(r.approved for r in resolutions[:-n]):
        return None
    rates = ", ".join(f"{r.approval_rate:.0%}" for r in streak)
    return [
        AlertReason(
            "project_funding_ratio",
            round(funding_ratio, 4),
            th.exit_scam_min_funding_ratio,
            f"the project raised {funding_ratio:.0%} of its goal",
        ),
        AlertReason(
            "low_approval_streak",
            n,
            th.exit_scam_low_approval,
            f"after an approved milestone, the last {n} milestones resolved below "
            f"{th.exit_scam_low_approval:.0%} approval ({rates})",
        ),
    ]


def pending_milestones(
    milestones: Sequence[MilestoneRef], resolutions: Sequence[ResolutionRecord]
) -> list[MilestoneRef]:
    """Milestones not resolved yet, in index order."""
    resolved = {r.milestone_id for r in resolutions}
    return sorted(
        (m for m in milestones if m.milestone_id not in resolved),
        key=lambda m: (m.index, m.milestone_id),
    )


def route(risk: float, th: ThresholdSettings) -> Route:
    """Milestone decision route: auto-approve a low-risk payout, review the rest."""
    return "auto_approve" if risk < th.risk_auto_approve_below else "manual_review"


def severity_for_risk(score: float, threshold: float) -> Literal["medium", "high", "critical"]:
    """Severity of a model-score alert by how far past its threshold the score is."""
    margin = (score - threshold) / max(1.0 - threshold, 1e-9)
    if margin >= 0.6:
        return "critical"
    return "high" if margin >= 0.25 else "medium"
