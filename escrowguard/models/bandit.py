"""Thompson sampling over the payout-release arms, with Beta-Bernoulli posteriors.

A milestone's release arm (``immediate``, ``review_48h``, ``tranches_50_50``; the list comes
from ``[bandit] arms``) is chosen by drawing one sample from each arm's Beta posterior and
taking the largest. The reward is the milestone's label (``milestone_resolved``: approved or
not).

Decisions must replay: the same decision id with the same posterior always yields the same
arm, in any process, on any machine. So the "random" draw is a function of the decision id:
blake2b(decision id) seeds a PCG64 generator, whose first uniforms are pushed through each
arm's inverse Beta CDF (``scipy.special.betaincinv``). PCG64 streams and ``Generator.random``
are stable across NumPy versions; ``Generator.beta`` makes no such promise, so it is not used.

Everything here is pure: a ``BanditState`` is an immutable value; ``update`` returns a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import betaincinv

__all__ = [
    "POLICIES",
    "ArmPosterior",
    "BanditState",
    "RegretReport",
    "choose_arm",
    "expected_rates",
    "from_counts",
    "initial_state",
    "simulate_regret",
    "update",
]

#: The policies ``simulate_regret`` compares, in report order.
POLICIES: tuple[str, ...] = ("thompson", "uniform", "greedy")

_SEED_PERSON = b"eg-bandit-v1"


@dataclass(frozen=True)
class ArmPosterior:
    """Beta(alpha, beta) belief about one arm's success rate.

    >>> ArmPosterior(3.0, 1.0).mean
    0.75
    """

    alpha: float
    beta: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            value = float(getattr(self, name))
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"ArmPosterior.{name} must be a finite number > 0, got {value!r}")
            object.__setattr__(self, name, value)

    @property
    def mean(self) -> float:
        """Posterior mean success rate, alpha / (alpha + beta)."""
        return self.alpha / (self.alpha + self.beta)


@dataclass(frozen=True, eq=False)
class BanditState:
    """The posteriors of every arm, in arm order (the order breaks ties).

    The mapping is copied on construction, so the state cannot change under its holder.
    """

    arms: Mapping[str, ArmPosterior] = field()

    def __post_init__(self) -> None:
        arms = dict(self.arms)
        if not arms:
            raise ValueError("BanditState needs at least one arm")
        for name, posterior in arms.items():
            if not isinstance(posterior, ArmPosterior):
                raise TypeError(f"arm {name!r}: expected ArmPosterior, got {type(posterior)!r}")
        object.__setattr__(self, "arms", arms)

    @property
    def arm_names(self) -> tuple[str, ...]:
        """The arms, in tie-breaking order."""
        return tuple(self.arms)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BanditState):
            return NotImplemented
        return list(self.arms.items()) == list(other.arms.items())

    def __hash__(self) -> int:
        return hash(tuple(self.arms.items()))


def initial_state(
    arms: Sequence[str], prior_alpha: float = 1.0, prior_beta: float = 1.0
) -> BanditState:
    """A state with every arm at the prior Beta(prior_alpha, prior_beta).

    >>> initial_state(["immediate", "review_48h"]).arm_names
    ('immediate', 'review_48h')
    """
    if len(set(arms)) != len(arms):
        raise ValueError(f"arm names must be unique, got {list(arms)!r}")
    prior = ArmPosterior(prior_alpha, prior_beta)
    return BanditState({arm: prior for arm in arms})


def from_counts(
    prior_alpha: float,
    prior_beta: float,
    successes: Mapping[str, int],
    failures: Mapping[str, int],
    arms: Sequence[str] | None = None,
) -> BanditState:
    """Posteriors Beta(prior_alpha + successes, prior_beta + failures) per arm.

    ``arms`` fixes the arm list and order (an arm without counts stays at the prior); without
    it the arms are the keys of ``successes`` then those only in ``failures``.

    >>> s = from_counts(1, 1, {"immediate": 3, "review_48h": 0}, {"immediate": 1})
    >>> s.arms["immediate"], s.arms["review_48h"]
    (ArmPosterior(alpha=4.0, beta=2.0), ArmPosterior(alpha=1.0, beta=1.0))
    """
    if arms is None:
        arms = list(dict.fromkeys([*successes, *failures]))
    else:
        unknown = (set(successes) | set(failures)) - set(arms)
        if unknown:
            raise ValueError(f"counts for arms not in {list(arms)!r}: {sorted(unknown)!r}")
    if len(set(arms)) != len(arms):
        raise ValueError(f"arm names must be unique, got {list(arms)!r}")
    posteriors = {}
    for arm in arms:
        wins, losses = successes.get(arm, 0), failures.get(arm, 0)
        if wins < 0 or losses < 0:
            raise ValueError(f"arm {arm!r}: counts must be >= 0, got {wins}, {losses}")
        posteriors[arm] = ArmPosterior(prior_alpha + wins, prior_beta + losses)
    return BanditState(posteriors)


def update(state: BanditState, arm: str, reward: bool) -> BanditState:
    """A new state with one observed reward for ``arm`` (success adds to alpha, else beta).

    >>> s = update(initial_state(["a", "b"]), "a", True)
    >>> s.arms["a"], s.arms["b"]
    (ArmPosterior(alpha=2.0, beta=1.0), ArmPosterior(alpha=1.0, beta=1.0))
    """
    try:
        old = state.arms[arm]
    except KeyError:
        raise ValueError(f"unknown arm {arm!r}; arms are {list(state.arms)!r}") from None
    new = ArmPosterior(old.alpha + 1, old.beta) if reward else ArmPosterior(old.alpha, old.beta + 1)
    return BanditState({**state.arms, arm: new})


def _key_uniforms(seed_key: str, n: int) -> np.ndarray:
    """``n`` uniforms in [0, 1) that depend only on ``seed_key`` (stable across processes)."""
    digest = hashlib.blake2b(seed_key.encode("utf-8"), digest_size=16, person=_SEED_PERSON)
    rng = np.random.Generator(np.random.PCG64(int.from_bytes(digest.digest(), "big")))
    return rng.random(n)


def _pick(alphas: np.ndarray, betas: np.ndarray, uniforms: np.ndarray) -> int:
    """Index of the largest Beta draw (inverse CDF of ``uniforms``); ties go to the first."""
    draws = betaincinv(alphas, betas, uniforms)
    return int(np.argmax(draws))


def choose_arm(state: BanditState, seed_key: str) -> str:
    """The Thompson-sampling arm for one decision, deterministic in (``state``, ``seed_key``).

    Use the decision id as ``seed_key``: a replayed history then makes the same choices.

    >>> s = from_counts(1, 1, {"immediate": 90, "review_48h": 5},
    ...                 {"immediate": 10, "review_48h": 95})
    >>> choose_arm(s, "decision-1")
    'immediate'
    >>> choose_arm(s, "decision-1") == choose_arm(s, "decision-1")
    True
    """
    posteriors = list(state.arms.values())
    alphas = np.array([p.alpha for p in posteriors], dtype=np.float64)
    betas = np.array([p.beta for p in posteriors], dtype=np.float64)
    index = _pick(alphas, betas, _key_uniforms(seed_key, len(posteriors)))
    return state.arm_names[index]


def expected_rates(state: BanditState) -> dict[str, float]:
    """Posterior mean success rate of every arm, in arm order.

    >>> expected_rates(from_counts(1, 1, {"a": 2, "b": 0}, {"a": 0, "b": 2}))
    {'a': 0.75, 'b': 0.25}
    """
    return {arm: posterior.mean for arm, posterior in state.arms.items()}


@dataclass(frozen=True, eq=False)
class RegretReport:
    """Outcome of ``simulate_regret``: per policy, the regret curve and pulls per arm.

    ``cumulative_regret[policy][t]`` is the expected (pseudo-)regret after ``t + 1`` pulls:
    the sum of ``best_rate - true_rate[arm pulled]``, which does not depend on reward luck.
    """

    arms: tuple[str, ...]
    true_rates: Mapping[str, float]
    best_arm: str
    horizon: int
    seed: int
    cumulative_regret: Mapping[str, np.ndarray]
    pulls: Mapping[str, Mapping[str, int]]
    successes: Mapping[str, int]

    def final_regret(self, policy: str) -> float:
        """Cumulative expected regret of ``policy`` at the horizon."""
        return float(self.cumulative_regret[policy][-1])


def simulate_regret(
    true_rates: Mapping[str, float],
    horizon: int,
    seed: int,
    prior: tuple[float, float] = (1.0, 1.0),
) -> RegretReport:
    """Simulate Thompson sampling against uniform-random and greedy arm choice.

    Every policy faces the same seeded Bernoulli outcomes (common random numbers). Thompson
    runs through ``choose_arm``/``update`` themselves, with decision ids ``"sim-{seed}-{t}"``.
    Greedy pulls the arm with the highest posterior mean (ties at random) and never explores.

    >>> r = simulate_regret({"a": 0.3, "b": 0.7}, horizon=500, seed=1)
    >>> r.best_arm, r.final_regret("thompson") < r.final_regret("uniform")
    ('b', True)
    """
    arms = tuple(true_rates)
    if not arms:
        raise ValueError("simulate_regret needs at least one arm")
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    rates = np.array([true_rates[a] for a in arms], dtype=np.float64)
    if not np.all((rates >= 0) & (rates <= 1)):
        raise ValueError(f"true rates must lie in [0, 1], got {dict(true_rates)!r}")
    best = int(np.argmax(rates))
    gaps = rates[best] - rates

    reward_seq, uniform_seq, greedy_seq = np.random.SeedSequence(seed).spawn(3)
    outcomes = np.random.default_rng(reward_seq).random((horizon, len(arms))) < rates
    uniform_rng = np.random.default_rng(uniform_seq)
    greedy_rng = np.random.default_rng(greedy_seq)

    chosen = {policy: np.empty(horizon, dtype=np.int64) for policy in POLICIES}
    state = initial_state(arms, *prior)
    index_of = {arm: i for i, arm in enumerate(arms)}
    wins = np.full(len(arms), prior[0], dtype=np.float64)
    losses = np.full(len(arms), prior[1], dtype=np.float64)
    uniform_picks = uniform_rng.integers(0, len(arms), size=horizon)
    for t in range(horizon):
        arm = choose_arm(state, f"sim-{seed}-{t}")
        i = index_of[arm]
        chosen["thompson"][t] = i
        state = update(state, arm, bool(outcomes[t, i]))

        chosen["uniform"][t] = uniform_picks[t]

        means = wins / (wins + losses)
        leaders = np.flatnonzero(means == means.max())
        g = int(leaders[0] if leaders.size == 1 else greedy_rng.choice(leaders))
        chosen["greedy"][t] = g
        if outcomes[t, g]:
            wins[g] += 1
        else:
            losses[g] += 1

    steps = np.arange(horizon)
    return RegretReport(
        arms=arms,
        true_rates=dict(true_rates),
        best_arm=arms[best],
        horizon=horizon,
        seed=seed,
        cumulative_regret={p: np.cumsum(gaps[chosen[p]]) for p in POLICIES},
        pulls={
            p: {arm: int(np.count_nonzero(chosen[p] == i)) for i, arm in enumerate(arms)}
            for p in POLICIES
        },
        successes={p: int(np.count_nonzero(outcomes[steps, chosen[p]])) for p in POLICIES},
    )
