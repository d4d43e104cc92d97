"""The "success badge" experiment: sizing, assignment, the badge rule and the analysis.

Projects whose predicted success probability is above a threshold may show a badge; the
experiment asks whether showing it changes the success rate. Assignment is a stable hash of
(experiment, project id), so every process, replay and machine puts a project in the same
group. The analysis is the classic two-proportion z-test with a Wald confidence interval.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

from scipy.stats import norm

__all__ = [
    "AbResult",
    "Group",
    "analyze",
    "assign",
    "badge",
    "sample_size_two_proportions",
]

Group = Literal["control", "treatment"]

_ASSIGN_PERSON = b"eg-abtest-v1"


def _check_open_unit(name: str, value: float) -> None:
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must lie strictly between 0 and 1, got {value!r}")


def sample_size_two_proportions(
    baseline: float,
    relative_lift: float,
    alpha: float = 0.05,
    power: float = 0.80,
    two_sided: bool = True,
) -> int:
    """Projects needed per group to detect ``baseline -> baseline * (1 + relative_lift)``.

    The standard normal-approximation formula for two independent proportions (Fleiss,
    without continuity correction), rounded up::

        n = (z_a * sqrt(2 * pbar * (1 - pbar)) + z_b * sqrt(p1 (1 - p1) + p2 (1 - p2)))^2
            / (p2 - p1)^2

    with ``p1 = baseline``, ``p2 = baseline * (1 + relative_lift)``, ``pbar = (p1 + p2) / 2``,
    ``z_a = z(1 - alpha/2)`` (two-sided) or ``z(1 - alpha)`` and ``z_b = z(power)``.

    >>> sample_size_two_proportions(0.55, 0.15)
    557
    >>> sample_size_two_proportions(0.05, 1.0)  # 5% -> 10%, the textbook 435
    435
    """
    _check_open_unit("baseline", baseline)
    _check_open_unit("alpha", alpha)
    _check_open_unit("power", power)
    treated = baseline * (1.0 + relative_lift)
    if relative_lift == 0:
        raise ValueError("relative_lift must be non-zero: no sample detects a zero effect")
    if not (0.0 < treated < 1.0):
        raise ValueError(
            f"baseline {baseline!r} with relative_lift {relative_lift!r} gives a treatment rate "
            f"of {treated!r}, outside (0, 1)"
        )
    z_alpha = float(norm.ppf(1 - alpha / 2 if two_sided else 1 - alpha))
    z_beta = float(norm.ppf(power))
    pooled = (baseline + treated) / 2
    numerator = z_alpha * math.sqrt(2 * pooled * (1 - pooled)) + z_beta * math.sqrt(
        baseline * (1 - baseline) + treated * (1 - treated)
    )
    n = (numerator / (treated - baseline)) ** 2
    # Guard against float noise pushing an exact integer just above itself.
    return math.ceil(n - 1e-9)


def assign(project_id: str, experiment: str = "success_badge") -> Group:
    """The project's group, 50/50 by a stable hash (blake2b; not Python's salted ``hash()``).

    >>> assign("p-000001") == assign("p-000001")
    True
    >>> assign("p-000001") in ("control", "treatment")
    True
    """
    message = f"{len(experiment)}:{experiment}:{project_id}".encode()
    digest = hashlib.blake2b(message, digest_size=8, person=_ASSIGN_PERSON).digest()
    return "treatment" if digest[0] & 0x80 else "control"


def badge(success_probability: float, threshold: float = 0.7) -> bool:
    """Whether a project earns the success badge: probability strictly above ``threshold``.

    >>> badge(0.71), badge(0.7), badge(0.2)
    (True, False, False)
    """
    if not (0.0 <= success_probability <= 1.0):
        raise ValueError(f"success_probability must lie in [0, 1], got {success_probability!r}")
    return success_probability > threshold


@dataclass(frozen=True)
class AbResult:
    """Outcome of ``analyze``. Lifts are treatment minus control.

    ``z``/``p_value`` come from the pooled two-proportion z-test; ``ci_low``/``ci_high`` is
    the unpooled (Wald) interval of the difference at ``ci_level``. The two use different
    standard errors, so right at the edge of significance they can disagree.
    ``relative_lift`` is None when the control rate is 0.
    """

    control_rate: float
    treatment_rate: float
    absolute_lift: float
    relative_lift: float | None
    z: float
    p_value: float
    ci_low: float
    ci_high: float
    ci_level: float
    alpha: float
    significant: bool


def _check_counts(group: str, successes: int, n: int) -> None:
    if n <= 0:
        raise ValueError(f"{group}_n must be > 0, got {n}: a group without projects")
    if not (0 <= successes <= n):
        raise ValueError(f"{group}_successes must lie in [0, {group}_n={n}], got {successes}")


def analyze(
    control_successes: int,
    control_n: int,
    treatment_successes: int,
    treatment_n: int,
    alpha: float = 0.05,
) -> AbResult:
    """Two-sided two-proportion z-test and (1 - alpha) CI of the rate difference.

    ``significant`` is ``p_value < alpha``. Raises ValueError on an empty group, counts out
    of range, or when every outcome in both groups is the same (the test is undefined).

    >>> r = analyze(120, 1000, 150, 1000)
    >>> round(r.z, 4), round(r.p_value, 4), r.significant
    (1.963, 0.0496, True)
    """
    _check_counts("control", control_successes, control_n)
    _check_counts("treatment", treatment_successes, treatment_n)
    _check_open_unit("alpha", alpha)
    p_c = control_successes / control_n
    p_t = treatment_successes / treatment_n
    pooled = (control_successes + treatment_successes) / (control_n + treatment_n)
    if pooled in (0.0, 1.0):
        raise ValueError(
            "every project in both groups has the same outcome "
            f"({control_successes + treatment_successes} of {control_n + treatment_n} "
            "succeeded): the z-test is undefined"
        )
    diff = p_t - p_c
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / control_n + 1 / treatment_n))
    z = diff / se_pooled
    p_value = float(2 * norm.sf(abs(z)))
    se_diff = math.sqrt(p_c * (1 - p_c) / control_n + p_t * (1 - p_t) / treatment_n)
    half_width = float(norm.ppf(1 - alpha / 2)) * se_diff
    return AbResult(
        control_rate=p_c,
        treatment_rate=p_t,
        absolute_lift=diff,
        relative_lift=diff / p_c if p_c > 0 else None,
        z=z,
        p_value=p_value,
        ci_low=diff - half_width,
        ci_high=diff + half_width,
        ci_level=1 - alpha,
        alpha=alpha,
        significant=p_value < alpha,
    )
