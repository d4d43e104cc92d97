"""The report's platform analyses, wired to a trained history: Pareto concentration, the
success-badge A/B test sizing, the payout-release bandit's regret, and dynamic funding goals.

The pure building blocks live in ``pareto``, ``abtest``, ``bandit`` and ``goals``; this
module feeds them the history's figures and states every assumption it adds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from escrowguard.models.abtest import assign, badge, sample_size_two_proportions
from escrowguard.models.bandit import POLICIES, simulate_regret
from escrowguard.models.bundle import Bundle
from escrowguard.models.features import SUCCESS_FEATURES
from escrowguard.models.goals import GoalSuggestion, SuccessPredictor, suggest_goal
from escrowguard.models.pareto import pareto_curve, top_share
from escrowguard.models.state import MemoryState

#: Relative lift the success-badge experiment must detect (report 5.3).
AB_RELATIVE_LIFT: Final = 0.15
#: Bandit simulation: the arms' assumed approval rates are the history's approved share of
#: resolved milestones, shifted by these offsets (an assumption: the history has no arms).
BANDIT_RATE_OFFSETS: Final = (-0.05, 0.0, 0.05)
BANDIT_HORIZON: Final = 2_000
CURVE_POINTS: Final = 101
#: Example goal suggestions shown in the report: (reputation, campaign days).
GOAL_EXAMPLES: Final = ((2.0, 30.0), (5.0, 30.0), (8.0, 30.0), (8.0, 60.0))


def _downsample(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> dict[str, list]:
    """(x, y) interpolated on ``points`` evenly spaced x in [x0, x_last], rounded for JSON."""
    if x.size > points:
        grid = np.linspace(float(x[0]), float(x[-1]), points)
        y = np.interp(grid, x, y)
        x = grid
    return {"x": [round(float(v), 5) for v in x], "y": [round(float(v), 5) for v in y]}


def pareto_summary(state: MemoryState) -> dict[str, Any]:
    """Share of pledged money held by the top 20% of projects and of backers, and the curves."""
    by_project = [sum(p.amount_cents for p in ps) / 100 for ps in state.project_pledges.values()]
    by_backer: dict[str, int] = {}
    for pledges in state.project_pledges.values():
        for p in pledges:
            by_backer[p.backer_id] = by_backer.get(p.backer_id, 0) + p.amount_cents
    backer_dollars = [c / 100 for c in by_backer.values()]
    return {
        "top20_projects_share": round(top_share(by_project, 0.2), 6),
        "top20_backers_share": round(top_share(backer_dollars, 0.2), 6),
        "projects_curve": _downsample(*pareto_curve(by_project)),
        "backers_curve": _downsample(*pareto_curve(backer_dollars)),
    }


def ab_summary(
    funded: np.ndarray, project_ids: Sequence[str], success_proba: np.ndarray
) -> dict[str, Any]:
    """Sample size for the success-badge test at baseline = the history's funded share of
    finished projects and +15% relative lift (two-sided alpha 0.05, power 0.8), how the
    history's projects split between groups, and how many would earn the badge."""
    baseline = float(np.mean(funded)) if len(funded) else 0.0
    out: dict[str, Any] = {
        "baseline": round(baseline, 6),
        "relative_lift": AB_RELATIVE_LIFT,
        "alpha": 0.05,
        "power": 0.8,
    }
    try:
        out["sample_size_per_group"] = sample_size_two_proportions(baseline, AB_RELATIVE_LIFT)
    except ValueError as exc:  # baseline 0, or too high for a +15% lift
        out["sample_size_per_group"] = None
        out["note"] = str(exc)
    groups = [assign(pid) for pid in project_ids]
    out["treatment_share"] = round(groups.count("treatment") / max(len(groups), 1), 6)
    out["badge_share"] = round(
        float(np.mean([badge(float(p)) for p in success_proba])) if len(success_proba) else 0.0,
        6,
    )
    return out


def bandit_summary(arms: Sequence[str], approved_share: float, seed: int) -> dict[str, Any]:
    """Regret of Thompson sampling vs uniform and greedy arm choice on a seeded simulation
    whose arm rates are the history's approved share shifted by ``BANDIT_RATE_OFFSETS``."""
    offsets = list(BANDIT_RATE_OFFSETS) + [0.0] * max(len(arms) - len(BANDIT_RATE_OFFSETS), 0)
    rates = {
        arm: round(min(max(approved_share + off, 0.01), 0.99), 4)
        for arm, off in zip(arms, offsets, strict=False)
    }
    report = simulate_regret(rates, BANDIT_HORIZON, seed)
    steps = np.arange(1, BANDIT_HORIZON + 1, dtype=np.float64)
    return {
        "true_rates": rates,
        "horizon": BANDIT_HORIZON,
        "seed": seed,
        "best_arm": report.best_arm,
        "final_regret": {p: round(report.final_regret(p), 4) for p in POLICIES},
        "pulls": {p: dict(report.pulls[p]) for p in POLICIES},
        "curves": {p: _downsample(steps, report.cumulative_regret[p]) for p in POLICIES},
    }


def success_predictor(
    proba: Callable[[np.ndarray], np.ndarray],
    references: Mapping[str, Mapping[str, float]],
    checkpoint_fraction: float,
) -> SuccessPredictor:
    """``(reputation, campaign_days, goal) -> P(success)`` from a success model's ``proba``
    (rows in ``SUCCESS_FEATURES`` order -> probabilities). The model scores projects at its
    checkpoint, so it sees ``campaign_days * (1 - checkpoint_fraction)`` days to the
    deadline; every other feature is held at its training median (``references``)."""
    base = np.array(
        [float(references.get(name, {}).get("median", 0.0)) for name in SUCCESS_FEATURES]
    )
    rep, goal, days = (
        SUCCESS_FEATURES.index(n) for n in ("reputation_score", "funding_goal", "days_to_deadline")
    )

    def predict(reputation: float, campaign_days: float, goal_dollars: float) -> float:
        row = base.copy()
        row[rep] = reputation
        row[goal] = goal_dollars
        row[days] = campaign_days * (1.0 - checkpoint_fraction)
        p = float(proba(row.reshape(1, -1))[0])
        return min(max(p, 0.0), 1.0)

    return predict


def goal_examples(predict: SuccessPredictor, target: float = 0.7) -> list[dict[str, Any]]:
    """Suggested goals for a few (reputation, campaign days) pairs, for the report."""
    out = []
    for reputation, days in GOAL_EXAMPLES:
        s = suggest_goal(predict, reputation, days, target=target)
        out.append(
            {
                "reputation": reputation,
                "campaign_days": days,
                "goal": None if s.goal is None else float(s.goal),
                "predicted_success": round(s.predicted_success, 4),
                "reason": str(s.reason),
                "monotone": s.monotone,
            }
        )
    return out


def suggest_goal_with_bundle(
    bundle: Bundle,
    reputation: float,
    campaign_days: float,
    target: float = 0.7,
    min_goal: float = 100.0,
    max_goal: float = 1_000_000.0,
) -> GoalSuggestion:
    """``goals.suggest_goal`` with a bundle's success model (``success_predictor``'s
    assumptions: its checkpoint, other features at their training medians)."""
    training = bundle.manifest["training"]
    predict = success_predictor(
        bundle.scorers["success"].score,
        training.get("references", {}),
        float(training.get("checkpoint_fraction", 0.5)),
    )
    return suggest_goal(
        predict, reputation, campaign_days, min_goal=min_goal, max_goal=max_goal, target=target
    )
