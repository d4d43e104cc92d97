"""Thompson sampling over payout-release arms: exact posteriors, replayable choices, regret."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from escrowguard.models.bandit import (
    POLICIES,
    ArmPosterior,
    BanditState,
    RegretReport,
    choose_arm,
    expected_rates,
    from_counts,
    initial_state,
    simulate_regret,
    update,
)

ARMS = ("immediate", "review_48h", "tranches_50_50")
TRUE_RATES = {"immediate": 0.55, "review_48h": 0.62, "tranches_50_50": 0.70}


@pytest.fixture
def mid_state() -> BanditState:
    return from_counts(
        1,
        1,
        {"immediate": 30, "review_48h": 25, "tranches_50_50": 40},
        {"immediate": 20, "review_48h": 25, "tranches_50_50": 15},
    )


# --- posteriors --------------------------------------------------------------------------


def test_update_adds_success_to_alpha_and_failure_to_beta() -> None:
    state = initial_state(ARMS, 2.0, 3.0)
    state = update(state, "review_48h", True)
    state = update(state, "review_48h", False)
    state = update(state, "review_48h", False)
    assert state.arms["review_48h"] == ArmPosterior(3.0, 5.0)
    assert state.arms["immediate"] == ArmPosterior(2.0, 3.0)
    assert state.arm_names == ARMS


def test_update_returns_a_new_state_and_leaves_the_old_one() -> None:
    before = initial_state(ARMS)
    after = update(before, "immediate", True)
    assert before.arms["immediate"] == ArmPosterior(1.0, 1.0)
    assert after.arms["immediate"] == ArmPosterior(2.0, 1.0)
    assert after != before


def test_a_reward_sequence_equals_the_counts_it_adds_up_to() -> None:
    rng = np.random.default_rng(3)
    state = initial_state(ARMS, 1.0, 1.0)
    wins = dict.fromkeys(ARMS, 0)
    losses = dict.fromkeys(ARMS, 0)
    for _ in range(500):
        arm = ARMS[int(rng.integers(len(ARMS)))]
        reward = bool(rng.random() < 0.6)
        state = update(state, arm, reward)
        (wins if reward else losses)[arm] += 1
    assert state == from_counts(1.0, 1.0, wins, losses, arms=ARMS)


def test_from_counts_respects_the_given_arm_list_and_order() -> None:
    state = from_counts(1, 1, {"review_48h": 4}, {}, arms=ARMS)
    assert state.arm_names == ARMS
    assert state.arms["review_48h"] == ArmPosterior(5.0, 1.0)
    assert state.arms["tranches_50_50"] == ArmPosterior(1.0, 1.0)


def test_from_counts_without_arms_takes_the_keys_in_order() -> None:
    state = from_counts(1, 1, {"b": 1, "a": 0}, {"c": 2, "a": 1})
    assert state.arm_names == ("b", "a", "c")


@pytest.mark.parametrize(
    ("successes", "failures", "arms"),
    [
        ({"immediate": -1}, {}, None),
        ({}, {"immediate": -2}, None),
        ({"unknown_arm": 1}, {}, ARMS),
    ],
)
def test_from_counts_rejects_bad_counts(
    successes: dict[str, int], failures: dict[str, int], arms: tuple[str, ...] | None
) -> None:
    with pytest.raises(ValueError):
        from_counts(1, 1, successes, failures, arms=arms)


@pytest.mark.parametrize(("alpha", "beta"), [(0.0, 1.0), (1.0, -1.0), (float("nan"), 1.0)])
def test_posterior_parameters_must_be_positive(alpha: float, beta: float) -> None:
    with pytest.raises(ValueError):
        ArmPosterior(alpha, beta)


def test_update_of_an_unknown_arm_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown arm"):
        update(initial_state(ARMS), "pay_everything_now", True)


def test_state_needs_unique_arms_and_at_least_one() -> None:
    with pytest.raises(ValueError):
        initial_state(["a", "a"])
    with pytest.raises(ValueError):
        BanditState({})


def test_expected_rates_are_posterior_means(mid_state: BanditState) -> None:
    rates = expected_rates(mid_state)
    assert list(rates) == list(ARMS)
    assert rates["immediate"] == pytest.approx(31 / 52)
    assert rates["review_48h"] == pytest.approx(0.5)
    assert rates["tranches_50_50"] == pytest.approx(41 / 57)


# --- choices -----------------------------------------------------------------------------


def test_choose_arm_is_deterministic_per_decision_id(mid_state: BanditState) -> None:
    first = [choose_arm(mid_state, f"dec-{i}") for i in range(200)]
    again = [choose_arm(mid_state, f"dec-{i}") for i in range(200)]
    assert first == again
    assert len(set(first)) > 1  # the key matters: not one constant arm


def test_choose_arm_golden(mid_state: BanditState) -> None:
    # Pinned: a change here changes every replayed decision (blake2b -> PCG64 -> betaincinv).
    assert [choose_arm(mid_state, f"dec-{i}") for i in range(12)] == [
        "tranches_50_50",
        "tranches_50_50",
        "tranches_50_50",
        "tranches_50_50",
        "review_48h",
        "tranches_50_50",
        "immediate",
        "tranches_50_50",
        "tranches_50_50",
        "tranches_50_50",
        "tranches_50_50",
        "tranches_50_50",
    ]


def test_choose_arm_is_the_same_in_another_process(mid_state: BanditState) -> None:
    code = (
        "from escrowguard.models.bandit import from_counts, choose_arm\n"
        "s = from_counts(1, 1, {'immediate': 30, 'review_48h': 25, 'tranches_50_50': 40},"
        " {'immediate': 20, 'review_48h': 25, 'tranches_50_50': 15})\n"
        "print(','.join(choose_arm(s, f'dec-{i}') for i in range(50)))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip().split(",") == [choose_arm(mid_state, f"dec-{i}") for i in range(50)]


def test_choice_frequencies_follow_the_posteriors() -> None:
    # P(X > U) for X ~ Beta(3, 1), U ~ Beta(1, 1) is E[X] = 3/4.
    state = from_counts(1, 1, {"a": 2, "b": 0}, {"a": 0, "b": 0})
    picks = [choose_arm(state, f"key-{i}") for i in range(4000)]
    share_a = picks.count("a") / len(picks)
    assert share_a == pytest.approx(0.75, abs=0.03)


def test_equal_posteriors_are_chosen_evenly() -> None:
    state = initial_state(ARMS)
    picks = [choose_arm(state, f"key-{i}") for i in range(3000)]
    for arm in ARMS:
        assert picks.count(arm) / len(picks) == pytest.approx(1 / 3, abs=0.04)


def test_ties_go_to_the_first_arm_in_order() -> None:
    # Both posteriors put all their mass so close to 1 that every draw rounds to 1.0.
    state = BanditState({"b": ArmPosterior(1e9, 1e-9), "a": ArmPosterior(1e9, 1e-9)})
    assert {choose_arm(state, f"k{i}") for i in range(50)} == {"b"}


# --- simulation --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_5000() -> RegretReport:
    return simulate_regret(TRUE_RATES, horizon=5000, seed=7)


def test_thompson_converges_to_the_best_arm(report_5000: RegretReport) -> None:
    pulls = report_5000.pulls["thompson"]
    assert report_5000.best_arm == "tranches_50_50"
    assert max(pulls, key=lambda arm: pulls[arm]) == "tranches_50_50"
    assert pulls["tranches_50_50"] / 5000 > 0.9


def test_thompson_regret_is_far_below_uniform(report_5000: RegretReport) -> None:
    thompson = report_5000.final_regret("thompson")
    uniform = report_5000.final_regret("uniform")
    # Uniform's expected regret is 5000 * (0.15 + 0.08 + 0) / 3 = 383.3.
    assert uniform == pytest.approx(383.3, rel=0.05)
    assert thompson < 0.1 * uniform
    # Golden figures for seed 7 (pinned to catch silent changes in the policy or the draws).
    assert thompson == pytest.approx(11.61, abs=1e-6)
    assert uniform == pytest.approx(382.80, abs=1e-6)


def test_regret_curves_and_pulls_are_consistent(report_5000: RegretReport) -> None:
    for policy in POLICIES:
        curve = report_5000.cumulative_regret[policy]
        assert curve.shape == (5000,)
        assert np.all(np.diff(curve) >= -1e-12)
        assert sum(report_5000.pulls[policy].values()) == 5000


def test_thompson_beats_uniform_on_every_seed() -> None:
    for seed in range(5):
        report = simulate_regret(TRUE_RATES, horizon=2000, seed=seed)
        assert report.final_regret("thompson") < 0.5 * report.final_regret("uniform")


def test_simulation_is_reproducible() -> None:
    a = simulate_regret(TRUE_RATES, horizon=300, seed=11)
    b = simulate_regret(TRUE_RATES, horizon=300, seed=11)
    for policy in POLICIES:
        np.testing.assert_array_equal(a.cumulative_regret[policy], b.cumulative_regret[policy])
    assert a.pulls == b.pulls


@pytest.mark.parametrize(
    ("rates", "horizon"),
    [({}, 10), ({"a": 0.5}, 0), ({"a": 1.5, "b": 0.2}, 10), ({"a": -0.1}, 10)],
)
def test_simulation_rejects_bad_input(rates: dict[str, float], horizon: int) -> None:
    with pytest.raises(ValueError):
        simulate_regret(rates, horizon=horizon, seed=0)
