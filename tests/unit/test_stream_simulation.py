"""Same history, same decisions: whatever the partitioning, worker count, interleaving or
crashes (in-process simulation; the real-server versions are in tests/faults)."""

from __future__ import annotations

import collections
import functools

import pytest

from escrowguard.events import decode, encode
from escrowguard.models.features import FeatureWindows
from escrowguard.models.history import walk_history
from escrowguard.outputs import DETERMINISTIC_KINDS, Alert, MilestoneDecision, PayoutFreeze
from escrowguard.producers.generator import generate_history
from tests.unit.streamsim import Deployment, output_id, simulate


@functools.cache
def history_lines() -> tuple[bytes, ...]:
    return tuple(generate_history(7, 0.4).events)


def decided(dep: Deployment) -> dict[str, frozenset[str]]:
    out = dep.collector.outputs
    return {
        "alerts": frozenset(
            o.alert_id for o in out if isinstance(o, Alert) and o.kind in DETERMINISTIC_KINDS
        ),
        "freezes": frozenset(output_id(o) for o in out if isinstance(o, PayoutFreeze)),
        "decisions": frozenset(
            o.decision_id + o.release_arm + o.route for o in out if isinstance(o, MilestoneDecision)
        ),
    }


@functools.cache
def baseline() -> dict[str, frozenset[str]]:
    return decided(simulate(history_lines(), partitions=1, workers=1, seed=0))


def test_baseline_exercises_every_path() -> None:
    kinds = collections.Counter(
        o.kind for o in simulate(history_lines(), 1, 1, 0).collector.outputs if isinstance(o, Alert)
    )
    assert {
        "pledge_anomaly",
        "wash_trading",
        "sybil_vote",
        "exit_scam",
        "milestone_risk",
        "project_at_risk",
    } <= set(kinds), kinds
    assert baseline()["freezes"] and baseline()["decisions"]


@pytest.mark.parametrize(
    ("partitions", "workers", "seed"),
    [
        (1, 1, 1),
        (4, 1, 2),
        (4, 2, 3),
        (4, 4, 4),
        (3, 2, 5),
    ],
)
def test_same_decisions_for_any_layout(partitions: int, workers: int, seed: int) -> None:
    assert decided(simulate(history_lines(), partitions, workers, seed)) == baseline()


def test_same_decisions_through_crashes() -> None:
    dep = simulate(history_lines(), partitions=4, workers=2, seed=9, crash_rate=0.05)
    assert dep.collector.crashes >= 5
    assert decided(dep) == baseline()
    redelivered = sum(w.metrics.get("escrowguard_redeliveries_total") for w in dep.workers)
    assert redelivered > 0  # the crashes really re-delivered applied events


def test_state_equals_offline_walk() -> None:
    """The streamed store holds exactly the history the offline walk applied."""
    dep = simulate(history_lines(), partitions=4, workers=2, seed=11)
    offline = walk_history([decode(x) for x in history_lines()], FeatureWindows())
    state = dep.store.state
    assert set(dep.store.seen) == offline.state.seen
    assert dict(state.project_pledges) == dict(offline.state.project_pledges)
    assert dict(state.milestone_votes) == dict(offline.state.milestone_votes)
    assert state.backers == offline.state.backers


def test_no_milestone_has_two_freeze_ids() -> None:
    dep = simulate(history_lines(), partitions=4, workers=2, seed=12)
    by_milestone: dict[str, set[str]] = collections.defaultdict(set)
    for o in dep.collector.outputs:
        if isinstance(o, PayoutFreeze) and o.action == "freeze":
            by_milestone[o.milestone_id].add(o.freeze_id)
    assert by_milestone and all(len(ids) == 1 for ids in by_milestone.values())


def test_noise_is_dead_lettered_and_changes_nothing() -> None:
    lines = history_lines()
    first_pledge = next(x for x in lines if b'"pledge_created"' in x)
    noise = [
        ("pledges", b"\xff\xfe not utf-8"),
        ("pledges", b"{not json"),
        ("votes", b'{"event_type":"vote_cast"}'),
        ("projects", b'{"event_type":"project_created","event_id":"x","schema_version":9}'),
        ("backers", first_pledge),  # a valid event on the wrong topic
    ]
    dup = decode(first_pledge)
    dep = simulate([*list(lines), encode(dup)], partitions=4, workers=2, seed=13, extra=noise)
    assert decided(dep) == baseline()
    reasons = collections.Counter(
        o.reason for o in dep.collector.outputs if not hasattr(o, "model_version")
    )
    assert reasons == {
        "not_utf8": 1,
        "not_json": 1,
        "missing_field": 1,
        "unsupported_schema_version": 1,
        "wrong_topic": 1,
    }
    assert sum(w.metrics.get("escrowguard_duplicates_total") for w in dep.workers) == 1
