"""The generator's working state: entity columns as numpy arrays, grown in chunks.

Rows are referred to by integer position while a history is being drawn; string ids are
given only at export, in event-time order, so an id never reveals how a row was made
(an attacker's account gets an ordinary id among the others registered that day).
Times are whole seconds since the Unix epoch (int64); money is integer cents (int64).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

import numpy as np

DAY_S: Final = 86_400
HOUR_S: Final = 3_600
#: The history is [START_S, END_S): 365 days from 2025-01-01T00:00:00Z.
START_S: Final = 1_735_689_600
HISTORY_DAYS: Final = 365
END_S: Final = START_S + HISTORY_DAYS * DAY_S
#: A milestone is resolved this long after its voting window closes.
RESOLVE_AFTER_S: Final = HOUR_S
APPROVAL_TARGET: Final = 0.7
# Pledge amounts: lognormal around ``AMOUNT_MEDIAN_CENTS * wealth ** AMOUNT_EXPONENT``.
AMOUNT_MEDIAN_CENTS: Final = 3_000
AMOUNT_EXPONENT: Final = 0.75
AMOUNT_SIGMA: Final = 0.6
#: Popular projects draw bigger pledges: the median also scales with ``pull ** this``.
AMOUNT_PULL_EXPONENT: Final = 0.75


def voting_power_h(amount_cents: np.ndarray) -> np.ndarray:
    """Voting power of pledges in hundredths: amount / 100, rounded (half up) to 2 places.

    A $1,250.00 pledge carries 12.50 votes.

    >>> voting_power_h(np.array([125_000, 149, 150, 100])).tolist()
    [1250, 1, 2, 1]
    """
    return (np.asarray(amount_cents, dtype=np.int64) + 50) // 100


class Columns:
    """Named columns appended in chunks and read back as whole arrays."""

    def __init__(self, *names: str) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {n: [] for n in names}
        self._whole: dict[str, np.ndarray] = {}
        self.size = 0

    def append(self, **columns: np.ndarray | int | bool) -> np.ndarray:
        """Append rows (scalars broadcast); returns the new rows' positions."""
        arrays = {k: np.asarray(v) for k, v in columns.items()}
        n = max((a.size for a in arrays.values() if a.ndim), default=1)
        if set(arrays) != set(self._chunks):
            raise ValueError(f"need columns {sorted(self._chunks)}, got {sorted(arrays)}")
        for name, a in arrays.items():
            self._chunks[name].append(np.broadcast_to(a, (n,)).copy())
        self._whole.clear()
        rows = np.arange(self.size, self.size + n, dtype=np.int64)
        self.size += n
        return rows

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._whole:
            chunks = self._chunks[name]
            self._whole[name] = np.concatenate(chunks) if chunks else np.empty(0, np.int64)
            self._chunks[name] = [self._whole[name]]
        return self._whole[name]

    def replace(self, name: str, values: np.ndarray) -> None:
        """Replace a whole column (same length)."""
        if len(values) != self.size:
            raise ValueError(f"column {name}: {len(values)} values for {self.size} rows")
        self._chunks[name] = [np.asarray(values)]
        self._whole.pop(name, None)


@dataclass(frozen=True)
class PledgeLabel:
    """An injected pledge: its row and the attack's shape."""

    kind: str
    shape: str
    pledge: int


@dataclass(frozen=True)
class SybilLabel:
    """A milestone whose vote was swayed, with the accounts and votes that did it."""

    shape: str
    milestone: int
    backers: tuple[int, ...]
    votes: tuple[int, ...]


@dataclass(frozen=True)
class ExitLabel:
    """A well-funded project whose milestones 2-3 fail while 4-5 are still pending."""

    project: int
    pending: tuple[int, ...]


@dataclass
class Draft:
    """Everything drawn so far; the generator's and the attacks' shared working state."""

    seed: int
    scale: float
    rng: np.random.Generator
    wallet_count: int = 0
    creators: Columns = field(
        default_factory=lambda: Columns("rep", "wallet0", "wallet1", "created_s")
    )
    projects: Columns = field(
        default_factory=lambda: Columns(
            "creator", "wallet", "created_s", "deadline_s", "goal_cents", "pull"
        )
    )
    backers: Columns = field(default_factory=lambda: Columns("wallet", "registered_s", "wealth"))
    pledges: Columns = field(
        default_factory=lambda: Columns("project", "backer", "amount_cents", "source_wallet", "t_s")
    )
    milestones: Columns = field(
        default_factory=lambda: Columns(
            "project", "index", "funding_cents", "opens_s", "closes_s", "quality"
        )
    )
    votes: Columns = field(
        default_factory=lambda: Columns("milestone", "backer", "approve", "weight_h", "t_s")
    )
    pledge_labels: list[PledgeLabel] = field(default_factory=list)
    sybil_labels: list[SybilLabel] = field(default_factory=list)
    exit_labels: list[ExitLabel] = field(default_factory=list)

    def count(self, per_scale_1: float, minimum: int = 1) -> int:
        """An entity or attack count: ``per_scale_1`` at scale 1, multiplied by the scale."""
        return max(minimum, round(per_scale_1 * self.scale))

    def new_wallets(self, n: int) -> np.ndarray:
        """Positions of ``n`` fresh wallets."""
        rows = np.arange(self.wallet_count, self.wallet_count + n, dtype=np.int64)
        self.wallet_count += n
        return rows

    def new_backers(self, registered_s: np.ndarray, wealth: np.ndarray | float = 1.0) -> np.ndarray:
        """Register accounts (each with a fresh wallet of its own); returns their rows."""
        registered = np.asarray(registered_s, dtype=np.int64)
        return self.backers.append(
            wallet=self.new_wallets(registered.size),
            registered_s=registered,
            wealth=np.broadcast_to(np.asarray(wealth, dtype=np.float64), registered.shape),
        )

    def add_pledges(
        self,
        project: np.ndarray | int,
        backer: np.ndarray | int,
        amount_cents: np.ndarray | int,
        t_s: np.ndarray | int,
        source_wallet: np.ndarray | int | None = None,
    ) -> np.ndarray:
        """Append pledges (source wallet: the backer's own unless given); returns rows."""
        backer_a = np.asarray(backer, dtype=np.int64)
        if source_wallet is None:
            source_wallet = self.backers["wallet"][backer_a]
        return self.pledges.append(
            project=np.asarray(project, dtype=np.int64),
            backer=backer_a,
            amount_cents=np.asarray(amount_cents, dtype=np.int64),
            source_wallet=np.asarray(source_wallet, dtype=np.int64),
            t_s=np.asarray(t_s, dtype=np.int64),
        )

    def project_funding_cents(self) -> np.ndarray:
        """Exact per-project sum of every pledge so far, in cents."""
        return sum_by(self.pledges["project"], self.pledges["amount_cents"], self.projects.size)

    def label_pledges(self, kind: str, shape: str, rows: np.ndarray) -> None:
        """Record injected pledges under an attack kind and shape."""
        self.pledge_labels.extend(PledgeLabel(kind, shape, int(r)) for r in rows)


def sum_by(keys: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Exact int64 sum of ``values`` per key in ``range(size)`` (bincount goes via float).

    >>> sum_by(np.array([0, 2, 0]), np.array([5, 7, 1]), 3).tolist()
    [6, 0, 7]
    """
    out = np.zeros(size, dtype=np.int64)
    np.add.at(out, keys, np.asarray(values, dtype=np.int64))
    return out


def pledge_amounts_cents(
    rng: np.random.Generator, wealth: np.ndarray, size: np.ndarray | float = 1.0
) -> np.ndarray:
    """Lognormal pledge amounts around a median growing with the backer's wealth (and the
    project's ``size`` multiplier), whole cents, at least $1."""
    median = np.log(AMOUNT_MEDIAN_CENTS * np.asarray(size)) + AMOUNT_EXPONENT * np.log(wealth)
    cents = np.rint(np.exp(rng.normal(median, AMOUNT_SIGMA)))
    return np.maximum(cents, 100).astype(np.int64)


def project_status(draft: Draft) -> tuple[np.ndarray, np.ndarray]:
    """(status, funding_cents) per project: 1 active, 2 funded, 3 failed."""
    funding = draft.project_funding_cents()
    projects = draft.projects
    finished = projects["deadline_s"] < END_S
    status = np.where(~finished, 1, np.where(funding >= projects["goal_cents"], 2, 3))
    return status.astype(np.int8), funding


def backer_stakes(draft: Draft) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (project, backer) pairs sorted by project: backer, summed voting power in
    hundredths, and each project's first pair position (length: projects + 1)."""
    pledges = draft.pledges
    n_backers = np.int64(max(draft.backers.size, 1))
    key = pledges["project"] * n_backers + pledges["backer"]
    pairs, inverse = np.unique(key, return_inverse=True)
    weight_h = sum_by(inverse, voting_power_h(pledges["amount_cents"]), pairs.size)
    bounds = np.searchsorted(pairs // n_backers, np.arange(draft.projects.size + 1))
    return pairs % n_backers, weight_h, bounds


class Outcomes(NamedTuple):
    """Per milestone: weighted approval (NaN if never voted), whether and when it resolves
    (voting close + 1 h, inside the history, with votes), and approved (rate >= 0.7)."""

    rate: np.ndarray
    resolved: np.ndarray
    resolved_s: np.ndarray
    approved: np.ndarray


def milestone_outcomes(draft: Draft) -> Outcomes:
    """Approval rates and resolutions of every milestone from the votes drawn so far."""
    ms, votes = draft.milestones, draft.votes
    n = ms.size
    total = sum_by(votes["milestone"], votes["weight_h"], n)
    yes = sum_by(votes["milestone"], np.where(votes["approve"], votes["weight_h"], 0), n)
    voted = np.bincount(votes["milestone"], minlength=n) > 0
    rate = np.full(n, np.nan)
    rate[voted] = np.round(yes[voted] / np.maximum(total[voted], 1), 4)
    resolved_s = ms["closes_s"] + RESOLVE_AFTER_S
    resolved = voted & (resolved_s < END_S)
    approved = np.nan_to_num(rate, nan=0.0) >= APPROVAL_TARGET
    return Outcomes(rate, resolved, resolved_s, approved)
