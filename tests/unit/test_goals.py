"""Dynamic funding goals: the largest goal to the cent that still meets the success target."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from escrowguard.models.goals import GoalOutcome, GoalSuggestion, suggest_goal


def logistic_model(reputation: float, days: float, goal: float) -> float:
    """Monotone synthetic model: success falls with the goal, the knee grows with reputation
    and campaign length. p = 1 / (1 + (goal / knee)^1.5), knee = 1000 * (1 + rep) * days/30."""
    knee = 1000.0 * (1.0 + reputation) * days / 30.0
    return 1.0 / (1.0 + (goal / knee) ** 1.5)


def analytic_goal(reputation: float, days: float, target: float) -> float:
    knee = 1000.0 * (1.0 + reputation) * days / 30.0
    return knee * ((1 - target) / target) ** (1 / 1.5)


def assert_cent_boundary(s: GoalSuggestion, model: object, rep: float, days: float) -> None:
    assert s.goal_cents is not None
    assert model(rep, days, s.goal_cents / 100) >= s.target  # type: ignore[operator]
    assert model(rep, days, (s.goal_cents + 1) / 100) < s.target  # type: ignore[operator]


@pytest.mark.parametrize(("reputation", "days"), [(0.0, 30.0), (5.0, 30.0), (9.5, 60.0)])
def test_monotone_model_gives_the_analytic_goal_to_the_cent(reputation: float, days: float) -> None:
    s = suggest_goal(logistic_model, reputation, days)
    assert s.reason is GoalOutcome.FOUND
    assert s.monotone
    expected = analytic_goal(reputation, days, 0.7)
    assert s.goal_cents == math.floor(expected * 100)
    assert_cent_boundary(s, logistic_model, reputation, days)
    assert s.predicted_success >= 0.7
    assert s.evaluations < 64 + 40  # grid + bisection, not a scan


def test_goal_is_exact_decimal_dollars() -> None:
    s = suggest_goal(logistic_model, 5.0, 30.0)
    assert isinstance(s.goal, Decimal)
    assert s.goal_cents is not None
    assert s.goal == Decimal(s.goal_cents) / 100
    assert s.goal == Decimal("3410.62")  # 6000 * (3/7)^(2/3) = 3410.62...
    assert s.goal.as_tuple().exponent == -2


def test_better_reputation_and_longer_campaigns_allow_bigger_goals() -> None:
    low = suggest_goal(logistic_model, 1.0, 30.0).goal_cents
    high = suggest_goal(logistic_model, 8.0, 30.0).goal_cents
    longer = suggest_goal(logistic_model, 1.0, 60.0).goal_cents
    assert low is not None and high is not None and longer is not None
    assert low < high
    assert low < longer


def test_a_stricter_target_gives_a_smaller_goal() -> None:
    loose = suggest_goal(logistic_model, 5.0, 30.0, target=0.6).goal_cents
    strict = suggest_goal(logistic_model, 5.0, 30.0, target=0.9).goal_cents
    assert loose is not None and strict is not None
    assert strict < loose


def test_min_goal_below_target_gives_no_goal_and_says_why() -> None:
    s = suggest_goal(logistic_model, 0.0, 10.0, min_goal=5_000.0)
    assert s.goal is None
    assert s.goal_cents is None
    assert s.reason is GoalOutcome.MIN_GOAL_BELOW_TARGET
    assert s.predicted_success == pytest.approx(logistic_model(0.0, 10.0, 5_000.0))
    assert s.predicted_success < 0.7


def test_max_goal_meeting_target_is_returned_as_the_cap() -> None:
    s = suggest_goal(logistic_model, 10.0, 90.0, max_goal=10_000.0)
    assert s.reason is GoalOutcome.MAX_GOAL_MEETS_TARGET
    assert s.goal == Decimal("10000.00")


def test_a_goal_feasible_only_at_min_goal() -> None:
    def model(_r: float, _d: float, goal: float) -> float:
        return 0.8 if goal <= 100.0 else 0.1

    s = suggest_goal(model, 5.0, 30.0)
    assert s.goal == Decimal("100.00")
    assert s.reason is GoalOutcome.FOUND


def test_step_model_like_a_random_forest_finds_the_step_edge() -> None:
    edges = [(500.0, 0.95), (2_500.0, 0.82), (12_345.67, 0.71), (80_000.0, 0.4)]

    def model(_r: float, _d: float, goal: float) -> float:
        for edge, p in edges:
            if goal <= edge:
                return p
        return 0.1

    s = suggest_goal(model, 5.0, 30.0)
    assert s.goal == Decimal("12345.67")
    assert s.predicted_success == 0.71
    assert s.monotone


def test_non_monotone_model_is_flagged_and_the_largest_found_goal_returned() -> None:
    # Success dips between 1,000 and 5,000, recovers up to 20,000, then falls for good.
    def model(_r: float, _d: float, goal: float) -> float:
        if goal < 1_000:
            return 0.9
        if goal < 5_000:
            return 0.5
        if goal < 20_000:
            return 0.8
        return 0.3

    s = suggest_goal(model, 5.0, 30.0)
    assert not s.monotone
    assert s.goal == Decimal("19999.99")
    assert s.reason is GoalOutcome.FOUND


def test_non_monotone_model_with_infeasible_min_goal_still_finds_the_band() -> None:
    def model(_r: float, _d: float, goal: float) -> float:
        return 0.75 if 3_000 <= goal <= 7_500 else 0.2

    s = suggest_goal(model, 5.0, 30.0)
    assert not s.monotone
    assert s.goal == Decimal("7500.00")


def test_small_wobble_within_tolerance_counts_as_monotone() -> None:
    def model(r: float, d: float, goal: float) -> float:
        wobble = 1e-12 if int(goal * 100) % 2 else 0.0
        return min(1.0, logistic_model(r, d, goal) + wobble)

    assert suggest_goal(model, 5.0, 30.0).monotone


def test_predictor_receives_reputation_days_and_cent_goals() -> None:
    calls: list[tuple[float, float, float]] = []

    def model(r: float, d: float, goal: float) -> float:
        calls.append((r, d, goal))
        return logistic_model(r, d, goal)

    suggest_goal(model, 3.5, 45.0, min_goal=250.0, max_goal=50_000.0)
    assert {(r, d) for r, d, _ in calls} == {(3.5, 45.0)}
    goals = [g for _, _, g in calls]
    assert min(goals) == 250.0
    assert max(goals) == 50_000.0
    assert all(round(g * 100) == pytest.approx(g * 100, abs=1e-6) for g in goals)
    assert len(goals) == len(set(goals))  # each goal is asked once


@pytest.mark.parametrize("bad", [float("nan"), 1.5, -0.1])
def test_predictor_output_must_be_a_probability(bad: float) -> None:
    with pytest.raises(ValueError, match="predict_success"):
        suggest_goal(lambda _r, _d, _g: bad, 5.0, 30.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_goal": 0.0}, "min_goal"),
        ({"max_goal": float("inf")}, "max_goal"),
        ({"min_goal": 2_000.0, "max_goal": 1_000.0}, "above"),
        ({"target": 1.2}, "target"),
        ({"grid_points": 1}, "grid_points"),
    ],
)
def test_bad_search_settings_are_rejected(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        suggest_goal(logistic_model, 5.0, 30.0, **kwargs)  # type: ignore[arg-type]
