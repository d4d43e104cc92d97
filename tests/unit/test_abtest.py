"""The success-badge experiment: sample size, assignment, badge rule, z-test analysis."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from statistics import NormalDist

import pytest

from escrowguard.models.abtest import analyze, assign, badge, sample_size_two_proportions

Z = NormalDist()


def reference_sample_size(p1: float, p2: float, alpha: float, power: float, sides: int) -> float:
    """The same formula, written out independently with the standard library."""
    z_a = Z.inv_cdf(1 - alpha / sides)
    z_b = Z.inv_cdf(power)
    pbar = (p1 + p2) / 2
    top = z_a * math.sqrt(2 * pbar * (1 - pbar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return top**2 / (p2 - p1) ** 2


# --- sample size -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseline", "lift", "expected"),
    [
        (0.55, 0.15, 557),  # the badge experiment: 55% -> 63.25% (hand: 556.21 -> 557)
        (0.05, 1.00, 435),  # 5% -> 10%: the textbook 435 per group (Fleiss, uncorrected)
        (0.10, 0.20, 3841),  # 10% -> 12%: the widely quoted 3,841 per group
        (0.50, -0.20, 388),  # a drop works too: 50% -> 40% (hand: 387.33 -> 388)
    ],
)
def test_sample_size_matches_reference_values(baseline: float, lift: float, expected: int) -> None:
    assert sample_size_two_proportions(baseline, lift) == expected
    ref = reference_sample_size(baseline, baseline * (1 + lift), 0.05, 0.80, sides=2)
    assert expected == math.ceil(ref)


def test_sample_size_one_sided_and_stricter_settings() -> None:
    one_sided = sample_size_two_proportions(0.55, 0.15, two_sided=False)
    assert one_sided == math.ceil(reference_sample_size(0.55, 0.6325, 0.05, 0.80, sides=1))
    assert one_sided < sample_size_two_proportions(0.55, 0.15)
    assert sample_size_two_proportions(0.55, 0.15, power=0.9) > 557
    assert sample_size_two_proportions(0.55, 0.15, alpha=0.01) > 557


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"baseline": 0.0, "relative_lift": 0.1}, "baseline"),
        ({"baseline": 1.0, "relative_lift": 0.1}, "baseline"),
        ({"baseline": 0.5, "relative_lift": 0.0}, "non-zero"),
        ({"baseline": 0.9, "relative_lift": 0.2}, "outside"),
        ({"baseline": 0.5, "relative_lift": 0.1, "alpha": 0.0}, "alpha"),
        ({"baseline": 0.5, "relative_lift": 0.1, "power": 1.0}, "power"),
    ],
)
def test_sample_size_rejects_impossible_designs(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_size_two_proportions(**kwargs)  # type: ignore[arg-type]


# --- assignment --------------------------------------------------------------------------


def test_assignment_is_balanced_on_10k_ids() -> None:
    groups = [assign(f"p-{i:06d}") for i in range(10_000)]
    treatment = groups.count("treatment")
    # Binomial(10000, 0.5): sd = 50; 4 sd either side.
    assert abs(treatment - 5000) < 200


def test_assignment_differs_between_experiments() -> None:
    ids = [f"p-{i:06d}" for i in range(2000)]
    same = sum(assign(p, "success_badge") == assign(p, "other_experiment") for p in ids)
    assert abs(same - 1000) < 150  # independent splits agree about half the time


def test_assignment_golden_and_stable_across_processes() -> None:
    ids = [f"p-{i:06d}" for i in range(8)]
    golden = [assign(p) for p in ids]
    assert golden == ["treatment", "control"] * 4
    code = (
        "from escrowguard.models.abtest import assign\n"
        f"print(','.join(assign(p) for p in {ids!r}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "987"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().split(",") == golden


# --- badge -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("probability", "threshold", "expected"),
    [(0.7, 0.7, False), (0.7000001, 0.7, True), (0.69, 0.7, False), (1.0, 0.7, True),
     (0.0, 0.7, False), (0.5, 0.4, True)],
)  # fmt: skip
def test_badge_is_strictly_above_threshold(
    probability: float, threshold: float, expected: bool
) -> None:
    assert badge(probability, threshold) is expected


@pytest.mark.parametrize("probability", [-0.1, 1.1, float("nan")])
def test_badge_rejects_non_probabilities(probability: float) -> None:
    with pytest.raises(ValueError):
        badge(probability)


# --- analysis ----------------------------------------------------------------------------


def test_analyze_matches_a_hand_computation() -> None:
    # 120/1000 vs 150/1000: pooled p = 0.135, se = sqrt(0.135 * 0.865 * 0.002) = 0.0152823,
    # z = 0.03 / 0.0152823 = 1.96305, p = 2 * (1 - Phi(1.96305)) = 0.04964.
    r = analyze(120, 1000, 150, 1000)
    assert r.control_rate == pytest.approx(0.12)
    assert r.treatment_rate == pytest.approx(0.15)
    assert r.absolute_lift == pytest.approx(0.03)
    assert r.relative_lift == pytest.approx(0.25)
    assert r.z == pytest.approx(1.963050, abs=1e-6)
    assert r.p_value == pytest.approx(0.049640, abs=1e-6)
    # Wald CI: 0.03 +- 1.959964 * sqrt(.12*.88/1000 + .15*.85/1000) = 0.03 +- 0.029924.
    assert r.ci_low == pytest.approx(0.0000760, abs=1e-6)
    assert r.ci_high == pytest.approx(0.0599240, abs=1e-6)
    assert r.ci_level == pytest.approx(0.95)
    assert r.significant


def test_analyze_against_stdlib_reference() -> None:
    xc, nc, xt, nt = 312, 560, 351, 557  # a badge-sized experiment
    pc, pt = xc / nc, xt / nt
    pooled = (xc + xt) / (nc + nt)
    z = (pt - pc) / math.sqrt(pooled * (1 - pooled) * (1 / nc + 1 / nt))
    r = analyze(xc, nc, xt, nt)
    assert r.z == pytest.approx(z, rel=1e-12)
    assert r.p_value == pytest.approx(2 * (1 - Z.cdf(abs(z))), rel=1e-9)
    assert r.significant is (r.p_value < 0.05)


def test_no_difference_is_not_significant_and_symmetric() -> None:
    r = analyze(55, 100, 55, 100)
    assert r.z == 0.0
    assert r.p_value == pytest.approx(1.0)
    assert not r.significant
    assert r.ci_low < 0 < r.ci_high
    swapped = analyze(150, 1000, 120, 1000)
    assert swapped.z == pytest.approx(-analyze(120, 1000, 150, 1000).z)
    assert swapped.p_value == pytest.approx(analyze(120, 1000, 150, 1000).p_value)


def test_alpha_sets_the_decision_and_the_interval() -> None:
    r = analyze(120, 1000, 150, 1000, alpha=0.01)
    assert not r.significant
    assert r.ci_level == pytest.approx(0.99)
    assert r.ci_low < 0 < r.ci_high


def test_zero_control_rate_has_no_relative_lift() -> None:
    r = analyze(0, 50, 5, 50)
    assert r.relative_lift is None
    assert r.absolute_lift == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((0, 0, 5, 10), "control_n must be > 0"),
        ((5, 10, 0, 0), "treatment_n must be > 0"),
        ((11, 10, 5, 10), "control_successes"),
        ((5, 10, -1, 10), "treatment_successes"),
        ((0, 10, 0, 10), "same outcome"),
        ((10, 10, 10, 10), "same outcome"),
    ],
)
def test_analyze_rejects_degenerate_counts(args: tuple[int, int, int, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        analyze(*args)
