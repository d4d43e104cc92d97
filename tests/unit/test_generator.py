"""The synthetic history generator: invariants, wire events, labels, attacks, determinism.

Histories are generated in memory at small scales (0.5 and 1); the byte-identity tests
write them to temporary directories. Tolerances on the shape are stated per test.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from escrowguard.cli import main
from escrowguard.errors import ConfigError
from escrowguard.events import (
    BackerRegistered,
    MilestoneCreated,
    MilestoneResolved,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
    decode,
)
from escrowguard.models.features import FeatureWindows
from escrowguard.models.history import walk_history
from escrowguard.models.pareto import top_share
from escrowguard.producers.export import EVENT_PREFIXES, TABLES, History
from escrowguard.producers.files import labels_json, prepare_out_dir, write_history
from escrowguard.producers.generator import generate_history

START = datetime(2025, 1, 1, tzinfo=UTC)
END = START + timedelta(days=365)
DAY = timedelta(days=1)
MONEY = pa.decimal128(14, 2)
TS = pa.timestamp("us", tz="UTC")


@pytest.fixture(scope="module")
def history() -> History:
    """Scale 1, seed 42: the documented reference history."""
    return generate_history(42, 1.0)


@pytest.fixture(scope="module")
def small() -> History:
    """Scale 0.5, another seed: the invariants must not depend on one draw."""
    return generate_history(7, 0.5)


@pytest.fixture(scope="module", params=["history", "small"])
def any_history(request: pytest.FixtureRequest) -> History:
    history: History = request.getfixturevalue(request.param)
    return history


def frames(h: History) -> dict[str, pd.DataFrame]:
    return {name: h.tables[name].to_pandas() for name in TABLES}


@pytest.fixture(scope="module")
def events(history: History) -> list[Any]:
    return [decode(line) for line in history.events]


def organic_pledges(h: History) -> pd.DataFrame:
    """Pledges not made by an attack (labelled pledges and sybil accounts left out)."""
    t = frames(h)
    attacks = h.labels["attacks"]
    labelled = {e["pledge_id"] for k in ("pledge_anomaly", "wash_trading") for e in attacks[k]}
    sybils = {b for e in attacks["sybil_vote"] for b in e["backer_ids"]}
    pl = t["pledges"]
    return pl[~pl.pledge_id.isin(labelled) & ~pl.backer_id.isin(sybils)]


# --- tables -----------------------------------------------------------------------------


def test_tables_have_the_documented_columns_and_types(history: History) -> None:
    t = history.tables
    assert t["creators"].schema.field("wallets").type == pa.list_(pa.string())
    assert t["creators"].schema.field("reputation_score").type == pa.float64()
    for name, money_cols, ts_cols in [
        ("projects", ["funding_goal", "current_funding"], ["created_at", "deadline"]),
        ("pledges", ["amount"], ["pledged_at"]),
        ("milestones", ["funding_amount"], ["voting_opens_at", "voting_closes_at", "resolved_at"]),
        ("votes", [], ["voted_at"]),
        ("backers", [], ["registered_at"]),
        ("creators", [], ["created_at"]),
    ]:
        schema = t[name].schema
        for col in money_cols:
            assert schema.field(col).type == MONEY, (name, col)
        for col in ts_cols:
            assert schema.field(col).type == TS, (name, col)
    assert t["projects"].column_names == [
        "project_id",
        "creator_id",
        "creator_wallet",
        "reputation_score",
        "funding_goal",
        "current_funding",
        "created_at",
        "deadline",
        "status",
        "milestone_count",
    ]
    assert t["milestones"].column_names == [
        "milestone_id",
        "project_id",
        "index",
        "funding_amount",
        "voting_opens_at",
        "voting_closes_at",
        "approval_rate",
        "approved",
        "resolved_at",
    ]
    assert t["votes"].column_names == [
        "vote_id",
        "milestone_id",
        "project_id",
        "backer_id",
        "approve",
        "vote_weight",
        "voted_at",
    ]


def test_ids_are_unique_and_rows_in_id_order(any_history: History) -> None:
    for name in TABLES:
        table = any_history.tables[name]
        ids = table.column(0).to_pylist()
        assert len(ids) == len(set(ids)), name
        assert ids == sorted(ids), name


def test_every_foreign_key_points_at_an_existing_row(any_history: History) -> None:
    t = frames(any_history)
    creators, backers = set(t["creators"].creator_id), set(t["backers"].backer_id)
    projects, milestones = set(t["projects"].project_id), set(t["milestones"].milestone_id)
    assert set(t["projects"].creator_id) <= creators
    assert set(t["pledges"].project_id) <= projects
    assert set(t["pledges"].backer_id) <= backers
    assert set(t["milestones"].project_id) <= projects
    assert set(t["votes"].milestone_id) <= milestones
    assert set(t["votes"].backer_id) <= backers
    ms_project = t["milestones"].set_index("milestone_id").project_id
    assert (ms_project[t["votes"].milestone_id].to_numpy() == t["votes"].project_id).all()
    wallets = {w for ws in t["creators"].wallets for w in ws}
    assert set(t["projects"].creator_wallet) <= wallets
    by_creator = t["creators"].set_index("creator_id").wallets
    for creator, wallet in zip(t["projects"].creator_id, t["projects"].creator_wallet, strict=True):
        assert wallet in by_creator[creator]


def test_current_funding_is_the_exact_sum_of_the_pledges(any_history: History) -> None:
    t = frames(any_history)
    sums: dict[str, Decimal] = {}
    for project, amount in zip(t["pledges"].project_id, t["pledges"].amount, strict=True):
        assert amount == amount.quantize(Decimal("0.01")) and amount > 0
        sums[project] = sums.get(project, Decimal(0)) + amount
    for project, funding in zip(
        t["projects"].project_id, t["projects"].current_funding, strict=True
    ):
        assert funding == sums.get(project, Decimal("0.00")), project


def test_pledges_fall_inside_the_campaign_after_the_backer_registered(
    any_history: History,
) -> None:
    t = frames(any_history)
    pl = t["pledges"].merge(t["projects"], on="project_id").merge(t["backers"], on="backer_id")
    assert (pl.created_at < pl.pledged_at).all()
    assert (pl.pledged_at < pl.deadline).all()
    assert (pl.registered_at < pl.pledged_at).all()
    assert (pl.pledged_at < END).all()


def test_everything_happens_inside_the_365_day_history(any_history: History) -> None:
    t = frames(any_history)
    for name, col in [
        ("backers", "registered_at"),
        ("projects", "created_at"),
        ("pledges", "pledged_at"),
        ("votes", "voted_at"),
    ]:
        assert t[name][col].between(START, END, inclusive="left").all(), (name, col)
    resolved = t["milestones"].resolved_at.dropna()
    assert (resolved < END).all()
    assert (t["projects"].created_at < START + 331 * DAY).all()
    assert (t["creators"].created_at < START).all()


def test_status_matches_deadline_and_funding(any_history: History) -> None:
    p = frames(any_history)["projects"]
    assert set(p.status) <= {1, 2, 3}
    active = p.deadline >= END
    funded = p.current_funding >= p.funding_goal
    assert (p.status[active] == 1).all()
    assert (p.status[~active & funded] == 2).all()
    assert (p.status[~active & ~funded] == 3).all()
    days = (p.deadline - p.created_at).dt.total_seconds() / 86_400
    assert days.between(30, 60).all()


def test_milestones_split_the_goal_and_vote_in_20_day_steps(any_history: History) -> None:
    t = frames(any_history)
    ms = t["milestones"].merge(t["projects"], on="project_id")
    counts = ms.groupby("project_id").size()
    assert counts.between(3, 5).all()
    p = t["projects"].set_index("project_id")
    assert (p.milestone_count[counts.index] == counts).all()
    for project, group in ms.groupby("project_id"):
        assert sorted(group["index"]) == list(range(1, len(group) + 1))
        assert sum(group.funding_amount) == p.funding_goal[project]
    assert (ms.funding_amount > 0).all()
    opens = ms.deadline + pd.to_timedelta(ms["index"] * 20, unit="D")
    assert (ms.voting_opens_at == opens).all()
    assert (ms.voting_closes_at == ms.voting_opens_at + pd.Timedelta(days=7)).all()


def test_votes_come_from_the_projects_backers_inside_the_window(any_history: History) -> None:
    t = frames(any_history)
    v = t["votes"].merge(t["milestones"], on=["milestone_id", "project_id"])
    v = v.merge(t["projects"][["project_id", "status"]], on="project_id")
    assert (v.status == 2).all()
    assert (v.voting_opens_at <= v.voted_at).all() and (v.voted_at < v.voting_closes_at).all()
    assert not v.duplicated(["milestone_id", "backer_id"]).any()
    first_pledge = t["pledges"].groupby(["project_id", "backer_id"]).pledged_at.min()
    keys = pd.MultiIndex.from_frame(v[["project_id", "backer_id"]])
    assert keys.isin(first_pledge.index).all()
    assert (first_pledge[keys].to_numpy() < v.voted_at.to_numpy()).all()


def test_voting_power_and_vote_weight_follow_the_stated_rules(any_history: History) -> None:
    t = frames(any_history)
    pl = t["pledges"]
    cents = pl.amount.map(lambda a: int(a * 100))
    assert ((cents + 50) // 100 / 100 == pl.voting_power).all()  # amount/100, 2 places
    power = pl.groupby(["project_id", "backer_id"]).voting_power.sum().round(2)
    v = t["votes"]
    keys = pd.MultiIndex.from_frame(v[["project_id", "backer_id"]])
    assert np.allclose(power[keys].to_numpy(), v.vote_weight.to_numpy(), rtol=0, atol=1e-6)


def test_approval_rates_and_resolutions_follow_from_the_votes(any_history: History) -> None:
    t = frames(any_history)
    v, ms = t["votes"], t["milestones"].set_index("milestone_id")
    v = v.assign(yes=v.vote_weight.where(v.approve, 0.0))
    sums = v.groupby("milestone_id")[["yes", "vote_weight"]].sum()
    rate = (sums.yes / sums.vote_weight).round(4)
    assert np.allclose(ms.approval_rate[rate.index], rate, atol=1e-4)
    assert ms.approval_rate.drop(rate.index).isna().all()
    resolved = ms.resolved_at.notna()
    close_plus_1h = ms.voting_closes_at + pd.Timedelta(hours=1)
    assert (ms.resolved_at[resolved] == close_plus_1h[resolved]).all()
    assert (resolved == (ms.approval_rate.notna() & (close_plus_1h < END))).all()
    assert (ms.approved[resolved] == (ms.approval_rate[resolved] >= 0.7)).all()
    assert ms.approved[~resolved].isna().all()


# --- the shape the downstream models need (scale 1, seed 42) -----------------------------


def test_shape_at_scale_1(history: History) -> None:
    t = frames(history)
    assert len(t["creators"]) == 50 and len(t["projects"]) == 200
    assert 800 <= len(t["backers"]) <= 1_200
    assert 2_000 <= len(t["pledges"]) <= 4_000
    assert 600 <= len(t["milestones"]) <= 1_000
    assert 5_000 <= len(t["votes"]) <= 9_000
    p = t["projects"]
    finished = p[p.status != 1]
    assert 0.50 <= (finished.status == 2).mean() <= 0.62
    rate = t["milestones"].approval_rate.dropna()
    assert 0.20 <= (rate < 0.7).mean() <= 0.35
    voters = t["votes"].groupby("milestone_id").size()
    assert 10 <= voters.mean() <= 25


def test_pareto_shares_of_pledged_money(any_history: History) -> None:
    """Top 20% of projects hold 65-85% of the money (aim ~75%), of backers 70-90% (~80%)."""
    t = frames(any_history)
    funding = t["projects"].current_funding.astype(float)
    per_backer = t["pledges"].groupby("backer_id").amount.sum().astype(float)
    per_backer = per_backer.reindex(t["backers"].backer_id, fill_value=0.0)
    assert 0.65 <= top_share(funding) <= 0.85
    assert 0.70 <= top_share(per_backer) <= 0.90


def test_reputation_drives_outcomes(history: History) -> None:
    t = frames(history)
    p = t["projects"]
    finished = p[p.status != 1]
    high = finished.reputation_score >= finished.reputation_score.median()
    assert (finished.status[high] == 2).mean() > (finished.status[~high] == 2).mean()
    ms = t["milestones"].merge(p[["project_id", "reputation_score"]], on="project_id")
    ms = ms[ms.approval_rate.notna()]
    assert np.corrcoef(ms.reputation_score, ms.approval_rate)[0, 1] > 0.1


# --- wire events ------------------------------------------------------------------------


def test_every_event_decodes_and_the_stream_is_sorted(history: History, events: list[Any]) -> None:
    keys = [(e.occurred_at, e.event_id) for e in events]
    assert keys == sorted(keys)
    assert len({e.event_id for e in events}) == len(events)
    counts = Counter(e.event_type for e in events)
    assert dict(counts) == {k: history.labels["counts"][k] for k in EVENT_PREFIXES}
    assert all(len(line) < 1_000 and b"\n" not in line for line in history.events)
    for e in events:
        assert e.event_id.startswith(EVENT_PREFIXES[e.event_type])
        assert START <= e.occurred_at < END


def test_events_refer_only_to_what_came_before(events: list[Any]) -> None:
    backers, projects, milestones = set(), {}, {}
    pledged: set[tuple[str, str]] = set()
    for e in events:
        if isinstance(e, BackerRegistered):
            backers.add(e.backer_id)
        elif isinstance(e, ProjectCreated):
            projects[e.project_id] = e
        elif isinstance(e, MilestoneCreated):
            assert e.project_id in projects
            assert e.voting_opens_at > projects[e.project_id].deadline
            milestones[e.milestone_id] = e
        elif isinstance(e, PledgeCreated):
            assert e.backer_id in backers and e.project_id in projects
            assert e.occurred_at < projects[e.project_id].deadline
            pledged.add((e.project_id, e.backer_id))
        elif isinstance(e, VoteCast):
            m = milestones[e.milestone_id]
            assert m.project_id == e.project_id
            assert m.voting_opens_at <= e.occurred_at <= m.voting_closes_at
            assert (e.project_id, e.backer_id) in pledged
        else:
            assert isinstance(e, MilestoneResolved)
            m = milestones[e.milestone_id]
            assert e.occurred_at == m.voting_closes_at + timedelta(hours=1)
            assert e.approved == (e.approval_rate >= 0.7)


def test_events_carry_the_same_values_as_the_tables(history: History, events: list[Any]) -> None:
    pledges = frames(history)["pledges"].set_index("pledge_id")
    for e in events:
        if isinstance(e, PledgeCreated):
            row = pledges.loc[e.pledge_id]
            assert e.amount == row.amount and e.backer_id == row.backer_id
            assert e.source_wallet == row.source_wallet
            assert e.voting_power == row.voting_power
            assert e.occurred_at == row.pledged_at.to_pydatetime()


def test_the_stream_checks_of_the_scorer_reject_nothing(events: list[Any]) -> None:
    matrices = walk_history(events, FeatureWindows())
    assert matrices.rejected == {}


# --- labels -----------------------------------------------------------------------------


def test_labels_header_counts_and_milestones(history: History) -> None:
    labels = history.labels
    assert labels["seed"] == 42 and labels["scale"] == 1.0
    assert labels["history_start"] == "2025-01-01T00:00:00Z"
    assert labels["history_end"] == "2026-01-01T00:00:00Z"
    for name in TABLES:
        assert labels["counts"][name] == history.tables[name].num_rows
    assert labels["counts"]["events"] == len(history.events)
    ms = frames(history)["milestones"].set_index("milestone_id")
    assert sorted(labels["milestones"]) == sorted(ms.index)
    for mid, entry in labels["milestones"].items():
        assert entry["project_id"] == ms.project_id[mid]
        rate = ms.approval_rate[mid]
        assert entry["final_approval_rate"] == (None if pd.isna(rate) else rate)
        approved = ms.approved[mid]
        assert entry["approved"] == (None if pd.isna(approved) else bool(approved))
    assert labels_json(labels) == labels_json(json.loads(labels_json(labels)))


def test_labels_reference_existing_ids(any_history: History) -> None:
    t = frames(any_history)
    event_ids = {json.loads(line)["event_id"] for line in any_history.events}
    pledges = t["pledges"].set_index("pledge_id")
    projects = t["projects"].set_index("project_id")
    ms = t["milestones"].set_index("milestone_id")
    a = any_history.labels["attacks"]
    for entry in a["pledge_anomaly"] + a["wash_trading"]:
        assert entry["event_id"] == f"pledge:{entry['pledge_id']}" in event_ids
        assert pledges.project_id[entry["pledge_id"]] == entry["project_id"]
    for entry in a["pledge_anomaly"]:
        assert pledges.backer_id[entry["pledge_id"]] == entry["backer_id"]
    for entry in a["wash_trading"]:
        assert projects.creator_id[entry["project_id"]] == entry["creator_id"]
    for entry in a["sybil_vote"]:
        assert ms.project_id[entry["milestone_id"]] == entry["project_id"]
        assert set(entry["vote_event_ids"]) <= event_ids
        assert set(entry["backer_ids"]) <= set(t["backers"].backer_id)
    for entry in a["exit_scam"]:
        assert entry["project_id"] in projects.index
        assert set(entry["milestone_ids_pending"]) <= set(ms.index)
    assert a["pledge_anomaly"] == sorted(a["pledge_anomaly"], key=lambda e: e["event_id"])


def test_attack_counts_at_scale_1(history: History) -> None:
    a = history.labels["attacks"]
    pledges = history.labels["counts"]["pledges"]
    anomalies = Counter(e["shape"] for e in a["pledge_anomaly"])
    assert sum(anomalies.values()) >= 40
    assert 0.03 <= sum(anomalies.values()) / pledges <= 0.05
    assert set(anomalies) == {"amount_spike", "burst", "new_account_big"}
    assert min(anomalies.values()) >= 10
    wash = {(e["project_id"], e["shape"]) for e in a["wash_trading"]}
    assert len({p for p, _ in wash}) >= 8
    assert {s for _, s in wash} == {"creator_wallet", "creator_other_wallet"}
    sybil = Counter(e["shape"] for e in a["sybil_vote"])
    assert sum(sybil.values()) >= 8 and set(sybil) == {"weight_concentration", "shared_wallet"}
    assert len(a["exit_scam"]) >= 4


def test_attack_counts_scale_with_the_scale(history: History, small: History) -> None:
    big, half = history.labels["attacks"], small.labels["attacks"]
    for kind in ("pledge_anomaly", "sybil_vote", "exit_scam"):
        assert 0 < len(half[kind]) < len(big[kind]), kind
    big_wash = {e["project_id"] for e in big["wash_trading"]}
    assert 0 < len({e["project_id"] for e in half["wash_trading"]}) < len(big_wash)


def _earlier(pl: pd.DataFrame, backer: str, at: pd.Timestamp) -> pd.DataFrame:
    return pl[(pl.backer_id == backer) & (pl.pledged_at < at)]


def test_pledge_anomalies_have_their_shapes(any_history: History) -> None:
    t = frames(any_history)
    pl = t["pledges"].set_index("pledge_id", drop=False)
    backers = t["backers"].set_index("backer_id")
    typical = organic_pledges(any_history).groupby("project_id").amount.mean()
    entries = any_history.labels["attacks"]["pledge_anomaly"]
    bursts: dict[str, list[str]] = {}
    for e in entries:
        row = pl.loc[e["pledge_id"]]
        if e["shape"] == "amount_spike":
            earlier = _earlier(t["pledges"], e["backer_id"], row.pledged_at)
            assert len(earlier) >= 3
            assert row.amount >= 10 * earlier.amount.mean()  # 20-100x the mean at the anchor
            assert row.amount >= 10 * typical[e["project_id"]]
        elif e["shape"] == "new_account_big":
            age = row.pledged_at - backers.registered_at[e["backer_id"]]
            assert pd.Timedelta(minutes=5) <= age <= pd.Timedelta(minutes=60)
            assert row.amount >= 20 * Decimal(str(typical[e["project_id"]])) * Decimal("0.999")
            assert len(_earlier(t["pledges"], e["backer_id"], row.pledged_at)) == 0
        else:
            assert e["shape"] == "burst"
            bursts.setdefault(e["backer_id"], []).append(e["pledge_id"])
    for ids in bursts.values():
        rows = pl.loc[ids].sort_values("pledged_at")
        # one backer may burst more than once: split where the gap exceeds 10 minutes
        group = (rows.pledged_at.diff() > pd.Timedelta(minutes=10)).cumsum()
        for _, burst in rows.groupby(group):
            assert 6 <= len(burst) <= 12
            assert burst.pledged_at.max() - burst.pledged_at.min() < pd.Timedelta(minutes=10)
            assert burst.project_id.nunique() >= 2


def test_wash_trading_pledges_come_from_the_creators_wallets(any_history: History) -> None:
    t = frames(any_history)
    pl = t["pledges"].set_index("pledge_id")
    projects = t["projects"].set_index("project_id")
    wallets = t["creators"].set_index("creator_id").wallets
    for e in any_history.labels["attacks"]["wash_trading"]:
        source = pl.source_wallet[e["pledge_id"]]
        project = projects.loc[e["project_id"]]
        if e["shape"] == "creator_wallet":
            assert source == project.creator_wallet
        else:
            assert e["shape"] == "creator_other_wallet"
            assert source != project.creator_wallet and source in wallets[e["creator_id"]]
            same_creator = projects[projects.creator_id == e["creator_id"]]
            earlier = same_creator[same_creator.created_at < project.created_at]
            assert source in set(earlier.creator_wallet)


def test_sybil_votes_sway_bad_milestones(any_history: History) -> None:
    t = frames(any_history)
    votes, pl = t["votes"], t["pledges"]
    backers = t["backers"].set_index("backer_id")
    ms = t["milestones"].set_index("milestone_id")
    for e in any_history.labels["attacks"]["sybil_vote"]:
        on_m = votes[votes.milestone_id == e["milestone_id"]]
        theirs = on_m[on_m.backer_id.isin(e["backer_ids"])]
        assert sorted(e["vote_event_ids"]) == sorted("vote:" + theirs.vote_id)
        assert theirs.approve.all()
        assert ms.approval_rate[e["milestone_id"]] >= 0.7  # swayed past the target
        organic = on_m[~on_m.backer_id.isin(e["backer_ids"])]
        share = theirs.vote_weight.sum() / on_m.vote_weight.sum()
        if e["shape"] == "weight_concentration":
            assert 1 <= len(e["backer_ids"]) <= 2
            assert share > 0.5
        else:
            assert e["shape"] == "shared_wallet"
            assert 5 <= len(e["backer_ids"]) <= 15
            sources = pl[pl.backer_id.isin(e["backer_ids"])]
            assert sources.source_wallet.nunique() == 1
            own = set(backers.wallet[e["backer_ids"]])
            assert sources.source_wallet.iloc[0] not in own
            deadline = t["projects"].set_index("project_id").deadline[e["project_id"]]
            registered = backers.registered_at[e["backer_ids"]]
            assert (registered > deadline - pd.Timedelta(days=7)).all()
        if len(organic):
            assert (organic.vote_weight * organic.approve).sum() / organic.vote_weight.sum() < 1


def test_exit_scams_fail_milestones_2_and_3_with_4_and_5_pending(any_history: History) -> None:
    t = frames(any_history)
    projects = t["projects"].set_index("project_id")
    ms = t["milestones"]
    for e in any_history.labels["attacks"]["exit_scam"]:
        p = projects.loc[e["project_id"]]
        assert p.current_funding >= Decimal("1.2") * p.funding_goal
        mine = ms[ms.project_id == e["project_id"]].set_index("index")
        assert list(mine.index) == [1, 2, 3, 4, 5]
        assert mine.approved[1] == True  # noqa: E712 - a nullable boolean
        assert (mine.approval_rate[[2, 3]] < 0.5).all()
        assert (mine.approved[[2, 3]] == False).all()  # noqa: E712
        assert sorted(e["milestone_ids_pending"]) == sorted(mine.milestone_id[[4, 5]])
        assert (mine.voting_opens_at[[4, 5]] > mine.resolved_at[3]).all()
        assert (mine.voting_closes_at[[4, 5]] < END).all()


# --- determinism, options, files ----------------------------------------------------------


def _digests(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())}


def test_same_seed_same_bytes_and_another_seed_other_bytes(tmp_path: Path) -> None:
    write_history(generate_history(3, 0.25), tmp_path / "a")
    write_history(generate_history(3, 0.25), tmp_path / "b")
    write_history(generate_history(4, 0.25), tmp_path / "c")
    a, b, c = (_digests(tmp_path / x) for x in "abc")
    assert sorted(a) == sorted([f"{n}.parquet" for n in TABLES] + ["events.jsonl", "labels.json"])
    assert a == b
    assert all(a[name] != c[name] for name in a)


def test_written_files_round_trip(tmp_path: Path, small: History) -> None:
    write_history(small, tmp_path)
    lines = (tmp_path / "events.jsonl").read_bytes().split(b"\n")
    assert lines[-1] == b"" and lines[:-1] == small.events
    assert json.loads((tmp_path / "labels.json").read_text()) == small.labels
    for name in TABLES:
        assert pq.read_table(tmp_path / f"{name}.parquet").equals(small.tables[name])
    assert not list(tmp_path.glob(".*"))  # no temporary or probe files left behind


def test_a_tiny_scale_still_makes_a_consistent_history() -> None:
    h = generate_history(1, 0.02)
    assert h.labels["counts"]["projects"] == 4
    for line in h.events:
        decode(line)


@pytest.mark.parametrize(
    ("seed", "scale", "message"),
    [
        (1, 0.0, "--scale"),
        (1, -2.0, "--scale"),
        (1, float("nan"), "--scale"),
        (1, float("inf"), "--scale"),
        (1, 5_000.0, "--scale"),
        (-1, 1.0, "--seed"),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(
    seed: int, scale: float, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        generate_history(seed, scale)
    assert info.value.reason == "invalid_option"


def test_an_unwritable_out_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="--out") as info:
        prepare_out_dir(blocker / "out")
    assert info.value.reason == "not_writable"


def test_cli_generate_writes_the_history_and_reports_bad_options(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["generate", "--out", str(tmp_path / "h"), "--scale", "0.1", "--seed", "5"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "h" / "events.jsonl").stat().st_size > 0
    assert "events/s" in result.output and "attacks:" in result.output
    result = runner.invoke(main, ["generate", "--out", str(tmp_path / "x"), "--scale", "0"])
    assert result.exit_code == 2
    assert "error [invalid_option]: --scale must be a number > 0" in result.output
    assert not (tmp_path / "x").exists()
