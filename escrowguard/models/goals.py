"""Dynamic funding goals: the largest goal a creator can set and still likely succeed.

Given a success model ``predict_success(reputation, days, goal)``, ``suggest_goal`` finds the
largest goal, to the cent, whose predicted success probability is at least the target.
Success is assumed non-increasing in the goal, and that assumption is checked on every point
the search evaluates rather than trusted: the answer says whether it held.

Search: a geometric (log-spaced) grid over [min_goal, max_goal] brackets the largest grid
goal that meets the target; bisection in whole cents then narrows the bracket to one cent.
Goals are integer cents internally and a ``Decimal`` outside, never a float sum.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

import numpy as np

__all__ = ["GoalOutcome", "GoalSuggestion", "suggest_goal"]

#: (creator reputation 0-10, campaign days, funding goal in dollars) -> success probability.
SuccessPredictor = Callable[[float, float, float], float]


class GoalOutcome(StrEnum):
    """How ``suggest_goal`` ended."""

    FOUND = "found"  # the largest goal meeting the target, located to the cent
    MAX_GOAL_MEETS_TARGET = "max_goal_meets_target"  # capped at max_goal
    MIN_GOAL_BELOW_TARGET = "min_goal_below_target"  # not even min_goal meets it: no goal


@dataclass(frozen=True)
class GoalSuggestion:
    """The suggested goal (None when no goal in range meets the target) and why.

    ``predicted_success`` is the prediction at the suggested goal, or at ``min_goal`` when
    there is none. ``monotone`` is False when some evaluated larger goal predicted a higher
    success than a smaller one: the answer is then the largest *found*, not proven largest.
    """

    goal_cents: int | None
    predicted_success: float
    target: float
    reason: GoalOutcome
    monotone: bool
    evaluations: int

    @property
    def goal(self) -> Decimal | None:
        """The suggested goal in dollars, exact to the cent."""
        return None if self.goal_cents is None else Decimal(self.goal_cents) / 100


def _to_cents(name: str, dollars: float, rounding: Callable[[float], int]) -> int:
    if not (math.isfinite(dollars) and dollars > 0):
        raise ValueError(f"{name} must be a finite amount > 0, got {dollars!r}")
    # round(…, 6) first so 100.0 * 100 = 10000.000000000002 does not become 10001 cents.
    return rounding(round(dollars * 100, 6))


def suggest_goal(
    predict_success: SuccessPredictor,
    reputation: float,
    days: float,
    min_goal: float = 100.0,
    max_goal: float = 1_000_000.0,
    target: float = 0.7,
    *,
    grid_points: int = 64,
    tolerance: float = 1e-9,
) -> GoalSuggestion:
    """The largest goal in [min_goal, max_goal], to the cent, predicted to succeed >= target.

    ``predict_success`` gets the goal in dollars (a float of whole cents). It is called on
    ``grid_points`` log-spaced goals, then ~log2(bracket width in cents) more times. A rise
    in predicted success with the goal of more than ``tolerance`` marks ``monotone=False``;
    the search still returns the largest evaluated goal meeting the target, refined to the
    cent (even when ``min_goal`` itself misses it), but a bump narrower than the grid
    spacing can go unseen. With no evaluated goal meeting the target, ``goal`` is None and
    ``reason`` is ``min_goal_below_target``.

    >>> def model(reputation, days, goal):
    ...     return 1.0 / (1.0 + goal / 5_000.0)  # 0.7 exactly at goal 2142.857...
    >>> s = suggest_goal(model, reputation=5.0, days=30.0)
    >>> s.goal, s.reason, s.monotone
    (Decimal('2142.85'), <GoalOutcome.FOUND: 'found'>, True)
    >>> suggest_goal(model, 5.0, 30.0, min_goal=5_000.0).goal is None
    True
    """
    if not (0.0 <= target <= 1.0):
        raise ValueError(f"target must lie in [0, 1], got {target!r}")
    if grid_points < 2:
        raise ValueError(f"grid_points must be >= 2, got {grid_points}")
    lo_cents = _to_cents("min_goal", min_goal, math.ceil)
    hi_cents = _to_cents("max_goal", max_goal, math.floor)
    if lo_cents > hi_cents:
        raise ValueError(f"min_goal {min_goal!r} is above max_goal {max_goal!r}")

    seen: dict[int, float] = {}

    def success(cents: int) -> float:
        if cents not in seen:
            p = float(predict_success(reputation, days, cents / 100))
            if not (math.isfinite(p) and 0.0 <= p <= 1.0):
                raise ValueError(
                    f"predict_success({reputation!r}, {days!r}, {cents / 100!r}) returned "
                    f"{p!r}; a success probability must lie in [0, 1]"
                )
            seen[cents] = p
        return seen[cents]

    spaced = np.rint(np.geomspace(lo_cents, hi_cents, grid_points)).astype(np.int64)
    grid = [int(c) for c in np.unique(spaced)]
    feasible = [c for c in grid if success(c) >= target]

    if not feasible:
        return GoalSuggestion(
            goal_cents=None,
            predicted_success=success(lo_cents),
            target=target,
            reason=GoalOutcome.MIN_GOAL_BELOW_TARGET,
            monotone=_is_monotone(seen, tolerance),
            evaluations=len(seen),
        )
    best = feasible[-1]
    if best == hi_cents:
        reason = GoalOutcome.MAX_GOAL_MEETS_TARGET
    else:
        reason = GoalOutcome.FOUND
        above = grid[grid.index(best) + 1]  # infeasible: best is the last feasible grid goal
        while above - best > 1:
            mid = (best + above) // 2
            if success(mid) >= target:
                best = mid
            else:
                above = mid
    return GoalSuggestion(
        goal_cents=best,
        predicted_success=success(best),
        target=target,
        reason=reason,
        monotone=_is_monotone(seen, tolerance),
        evaluations=len(seen),
    )


def _is_monotone(seen: dict[int, float], tolerance: float) -> bool:
    """Whether success never rises by more than ``tolerance`` as the goal grows."""
    ordered = [seen[c] for c in sorted(seen)]
    return all(b <= a + tolerance for a, b in itertools.pairwise(ordered))
