"""The labelled attacks injected into a generated history (DESIGN.md, "What the scorer detects").

At scale 1 (counts scale with the scale):

- pledge_anomaly, ~3.5% of pledges (0.8% spikes, 2.2% in bursts, 0.7% new accounts):
  ``amount_spike`` (a backer with >= 3 earlier pledges pledges 20-100x their mean, at least
  10x the project's typical pledge), ``burst`` (6-12 pledges from one backer to 3-6
  projects within 10 minutes), ``new_account_big`` (an account registered 5-60 minutes
  earlier pledges 20-40x the project's typical pledge). A project's
  typical pledge is the mean of its organic pledges (for new_account_big, the larger of that
  and the mean of those before the attack). The big ones only go to projects that reach
  their goal on organic pledges alone, or are still running.
- wash_trading, 10 projects: the creator funds their own campaign early on (10-35% of the
  goal in 1-3 pledges), from the project's ``creator_wallet`` or from the creator's other
  wallet, which was the creator_wallet of an earlier project of theirs.
- sybil_vote, 5 + 5 milestones (index 1-2 of funded projects of modest size: the bottom
  60% by funding; the milestone made bad: q 0.15-0.45):
  ``weight_concentration`` (1-2 new accounts pledge enough in the campaign's last 48 hours to
  hold most of the weight, and vote approve) and ``shared_wallet`` (5-15 accounts registered
  days before the deadline, all funded from one wallet that is none of theirs, all approving).
  Pledges must precede the deadline, so "shortly before voting" means the campaign's end.
- exit_scam, 5 projects: funded >= 1.2x, 5 milestones, milestone 1 good (approved), 2-5 bad
  (q 0.05-0.3, approval < 0.5); every window inside the history, so milestones 4-5 are still
  pending when milestone 3 resolves.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from escrowguard.producers.draft import (
    AMOUNT_PULL_EXPONENT,
    APPROVAL_TARGET,
    DAY_S,
    END_S,
    HOUR_S,
    RESOLVE_AFTER_S,
    START_S,
    Draft,
    ExitLabel,
    SybilLabel,
    backer_stakes,
    pledge_amounts_cents,
    project_status,
    sum_by,
    voting_power_h,
)

SPIKE_RATE: Final = 0.008
BURST_RATE: Final = 0.022
NEW_ACCOUNT_RATE: Final = 0.007
WASH_PROJECTS: Final = 10
SYBIL_MILESTONES_PER_SHAPE: Final = 5
EXIT_SCAMS: Final = 5
EXIT_LOW_APPROVAL: Final = 0.5
MIN_VOTERS: Final = 6


def inject_pledge_anomalies(draft: Draft) -> None:
    """Add amount spikes, bursts and big pledges from brand-new accounts (all labelled).

    The big ones go to projects that reach their goal on organic pledges alone (or are
    still running at the end): a fraudulent pledge should not decide a campaign's outcome,
    or the success labels would be noise the midpoint features cannot see.
    """
    organic = draft.pledges.size
    typical = _typical_pledge(draft)
    status, _ = project_status(draft)
    typical[status == 3] = 0.0  # excluded as targets of big pledges
    _amount_spikes(draft, max(1, round(SPIKE_RATE * organic)), typical)
    _bursts(draft, max(1, round(BURST_RATE * organic / 9)))
    _new_account_big(draft, max(1, round(NEW_ACCOUNT_RATE * organic)), typical)


def _typical_pledge(draft: Draft) -> np.ndarray:
    """Mean organic pledge per project, in cents (0 when a project has none)."""
    pledges, n = draft.pledges, draft.projects.size
    count = np.bincount(pledges["project"], minlength=n)
    total = np.bincount(pledges["project"], weights=pledges["amount_cents"], minlength=n)
    return total / np.maximum(count, 1)


def _open_projects(draft: Draft, t_s: int, margin_s: int) -> np.ndarray:
    """Projects whose campaign is open from ``t_s`` to ``t_s + margin_s``."""
    p = draft.projects
    return np.flatnonzero((p["created_s"] < t_s) & (p["deadline_s"] > t_s + margin_s))


def _amount_spikes(draft: Draft, n: int, typical: np.ndarray) -> None:
    """Backers with >= 3 pledges (smaller backers more likely) suddenly pledge 20-100x
    their mean so far, to an open project whose typical pledge is at most a tenth of it."""
    rng, pledges = draft.rng, draft.pledges
    order = np.lexsort((np.arange(pledges.size), pledges["t_s"], pledges["backer"]))
    backer, t_s = pledges["backer"][order], pledges["t_s"][order]
    amount = pledges["amount_cents"][order]
    first = np.searchsorted(backer, np.arange(draft.backers.size))
    count = np.bincount(backer, minlength=draft.backers.size)
    eligible = np.flatnonzero(count >= 3)
    total = np.bincount(backer, weights=amount, minlength=draft.backers.size)
    weight = count[eligible] / total[eligible]  # inverse mean: small backers more often
    chosen = rng.choice(
        eligible, size=min(n, eligible.size), replace=False, p=weight / weight.sum()
    )
    cum = np.concatenate([[0], np.cumsum(amount)])
    rows = []
    for b in np.sort(chosen):
        k = int(rng.integers(2, count[b]))  # the anchor: the backer's (k+1)-th pledge, k >= 2
        anchor = first[b] + k
        mean = (cum[anchor + 1] - cum[first[b]]) / (k + 1)
        t = int(t_s[anchor]) + int(rng.integers(HOUR_S, 5 * DAY_S))
        cents = int(mean * np.exp(rng.uniform(np.log(20.0), np.log(100.0))))
        projects = _open_projects(draft, t, HOUR_S)
        projects = projects[(typical[projects] > 0) & (typical[projects] * 10 <= cents)]
        if t >= END_S or projects.size == 0:
            continue
        project = int(rng.choice(projects))
        rows.append(draft.add_pledges(project, b, cents, t))
    if rows:
        draft.label_pledges("pledge_anomaly", "amount_spike", np.concatenate(rows))


def _bursts(draft: Draft, n: int) -> None:
    rng = draft.rng
    pledgers = np.unique(draft.pledges["backer"])
    for _ in range(n):
        t0 = int(rng.integers(START_S + 30 * DAY_S, END_S - DAY_S))
        projects = _open_projects(draft, t0, 15 * 60)
        if projects.size < 3 or pledgers.size == 0:
            continue
        backer = int(rng.choice(pledgers))
        k = int(rng.integers(6, 13))
        targets = rng.choice(
            projects, size=min(int(rng.integers(3, 7)), projects.size), replace=False
        )
        project = np.concatenate([targets, rng.choice(targets, size=k - targets.size)])
        project = project[:k]
        t = t0 + np.sort(rng.choice(600, size=k, replace=False))
        size = draft.projects["pull"][project] ** AMOUNT_PULL_EXPONENT
        wealth = np.full(k, draft.backers["wealth"][backer])
        cents = pledge_amounts_cents(rng, wealth, size)
        rows = draft.add_pledges(project, np.full(k, backer), cents, t)
        draft.label_pledges("pledge_anomaly", "burst", rows)


def _new_account_big(draft: Draft, n: int, typical: np.ndarray) -> None:
    """Accounts registered 5-60 minutes earlier pledge 20-40x a project's typical pledge,
    after at least 3 organic pledges to it (projects with smaller pledges more often)."""
    rng, pledges = draft.rng, draft.pledges
    order = np.lexsort((np.arange(pledges.size), pledges["t_s"], pledges["project"]))
    project, t_s = pledges["project"][order], pledges["t_s"][order]
    cum = np.cumsum(pledges["amount_cents"][order])
    first = np.searchsorted(project, np.arange(draft.projects.size))
    count = np.bincount(project, minlength=draft.projects.size)
    eligible = np.flatnonzero((count >= 3) & (typical > 0))
    weight = 1.0 / typical[eligible]  # projects with smaller pledges more often
    p = np.sort(
        rng.choice(eligible, size=min(n, eligible.size), replace=False, p=weight / weight.sum())
    )
    rank = rng.integers(2, np.maximum(count[p], 3))  # after the project's (rank+1)-th pledge
    anchors = first[p] + rank
    t = t_s[anchors] + rng.integers(60, 2 * DAY_S, anchors.size)
    ok = (t < draft.projects["deadline_s"][p]) & (t < END_S)
    anchors, p, t, rank = anchors[ok], p[ok], t[ok], rank[ok]
    before = cum[anchors] - np.where(first[p] > 0, cum[first[p] - 1], 0)
    mean_before = before / (rank + 1)
    cents = np.rint(np.maximum(mean_before, typical[p]) * rng.uniform(20, 40, p.size))
    registered = t - rng.integers(5 * 60, 60 * 60 + 1, p.size)
    backers = draft.new_backers(registered, wealth=50.0)
    rows = draft.add_pledges(p, backers, cents.astype(np.int64), t)
    draft.label_pledges("pledge_anomaly", "new_account_big", rows)


def inject_wash_trading(draft: Draft) -> None:
    """Creators funding their own projects early, from the project's or their other wallet."""
    rng, projects, creators = draft.rng, draft.projects, draft.creators
    n = draft.count(WASH_PROJECTS, minimum=2)
    creator, wallet = projects["creator"], projects["wallet"]
    w0, w1 = creators["wallet0"][creator], creators["wallet1"][creator]
    other = np.where(wallet == w0, w1, w0)
    first_use = np.full(max(draft.wallet_count, 1), np.iinfo(np.int64).max)
    np.minimum.at(first_use, wallet, projects["created_s"])
    has_other = (other >= 0) & (first_use[np.maximum(other, 0)] < projects["created_s"])
    n_other = min(n // 2, int(has_other.sum()))
    other_projects = rng.choice(np.flatnonzero(has_other), size=n_other, replace=False)
    rest = np.setdiff1d(np.arange(projects.size), other_projects)
    own_projects = rng.choice(rest, size=min(n - n_other, rest.size), replace=False)
    for shape, chosen, source in (
        ("creator_wallet", own_projects, wallet),
        ("creator_other_wallet", other_projects, other),
    ):
        for p in np.sort(chosen):
            _wash_pledges(draft, int(p), int(source[p]), shape)


def _wash_pledges(draft: Draft, project: int, source: int, shape: str) -> None:
    rng, projects = draft.rng, draft.projects
    created, deadline = int(projects["created_s"][project]), int(projects["deadline_s"][project])
    k = int(rng.integers(1, 4))
    span = deadline - created
    t = created + np.sort(rng.integers(int(0.02 * span), int(0.3 * span), k))
    total = projects["goal_cents"][project] * rng.uniform(0.10, 0.35)
    cents = np.maximum(np.rint(total * rng.dirichlet(np.ones(k))), 100).astype(np.int64)
    organic_accounts = np.flatnonzero(draft.backers["registered_s"] < 0)
    if rng.random() < 0.3 and organic_accounts.size:
        backer = int(rng.choice(organic_accounts))  # an existing account of theirs
    else:
        registered = max(START_S, int(t[0]) - int(rng.integers(HOUR_S, 10 * DAY_S)))
        backer = int(draft.new_backers(np.array([registered]))[0])
    rows = draft.add_pledges(
        np.full(k, project), np.full(k, backer), cents, t, source_wallet=np.full(k, source)
    )
    draft.label_pledges("wash_trading", shape, rows)


def choose_exit_scams(draft: Draft) -> np.ndarray:
    """Well-funded projects (>= 1.2x) whose five voting windows all fit in the history."""
    status, funding = project_status(draft)
    projects = draft.projects
    _, _, bounds = backer_stakes(draft)
    backers = np.diff(bounds)
    last_resolution = projects["deadline_s"] + (5 * 20 + 7) * DAY_S + RESOLVE_AFTER_S
    eligible = (
        (status == 2)
        & (funding >= 1.2 * projects["goal_cents"])
        & (last_resolution < END_S)
        & (backers >= 2 * MIN_VOTERS)
        & ~_wash_projects(draft)
    )
    candidates = np.flatnonzero(eligible)
    n = min(draft.count(EXIT_SCAMS), candidates.size)
    return np.sort(draft.rng.choice(candidates, size=n, replace=False))


def _wash_projects(draft: Draft) -> np.ndarray:
    mask = np.zeros(draft.projects.size, dtype=bool)
    rows = [lab.pledge for lab in draft.pledge_labels if lab.kind == "wash_trading"]
    mask[draft.pledges["project"][np.asarray(rows, dtype=np.int64)]] = True
    return mask


def plan_attacks_on_votes(draft: Draft, exit_projects: np.ndarray) -> list[tuple[int, str]]:
    """Set the quality of exit-scam and sybil-target milestones (before votes are drawn) and
    return the sybil targets as (milestone row, shape)."""
    rng, ms = draft.rng, draft.milestones
    quality = ms["quality"].copy()
    in_exit = np.isin(ms["project"], exit_projects)
    quality[in_exit] = np.where(
        ms["index"][in_exit] == 1,
        rng.uniform(0.88, 0.98, in_exit.sum()),
        rng.uniform(0.05, 0.3, in_exit.sum()),
    )
    status, funding = project_status(draft)
    _, _, bounds = backer_stakes(draft)
    backers = np.diff(bounds)[ms["project"]]
    funded = status == 2
    modest = funding <= np.quantile(funding[funded], 0.6) if funded.any() else funded
    eligible = (
        funded[ms["project"]]
        & modest[ms["project"]]
        & ~in_exit
        & (ms["index"] <= 2)
        & (ms["closes_s"] + RESOLVE_AFTER_S < END_S)
        & (backers >= MIN_VOTERS)
        & ~_wash_projects(draft)[ms["project"]]
    )
    candidates = np.flatnonzero(eligible)
    # one target per project: shuffle, keep each project's first
    candidates = candidates[rng.permutation(candidates.size)]
    _, first = np.unique(ms["project"][candidates], return_index=True)
    candidates = candidates[np.sort(first)]
    n = min(2 * draft.count(SYBIL_MILESTONES_PER_SHAPE), candidates.size)
    chosen = candidates[:n]
    quality[chosen] = rng.uniform(0.15, 0.45, chosen.size)
    ms.replace("quality", quality)
    shapes = ["weight_concentration", "shared_wallet"] * n
    return sorted(zip(chosen.tolist(), shapes[:n], strict=True))


def inject_sybil_votes(draft: Draft, targets: list[tuple[int, str]]) -> None:
    """Accounts that pledge just before the deadline and approve a bad milestone together,
    with enough weight to lift its approval to 0.75-0.92."""
    rng, ms, votes = draft.rng, draft.milestones, draft.votes
    total_h = sum_by(votes["milestone"], votes["weight_h"], ms.size)
    yes_h = sum_by(votes["milestone"], np.where(votes["approve"], votes["weight_h"], 0), ms.size)
    for milestone, shape in targets:
        project = int(ms["project"][milestone])
        deadline = int(draft.projects["deadline_s"][project])
        total, yes = int(total_h[milestone]), int(yes_h[milestone])
        target = (
            rng.uniform(0.8, 0.92) if shape == "weight_concentration" else (rng.uniform(0.75, 0.9))
        )
        need_h = max(int(np.ceil((target * total - yes) / (1 - target))), 100)
        if shape == "weight_concentration":
            k = 1 + int(rng.random() < 0.4)
            share = np.array([1.0]) if k == 1 else np.array([0.65, 0.35])
            registered = deadline - rng.integers(3 * DAY_S, 14 * DAY_S, k)
            accounts = draft.new_backers(registered, wealth=100.0)
            source = None
        else:
            k = int(rng.integers(5, 16))
            share = rng.dirichlet(np.full(k, 4.0))
            registered = deadline - rng.integers(2 * DAY_S, 6 * DAY_S, k)
            accounts = draft.new_backers(registered)
            source = np.full(k, draft.new_wallets(1)[0])
        t = deadline - rng.integers(HOUR_S, 48 * HOUR_S, k)
        weight_h = np.maximum(np.rint(need_h * share), 1).astype(np.int64)
        cents = weight_h * 100 + rng.integers(0, 50, k)
        draft.add_pledges(np.full(k, project), accounts, cents, t, source_wallet=source)
        opens = int(ms["opens_s"][milestone])
        vote_t = opens + rng.integers(60, 3 * DAY_S, k)
        rows = votes.append(
            milestone=np.full(k, milestone),
            backer=accounts,
            approve=np.ones(k, dtype=bool),
            weight_h=voting_power_h(cents),
            t_s=vote_t,
        )
        draft.sybil_labels.append(
            SybilLabel(shape, milestone, tuple(accounts.tolist()), tuple(rows.tolist()))
        )


def settle_exit_scams(draft: Draft, exit_projects: np.ndarray) -> None:
    """Make each exit scam's outcome certain (milestone 1 approved, 2-5 below 0.5: the
    heaviest contrary votes are flipped) and label milestones 4-5 as pending."""
    ms, votes = draft.milestones, draft.votes
    approve = votes["approve"].copy()
    weight_h = votes["weight_h"]
    by_milestone = np.lexsort((-weight_h, votes["milestone"]))  # heaviest first
    bounds = np.searchsorted(votes["milestone"][by_milestone], np.arange(ms.size + 1))
    first_row = np.searchsorted(ms["project"], exit_projects)
    for project, first in zip(exit_projects.tolist(), first_row.tolist(), strict=True):
        rows = np.arange(first, first + 5)
        for milestone in rows.tolist():
            good = int(ms["index"][milestone]) == 1
            on_m = by_milestone[bounds[milestone] : bounds[milestone + 1]]
            weight = weight_h[on_m]
            for i in range(on_m.size):
                rate = weight[approve[on_m]].sum() / max(weight.sum(), 1)
                if (rate >= APPROVAL_TARGET) if good else (rate < EXIT_LOW_APPROVAL):
                    break
                approve[on_m[i]] = good
        draft.exit_labels.append(ExitLabel(project, tuple(rows[3:].tolist())))
    votes.replace("approve", approve)
