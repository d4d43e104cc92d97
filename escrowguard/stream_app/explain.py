"""Why a pledge looks anomalous, in words a security analyst reads.

The anomaly model gives one score; the reasons name the features that sit furthest from
what the training history considers normal (its median and spread), with the values in the
units an analyst thinks in (dollars, multiples, minutes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Protocol

from escrowguard.models.features import ANOMALY_FEATURES, PledgeContext
from escrowguard.outputs import AlertReason


class _References(Protocol):
    def reference(self, feature: str) -> tuple[float, float]: ...


def _ratio(v: float) -> str:
    return f"{math.exp(v):.1f}x"


def _duration(log1p_s: float) -> str:
    seconds = math.expm1(log1p_s)
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86_400:.0f} days"


_TEXT: dict[str, Callable[[float, PledgeContext, int], str]] = {
    "log_amount": lambda v, c, cents: f"pledge of ${cents / 100:,.2f}",
    "backer_prior_pledges": lambda v, c, cents: (
        f"{int(v)} earlier pledges by this backer in the history window"
    ),
    "amount_vs_backer_mean": lambda v, c, cents: f"{_ratio(v)} the backer's average pledge",
    "amount_vs_backer_max": lambda v, c, cents: f"{_ratio(v)} the backer's largest pledge",
    "amount_vs_project_mean": lambda v, c, cents: f"{_ratio(v)} this project's average pledge",
    "backer_pledges_1h": lambda v, c, cents: f"{int(v)} pledges by this backer in the last hour",
    "backer_pledges_24h": lambda v, c, cents: f"{int(v)} pledges by this backer in 24 hours",
    "log_since_prev_pledge_s": lambda v, c, cents: (
        f"{_duration(v)} since the backer's previous pledge"
    ),
    "log_account_age_s": lambda v, c, cents: f"backer account is {_duration(v)} old",
}


def explain_pledge(
    values: Mapping[str, float],
    amount_cents: int,
    ctx: PledgeContext,
    refs: _References,
    top: int = 3,
) -> list[AlertReason]:
    """The ``top`` anomaly features furthest from their training reference."""
    ranked = []
    for name in ANOMALY_FEATURES:
        median, spread = refs.reference(name)
        distance = abs(values[name] - median) / (spread if spread > 0 else 1.0)
        ranked.append((distance, name, median))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return [
        AlertReason(
            feature=name,
            value=round(values[name], 4),
            reference=round(median, 4),
            detail=_TEXT[name](values[name], ctx, amount_cents)
            + f" (typical: {_describe_reference(name, median)})",
        )
        for _, name, median in ranked[:top]
    ]


def _describe_reference(name: str, median: float) -> str:
    if name == "log_amount":
        return f"${math.expm1(median):,.2f}"
    if name.startswith("amount_vs"):
        return _ratio(median)
    if name.startswith("log_"):
        return _duration(median)
    return f"{median:g}"
