"""Synthetic platform history: creators, backers, projects, pledges, milestones and votes,
with labelled attacks (``attacks``), drawn from one seeded ``numpy`` generator (PCG64).

``generate_history(seed, scale)`` is pure (no I/O, no wall clock, no hash-order iteration):
the same seed and scale give the same bytes. ``files.write_history`` writes it out.

The shape, at scale 1 (``scale`` multiplies entity counts; the history is always the 365
days [2025-01-01T00:00:00Z, 2026-01-01T00:00:00Z), so density grows with the scale; times
are whole seconds):

- 50 creators, reputation ``10 * Beta(2.2, 1.8)``, each owning one or two wallets; a
  creator's projects use their wallets in turn (1st, 3rd... project the first wallet).
- 200 projects created over the first 330 days; campaigns of 30-60 days; status 1 active
  (deadline at or after the history end), 2 funded, 3 failed. A project's *pull* is Pareto
  popularity (alpha 1.2, capped at 80) times ``exp(0.15 * (reputation - 5))``; its organic
  pledge count is Poisson(11 + 1.1 * pull) and its amounts scale with ``pull ** 0.75``.
  Goals grow as ``expected_raise ** 0.6`` with lognormal noise, then one global factor is
  set so that 56% of finished projects meet their goal on organic pledges: the funding
  ratio depends on pull versus goal. Pledges arrive front-loaded over the campaign
  (Beta(a, 1.7), a per project in 0.6-1.2), so midpoint momentum predicts success.
- 1,000 backers with Pareto wealth (alpha 2, capped at 100); busier backers are wealthier
  (activity ``wealth ** 0.8``); amounts are lognormal around ``$30 * wealth ** 0.75``
  (times the project's size), exact to the cent, at least $1. Pareto draws use stratified
  uniforms so every sample covers the whole distribution (shares stay put across seeds).
- 3-5 milestones per project, created 1-5 seconds after it, paying out shares of the goal
  (summing to it exactly); milestone k votes in a 7-day window opening ``deadline + 20k``
  days. Only funded projects' milestones get votes: 12-29 of the project's backers are
  asked (at most 95% of them), each approving with probability q. A milestone is bad
  (q 0.1-0.55) with a probability falling with the creator's reputation plus a per-project
  propensity (so earlier outcomes predict later ones), else good (q 0.8-0.98).
- ``voting_power`` of a pledge = amount / 100 rounded half-up to 2 places;
  ``vote_weight`` = the voter's summed voting power in that project; ``approval_rate`` =
  weighted share approving, rounded to 4 places; ``approved`` = approval_rate >= 0.7; a
  milestone resolves 1 hour after its window closes, when that is inside the history.
"""

from __future__ import annotations

import math
from typing import Final

import numpy as np

from escrowguard.errors import ConfigError
from escrowguard.producers import attacks
from escrowguard.producers.draft import (
    AMOUNT_MEDIAN_CENTS,
    AMOUNT_PULL_EXPONENT,
    DAY_S,
    END_S,
    HOUR_S,
    START_S,
    Draft,
    backer_stakes,
    pledge_amounts_cents,
    project_status,
    sum_by,
)
from escrowguard.producers.export import History, build_history
from escrowguard.producers.progress import Phases, SilentPhases

__all__ = ["History", "check_options", "generate_history"]

MAX_SCALE: Final = 1_000.0
# --- entity counts at scale 1 -----------------------------------------------------------
CREATORS: Final = 50
PROJECTS: Final = 200
BACKERS: Final = 1_000
# --- projects ---------------------------------------------------------------------------
PROJECTS_CREATED_DAYS: Final = 330
CAMPAIGN_DAYS: Final = (30, 60)
POPULARITY_ALPHA: Final = 1.2
POPULARITY_CAP: Final = 80.0
REPUTATION_PULL: Final = 0.15
#: Expected organic pledges of a project: ``PLEDGES_BASE + PLEDGES_PER_PULL * pull``.
PLEDGES_BASE: Final = 11.0
PLEDGES_PER_PULL: Final = 1.1
#: Goals grow as ``expected_raise ** GOAL_ELASTICITY`` with lognormal noise; one global
#: factor then sets the share of finished projects whose organic pledges meet the goal.
GOAL_ELASTICITY: Final = 0.6
GOAL_NOISE: Final = 0.7
FUNDED_SHARE: Final = 0.56
# --- backers (pledge amounts: draft.pledge_amounts_cents) -------------------------------
WEALTH_ALPHA: Final = 2.0
WEALTH_CAP: Final = 100.0
ACTIVITY_EXPONENT: Final = 0.8
# --- milestones and votes ---------------------------------------------------------------
MILESTONE_GAP_DAYS: Final = 20
VOTING_WINDOW_DAYS: Final = 7
VOTERS_PER_MILESTONE: Final = (12, 30)


def check_options(seed: int, scale: float) -> None:
    """Raise ConfigError naming the option when ``seed`` or ``scale`` is unusable."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--seed must be an integer >= 0, got {seed!r}", "invalid_option")
    if not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"--scale must be a number > 0, got {scale!r}", "invalid_option")
    if scale > MAX_SCALE:
        raise ConfigError(
            f"--scale must be at most {MAX_SCALE:g} (got {scale:g}): the history is built "
            "in memory",
            "invalid_option",
        )


def generate_history(seed: int = 42, scale: float = 1.0, progress: Phases | None = None) -> History:
    """Draw a complete, labelled platform history (pure: same seed and scale, same bytes)."""
    check_options(seed, scale)
    phases = progress or SilentPhases()
    draft = Draft(seed=seed, scale=float(scale), rng=np.random.Generator(np.random.PCG64(seed)))
    phases.start("entities", 3)
    draw_creators(draft)
    phases.advance()
    draw_projects(draft)
    phases.advance()
    draw_backers(draft)
    phases.advance()
    phases.start("pledges", 3)
    draw_pledges(draft)
    phases.advance()
    attacks.inject_pledge_anomalies(draft)
    attacks.inject_wash_trading(draft)
    phases.advance()
    register_backers(draft)
    phases.advance()
    phases.start("milestones & votes", 4)
    exit_projects = attacks.choose_exit_scams(draft)
    draw_milestones(draft, exit_projects)
    phases.advance()
    targets = attacks.plan_attacks_on_votes(draft, exit_projects)
    phases.advance()
    draw_votes(draft)
    phases.advance()
    attacks.inject_sybil_votes(draft, targets)
    attacks.settle_exit_scams(draft, exit_projects)
    phases.advance()
    return build_history(draft, phases)


# --- entities ---------------------------------------------------------------------------


def draw_creators(draft: Draft) -> None:
    """Creators: reputation 0-10, one or two wallets, accounts that predate the history."""
    rng, n = draft.rng, draft.count(CREATORS)
    rep = np.round(10.0 * rng.beta(2.2, 1.8, n), 2)
    two = rng.random(n) < 0.5
    wallet1 = np.full(n, -1, dtype=np.int64)
    wallet0 = draft.new_wallets(n)
    wallet1[two] = draft.new_wallets(int(two.sum()))
    created = START_S - rng.integers(30 * DAY_S, 1_000 * DAY_S, n)
    draft.creators.append(rep=rep, wallet0=wallet0, wallet1=wallet1, created_s=created)


def draw_projects(draft: Draft) -> None:
    """Projects in creation order; a creator's projects take its wallets in turn."""
    rng, n = draft.rng, draft.count(PROJECTS)
    creators = draft.creators
    creator = rng.integers(0, creators.size, n)
    created = START_S + rng.integers(HOUR_S, PROJECTS_CREATED_DAYS * DAY_S, n)
    order = np.argsort(created, kind="stable")
    creator, created = creator[order], created[order]
    duration = rng.integers(CAMPAIGN_DAYS[0] * DAY_S, CAMPAIGN_DAYS[1] * DAY_S + 1, n)
    by_creator = np.lexsort((np.arange(n), creator))
    group_start = np.searchsorted(creator[by_creator], creator[by_creator], side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[by_creator] = np.arange(n) - group_start
    wallet0, wallet1 = creators["wallet0"][creator], creators["wallet1"][creator]
    wallet = np.where((wallet1 >= 0) & (rank % 2 == 1), wallet1, wallet0)
    popularity = np.minimum(stratified_pareto(rng, POPULARITY_ALPHA, n), POPULARITY_CAP)
    pull = popularity * np.exp(REPUTATION_PULL * (creators["rep"][creator] - 5.0))
    draft.projects.append(
        creator=creator,
        wallet=wallet,
        created_s=created,
        deadline_s=created + duration,
        goal_cents=np.zeros(n, dtype=np.int64),
        pull=pull,
    )


def stratified_pareto(rng: np.random.Generator, alpha: float, n: int) -> np.ndarray:
    """``n`` Pareto(alpha, x_m=1) values from stratified uniforms in random order: the same
    distribution, but every sample covers all of it (the top 20% share stays put)."""
    u = (rng.permutation(n) + rng.random(n)) / n
    return (1.0 - u) ** (-1.0 / alpha)


def draw_backers(draft: Draft) -> None:
    """Backers with Pareto wealth; registration times are set once their pledges are known."""
    n = draft.count(BACKERS)
    wealth = np.minimum(stratified_pareto(draft.rng, WEALTH_ALPHA, n), WEALTH_CAP)
    draft.new_backers(np.full(n, -1, dtype=np.int64), wealth)


def draw_pledges(draft: Draft) -> None:
    """Organic pledges: Poisson in each project's pull, front-loaded over its campaign; and
    each project's goal, growing sub-linearly with the raise it can expect."""
    rng, projects = draft.rng, draft.projects
    n_projects = projects.size
    pull = projects["pull"]
    expected = PLEDGES_BASE + PLEDGES_PER_PULL * pull
    counts = rng.poisson(expected)
    project = np.repeat(np.arange(n_projects), counts)
    front = rng.uniform(0.6, 1.2, n_projects)
    u = rng.beta(front[project], 1.7)
    created, deadline = projects["created_s"][project], projects["deadline_s"][project]
    t = created + 1 + np.floor(u * (deadline - created - 2)).astype(np.int64)
    backers = draft.backers
    activity = backers["wealth"] ** ACTIVITY_EXPONENT
    backer = rng.choice(backers.size, size=project.size, p=activity / activity.sum())
    size = pull**AMOUNT_PULL_EXPONENT
    amount = pledge_amounts_cents(rng, backers["wealth"][backer], size[project])
    keep = t < END_S
    draft.add_pledges(project[keep], backer[keep], amount[keep], t[keep])
    raise_cents = expected * size * AMOUNT_MEDIAN_CENTS
    goal = raise_cents**GOAL_ELASTICITY * np.exp(rng.normal(0.0, GOAL_NOISE, n_projects))
    finished = projects["deadline_s"] < END_S
    ratio = draft.project_funding_cents()[finished] / goal[finished]
    factor = np.quantile(ratio, 1.0 - FUNDED_SHARE) if ratio.size else 1.0
    goal_cents = np.rint(goal * factor / 10_000).astype(np.int64) * 10_000
    projects.replace("goal_cents", np.maximum(goal_cents, 50_000))


def register_backers(draft: Draft) -> None:
    """Organic accounts register before their first pledge (anywhere, if they never pledge);
    accounts made by the attacks already carry their registration time."""
    rng, backers, pledges = draft.rng, draft.backers, draft.pledges
    registered = backers["registered_s"].copy()
    first = np.full(backers.size, END_S, dtype=np.int64)
    np.minimum.at(first, pledges["backer"], pledges["t_s"])
    offset = np.exp(rng.normal(np.log(5 * DAY_S), 1.2, backers.size)).astype(np.int64) + HOUR_S
    reg = first - offset
    spread = np.floor(rng.random(backers.size) * (first - START_S)).astype(np.int64)
    reg = np.where(reg < START_S, START_S + spread, reg)
    todo = registered < 0
    registered[todo] = reg[todo]
    backers.replace("registered_s", registered)


# --- milestones and votes ---------------------------------------------------------------


def draw_milestones(draft: Draft, exit_projects: np.ndarray) -> None:
    """3-5 milestones per project (5 for exit scams) paying out shares of the goal, each
    with a quality q: good (0.8-0.98) or bad (0.1-0.55), bad more often at low reputation."""
    rng, projects = draft.rng, draft.projects
    n = projects.size
    count = rng.integers(3, 6, n)
    count[exit_projects] = 5
    project = np.repeat(np.arange(n), count)
    first_row = np.cumsum(count) - count
    index = np.arange(project.size) - np.repeat(first_row, count) + 1
    share = rng.uniform(0.6, 1.4, project.size)
    share /= np.bincount(project, weights=share, minlength=n)[project]
    goal_cents = projects["goal_cents"]
    funding = np.floor(goal_cents[project] * share).astype(np.int64)
    funding[first_row + count - 1] += goal_cents - sum_by(project, funding, n)
    opens = projects["deadline_s"][project] + index * MILESTONE_GAP_DAYS * DAY_S
    rep = draft.creators["rep"][projects["creator"]]
    bad_logit = 0.8 - 0.5 * rep + rng.normal(0.0, 1.6, n)
    bad = rng.random(project.size) < 1.0 / (1.0 + np.exp(-bad_logit[project]))
    quality = np.where(
        bad, rng.uniform(0.1, 0.55, project.size), rng.uniform(0.8, 0.98, project.size)
    )
    draft.milestones.append(
        project=project,
        index=index,
        funding_cents=funding,
        opens_s=opens,
        closes_s=opens + VOTING_WINDOW_DAYS * DAY_S,
        quality=quality,
    )


def draw_votes(draft: Draft) -> None:
    """Organic votes on funded projects' milestones: a turnout of the project's backers,
    each approving with probability q, spread over the window (front-loaded)."""
    rng, ms = draft.rng, draft.milestones
    status, _ = project_status(draft)
    pair_backer, pair_weight, bounds = backer_stakes(draft)
    project = ms["project"]
    voted = np.flatnonzero((status[project] == 2) & (ms["opens_s"] < END_S))
    n_pairs = bounds[project[voted] + 1] - bounds[project[voted]]
    want = rng.integers(*VOTERS_PER_MILESTONE, voted.size)
    turnout = np.minimum(0.95, want / np.maximum(n_pairs, 1))
    milestone = np.repeat(voted, n_pairs)
    first = np.cumsum(n_pairs) - n_pairs
    pair = np.repeat(bounds[project[voted]] - first, n_pairs) + np.arange(milestone.size)
    votes = rng.random(milestone.size) < np.repeat(turnout, n_pairs)
    milestone, pair = milestone[votes], pair[votes]
    approve = rng.random(milestone.size) < ms["quality"][milestone]
    window = (ms["closes_s"] - ms["opens_s"])[milestone]
    t = ms["opens_s"][milestone] + np.floor(rng.beta(1.0, 1.6, milestone.size) * window)
    t = t.astype(np.int64)
    keep = t < END_S
    draft.votes.append(
        milestone=milestone[keep],
        backer=pair_backer[pair][keep],
        approve=approve[keep],
        weight_h=pair_weight[pair][keep],
        t_s=t[keep],
    )
