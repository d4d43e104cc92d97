"""Build a drawn history's outputs in memory: ids, the six tables, the events, the labels.

Ids are given here, in event-time order (ties by row), zero-padded to one width per kind so
that string order is numeric order: ``b000123`` (backer), ``c00012`` (creator), ``p00123``
(project), ``m000123`` (milestone), ``pl000123`` (pledge), ``v0000123`` (vote),
``w000123`` (wallet; numbered in a seeded random order so a number says nothing about whose
it is). Event ids are ``<kind>:<id>`` (``pledge:pl000123``, ``resolved:m000123``...).
Writing them out is ``files.write_history``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pyarrow as pa

from escrowguard.producers.draft import (
    END_S,
    START_S,
    Draft,
    milestone_outcomes,
    project_status,
    voting_power_h,
)
from escrowguard.producers.event_log import EVENT_PREFIXES, encode_stream
from escrowguard.producers.progress import Phases, SilentPhases

__all__ = ["EVENT_PREFIXES", "TABLES", "History", "Ids", "build_history", "money", "timestamps"]

TABLES: Final = ("creators", "backers", "projects", "pledges", "milestones", "votes")
MONEY: Final = pa.decimal128(14, 2)
TIMESTAMP: Final = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class History:
    """One generated platform history, ready to write or to inspect in memory.

    ``tables``: table name (``TABLES``) -> pyarrow Table, rows in id order.
    ``events``: the wire events, each encoded with ``events.encode`` (no newline), sorted
    by (occurred_at, event_id). ``labels``: the content of labels.json.
    """

    seed: int
    scale: float
    tables: dict[str, pa.Table]
    events: list[bytes]
    labels: dict[str, Any]


def _names(prefix: str, n: int, width: int) -> np.ndarray:
    """``n`` ids ``prefix`` + 1-based number, zero-padded to at least ``width`` digits."""
    width = max(width, len(str(n)))
    return np.array([f"{prefix}{i:0{width}d}" for i in range(1, n + 1)], dtype=object)


def _rank(*keys: np.ndarray) -> np.ndarray:
    """Position of each row when sorted by ``keys`` (most significant first), ties by row."""
    n = keys[0].size
    order = np.lexsort((np.arange(n), *reversed(keys)))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def money(cents: np.ndarray) -> pa.Array:
    """Exact decimal128(14, 2) column from integer cents (no float on the way).

    >>> money(np.array([1250, -1])).to_pylist()
    [Decimal('12.50'), Decimal('-0.01')]
    """
    c = np.asarray(cents, dtype=np.int64)
    words = np.empty((c.size, 2), dtype="<i8")
    words[:, 0], words[:, 1] = c, c >> 63  # little-endian two's-complement 128-bit
    return pa.Array.from_buffers(MONEY, c.size, [None, pa.py_buffer(words.tobytes())])


def timestamps(seconds: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """UTC timestamp[us] column from epoch seconds (null where ``valid`` is False)."""
    us = pa.array(
        np.asarray(seconds, dtype=np.int64) * 1_000_000, mask=None if valid is None else ~valid
    )
    return us.cast(TIMESTAMP)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Ids:
    """The string id of every row (index an array with row numbers), given in event-time
    order; ``*_rank`` is each row's 0-based position in id order."""

    def __init__(self, draft: Draft) -> None:
        b, p, pl, v = draft.backers, draft.projects, draft.pledges, draft.votes
        self.creator = _names("c", draft.creators.size, 5)
        self.project = _names("p", p.size, 5)[_rank(p["created_s"])]
        self.milestone = _names("m", draft.milestones.size, 6)
        self.backer_rank = _rank(b["registered_s"])
        self.backer = _names("b", b.size, 6)[self.backer_rank]
        self.pledge_rank = _rank(pl["t_s"])
        self.pledge = _names("pl", pl.size, 6)[self.pledge_rank]
        self.vote_rank = _rank(v["t_s"])
        self.vote = _names("v", v.size, 7)[self.vote_rank]
        numbers = draft.rng.permutation(draft.wallet_count)
        self.wallet = _names("w", draft.wallet_count, 6)[numbers]


def build_history(draft: Draft, progress: Phases | None = None) -> History:
    """Give ids, build the tables, encode and sort the events, and collect the labels."""
    phases = progress or SilentPhases()
    ids = Ids(draft)
    status, funding = project_status(draft)
    phases.start("tables", len(TABLES))
    tables = {}
    for name, build in _TABLE_BUILDERS.items():
        tables[name] = build(draft, ids, status, funding)
        phases.advance()
    events, counts = encode_stream(draft, ids, phases)
    for name in TABLES:
        counts[name] = tables[name].num_rows
    labels = _labels(draft, ids, counts)
    return History(seed=draft.seed, scale=draft.scale, tables=tables, events=events, labels=labels)


# --- tables -----------------------------------------------------------------------------


def _creators(draft: Draft, ids: Ids, *_: np.ndarray) -> pa.Table:
    c = draft.creators
    w0, w1 = ids.wallet[c["wallet0"]], c["wallet1"]
    wallets = [[a] if b < 0 else [a, ids.wallet[b]] for a, b in zip(w0, w1.tolist(), strict=True)]
    return pa.table(
        {
            "creator_id": pa.array(ids.creator, pa.string()),
            "reputation_score": pa.array(c["rep"], pa.float64()),
            "wallets": pa.array(wallets, pa.list_(pa.string())),
            "primary_wallet": pa.array(w0, pa.string()),
            "created_at": timestamps(c["created_s"]),
        }
    )


def _sorted(table: pa.Table, rank: np.ndarray) -> pa.Table:
    order = np.empty_like(rank)
    order[rank] = np.arange(rank.size)
    return table.take(pa.array(order))


def _backers(draft: Draft, ids: Ids, *_: np.ndarray) -> pa.Table:
    b = draft.backers
    table = pa.table(
        {
            "backer_id": pa.array(ids.backer, pa.string()),
            "wallet": pa.array(ids.wallet[b["wallet"]], pa.string()),
            "registered_at": timestamps(b["registered_s"]),
        }
    )
    return _sorted(table, ids.backer_rank)


def _projects(draft: Draft, ids: Ids, status: np.ndarray, funding: np.ndarray) -> pa.Table:
    p = draft.projects
    return pa.table(
        {
            "project_id": pa.array(ids.project, pa.string()),
            "creator_id": pa.array(ids.creator[p["creator"]], pa.string()),
            "creator_wallet": pa.array(ids.wallet[p["wallet"]], pa.string()),
            "reputation_score": pa.array(draft.creators["rep"][p["creator"]], pa.float64()),
            "funding_goal": money(p["goal_cents"]),
            "current_funding": money(funding),
            "created_at": timestamps(p["created_s"]),
            "deadline": timestamps(p["deadline_s"]),
            "status": pa.array(status, pa.int8()),
            "milestone_count": pa.array(
                np.bincount(draft.milestones["project"], minlength=p.size), pa.int32()
            ),
        }
    )


def _pledges(draft: Draft, ids: Ids, *_: np.ndarray) -> pa.Table:
    pl = draft.pledges
    table = pa.table(
        {
            "pledge_id": pa.array(ids.pledge, pa.string()),
            "project_id": pa.array(ids.project[pl["project"]], pa.string()),
            "backer_id": pa.array(ids.backer[pl["backer"]], pa.string()),
            "amount": money(pl["amount_cents"]),
            "source_wallet": pa.array(ids.wallet[pl["source_wallet"]], pa.string()),
            "voting_power": pa.array(voting_power_h(pl["amount_cents"]) / 100, pa.float64()),
            "pledged_at": timestamps(pl["t_s"]),
        }
    )
    return _sorted(table, ids.pledge_rank)


def _milestones(draft: Draft, ids: Ids, *_: np.ndarray) -> pa.Table:
    ms = draft.milestones
    out = milestone_outcomes(draft)
    voted = ~np.isnan(out.rate)
    return pa.table(
        {
            "milestone_id": pa.array(ids.milestone, pa.string()),
            "project_id": pa.array(ids.project[ms["project"]], pa.string()),
            "index": pa.array(ms["index"], pa.int32()),
            "funding_amount": money(ms["funding_cents"]),
            "voting_opens_at": timestamps(ms["opens_s"]),
            "voting_closes_at": timestamps(ms["closes_s"]),
            "approval_rate": pa.array(out.rate, pa.float64(), mask=~voted),
            "approved": pa.array(out.approved, pa.bool_(), mask=~out.resolved),
            "resolved_at": timestamps(out.resolved_s, out.resolved),
        }
    )


def _votes(draft: Draft, ids: Ids, *_: np.ndarray) -> pa.Table:
    v, ms = draft.votes, draft.milestones
    table = pa.table(
        {
            "vote_id": pa.array(ids.vote, pa.string()),
            "milestone_id": pa.array(ids.milestone[v["milestone"]], pa.string()),
            "project_id": pa.array(ids.project[ms["project"][v["milestone"]]], pa.string()),
            "backer_id": pa.array(ids.backer[v["backer"]], pa.string()),
            "approve": pa.array(v["approve"], pa.bool_()),
            "vote_weight": pa.array(v["weight_h"] / 100, pa.float64()),
            "voted_at": timestamps(v["t_s"]),
        }
    )
    return _sorted(table, ids.vote_rank)


_TABLE_BUILDERS: Final[dict[str, Callable[..., pa.Table]]] = {
    "creators": _creators,
    "backers": _backers,
    "projects": _projects,
    "pledges": _pledges,
    "milestones": _milestones,
    "votes": _votes,
}


# --- labels -----------------------------------------------------------------------------


def _labels(draft: Draft, ids: Ids, counts: dict[str, int]) -> dict[str, Any]:
    ms, pl, p = draft.milestones, draft.pledges, draft.projects
    out = milestone_outcomes(draft)
    pledge_rows: dict[str, list[dict[str, str]]] = {"pledge_anomaly": [], "wash_trading": []}
    for lab in draft.pledge_labels:
        row = lab.pledge
        project = int(pl["project"][row])
        entry = {
            "event_id": f"pledge:{ids.pledge[row]}",
            "pledge_id": ids.pledge[row],
            "project_id": ids.project[project],
            "shape": lab.shape,
        }
        if lab.kind == "wash_trading":
            entry["creator_id"] = ids.creator[p["creator"][project]]
        else:
            entry["backer_id"] = ids.backer[pl["backer"][row]]
        pledge_rows[lab.kind].append(entry)
    sybil = [
        {
            "project_id": ids.project[ms["project"][lab.milestone]],
            "milestone_id": ids.milestone[lab.milestone],
            "shape": lab.shape,
            "backer_ids": sorted(ids.backer[list(lab.backers)].tolist()),
            "vote_event_ids": sorted(f"vote:{ids.vote[r]}" for r in lab.votes),
        }
        for lab in draft.sybil_labels
    ]
    exits = [
        {
            "project_id": ids.project[lab.project],
            "milestone_ids_pending": sorted(ids.milestone[list(lab.pending)].tolist()),
        }
        for lab in draft.exit_labels
    ]
    milestones = {
        ids.milestone[i]: {
            "project_id": ids.project[ms["project"][i]],
            "final_approval_rate": None if np.isnan(out.rate[i]) else float(out.rate[i]),
            "approved": bool(out.approved[i]) if out.resolved[i] else None,
        }
        for i in range(ms.size)
    }
    return {
        "seed": draft.seed,
        "scale": draft.scale,
        "history_start": _iso(START_S),
        "history_end": _iso(END_S),
        "counts": counts,
        "attacks": {
            "pledge_anomaly": sorted(pledge_rows["pledge_anomaly"], key=lambda e: e["event_id"]),
            "wash_trading": sorted(pledge_rows["wash_trading"], key=lambda e: e["event_id"]),
            "sybil_vote": sorted(sybil, key=lambda e: e["milestone_id"]),
            "exit_scam": sorted(exits, key=lambda e: e["project_id"]),
        },
        "milestones": milestones,
    }
