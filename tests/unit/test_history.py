"""Point-in-time training rows: no leakage from the future, no dependence on input order.

One small generated history (seed 42, scale 0.3: ~3.5k events) is walked whole, cut at
several points, shuffled, and stripped of late pledges; rows are compared exactly (the
same float operations on the same inputs give the same bits).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

import msgspec
import numpy as np
import pytest

from escrowguard.events import (
    AnyEvent,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
    decode,
    to_us,
)
from escrowguard.models.features import (
    PROJECT_FEATURES,
    FeatureWindows,
    PledgeContext,
    VoteContext,
    checkpoint_us,
    pledge_features,
    vote_state_features,
)
from escrowguard.models.history import HistoryMatrices, walk_history
from escrowguard.models.records import VoteRecord
from escrowguard.models.state import MemoryState
from escrowguard.producers.generator import generate_history

WINDOWS = FeatureWindows()
CHECKPOINT = 0.5


@pytest.fixture(scope="module")
def events() -> list[AnyEvent]:
    """A small labelled history, decoded, in the generator's (event-time) order."""
    return [decode(raw) for raw in generate_history(42, 0.3).events]


@pytest.fixture(scope="module")
def full(events: list[AnyEvent]) -> HistoryMatrices:
    return walk_history(events, WINDOWS)


def _rows(h: HistoryMatrices) -> dict[str, list[float]]:
    """Every pledge and vote row, by its event id."""
    out = dict(zip(h.pledges.event_ids, h.pledges.rows, strict=True))
    out.update(zip(h.votes.event_ids, h.votes.rows, strict=True))
    return out


def _snapshots(h: HistoryMatrices) -> dict[str, tuple[list[float], int]]:
    ids, X, y, _ = h.project_snapshots(CHECKPOINT)
    return {pid: (X[i].tolist(), int(y[i])) for i, pid in enumerate(ids)}


def test_the_history_is_clean_and_has_every_row_kind(full: HistoryMatrices) -> None:
    # The comparisons below are only meaningful if there is plenty to compare.
    assert full.rejected == {}
    assert len(full.pledges.rows) > 500 and len(full.votes.rows) > 500
    assert len(full.final_approval) > 30
    assert len(_snapshots(full)) > 40


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.75, 0.95])
def test_appending_later_events_never_changes_earlier_rows(
    events: list[AnyEvent], full: HistoryMatrices, cut: float
) -> None:
    """(a) walk a prefix, then the whole history: every row of the prefix's events, every
    label and every project snapshot the prefix could make are identical."""
    n = int(len(events) * cut)
    prefix = walk_history(events[:n], WINDOWS)
    before, after = _rows(prefix), _rows(full)
    assert before, "the prefix holds pledges or votes"
    for event_id, row in before.items():
        assert after[event_id] == row, event_id
    for milestone_id, rate in prefix.final_approval.items():
        assert full.final_approval[milestone_id] == rate
    early, late = _snapshots(prefix), _snapshots(full)
    for project_id, snapshot in early.items():
        assert late[project_id] == snapshot, project_id


def _twin(p: PledgeCreated, shift: timedelta) -> PledgeCreated:
    """Another pledge by the same backer to the same project, ten times the amount."""
    return msgspec.structs.replace(
        p,
        event_id=f"{p.event_id}-twin",
        pledge_id=f"{p.pledge_id}t",
        amount=p.amount * 10,
        occurred_at=p.occurred_at + shift,
    )


def test_events_with_the_same_timestamp_do_not_see_each_other(
    events: list[AnyEvent], full: HistoryMatrices
) -> None:
    """Add a twin of a pledge at the same time: neither sees the other (the original's row
    is unchanged; the twin's row is that of a pledge with no such predecessor). Moved 1 us
    later, the twin does see the original: the check can fail."""
    pledges = [e for e in events if isinstance(e, PledgeCreated)]
    rows = _rows(full)
    for p in pledges[40 :: len(pledges) // 8]:
        same = _rows(walk_history([*events, _twin(p, timedelta(0))], WINDOWS))
        later = _rows(walk_history([*events, _twin(p, timedelta(microseconds=1))], WINDOWS))
        twin = f"{p.event_id}-twin"
        assert same[p.event_id] == later[p.event_id] == rows[p.event_id], p.event_id
        assert same[twin] != later[twin], twin


def test_rows_do_not_depend_on_input_order(events: list[AnyEvent], full: HistoryMatrices) -> None:
    """(b) a shuffled history gives the same rows, in the same order, and the same labels."""
    shuffled = list(events)
    random.Random(7).shuffle(shuffled)
    assert shuffled != events
    again = walk_history(shuffled, WINDOWS)
    assert again.pledges.event_ids == full.pledges.event_ids
    assert again.votes.event_ids == full.votes.event_ids
    assert np.array_equal(again.pledges.X, full.pledges.X)
    assert np.array_equal(again.votes.X, full.votes.X)
    assert again.final_approval == full.final_approval
    assert _snapshots(again) == _snapshots(full)


def test_a_state_holding_the_whole_future_in_any_order_gives_the_walks_rows(
    events: list[AnyEvent], full: HistoryMatrices
) -> None:
    """(b, streaming side) apply every event, shuffled, to one state first, then featurise
    each pledge and vote from it: as-of reads hide the future, so the rows are the walk's."""
    shuffled = list(events)
    random.Random(11).shuffle(shuffled)
    state = MemoryState()
    for event in shuffled:
        state.apply(event)
    rows = _rows(full)
    checked = 0
    for event in events[::3]:
        if isinstance(event, PledgeCreated):
            ctx = state.context_for(event, WINDOWS)
            assert isinstance(ctx, PledgeContext)
            row = pledge_features(
                event.occurred_us,
                event.amount_cents,
                event.backer_id,
                event.source_wallet,
                ctx,
                WINDOWS,
            )
        elif isinstance(event, VoteCast):
            vctx = state.context_for(event, WINDOWS)
            assert isinstance(vctx, VoteContext) and vctx.milestone is not None
            this = VoteRecord(
                event.occurred_us, event.event_id, event.backer_id, event.approve, event.vote_weight
            )
            row = vote_state_features(
                event.occurred_us,
                [*vctx.votes, this],
                vctx.milestone,
                vctx.project,
                vctx.project_pledges,
                vctx.resolutions,
                WINDOWS,
            )
        else:
            continue
        assert row == rows[event.event_id], event.event_id
        checked += 1
    assert checked > 300


def _checkpoints(events: Sequence[AnyEvent]) -> dict[str, int]:
    projects = [e for e in events if isinstance(e, ProjectCreated)]
    out = {}
    for p in projects:
        span = to_us(p.deadline) - p.occurred_us
        out[p.project_id] = p.occurred_us + int(span * CHECKPOINT)
    return out


def test_project_snapshots_only_count_pledges_before_the_checkpoint(
    events: list[AnyEvent], full: HistoryMatrices
) -> None:
    """(c) pledge_count and unique_backers equal a count of the raw pledges strictly before
    each project's checkpoint, and checkpoints are where ``checkpoint_us`` puts them."""
    ids, X, _, at = full.project_snapshots(CHECKPOINT)
    checkpoints = _checkpoints(events)
    count, backers = (
        PROJECT_FEATURES.index("pledge_count"),
        PROJECT_FEATURES.index("unique_backers"),
    )
    pledges = [e for e in events if isinstance(e, PledgeCreated)]
    for i, pid in enumerate(ids):
        assert at[i] == checkpoints[pid] == checkpoint_us(full.state.projects[pid], CHECKPOINT)
        early = [p for p in pledges if p.project_id == pid and p.occurred_us < at[i]]
        assert X[i, count] == len(early)
        assert X[i, backers] == len({p.backer_id for p in early})


def test_removing_every_pledge_after_the_checkpoint_leaves_snapshots_unchanged(
    events: list[AnyEvent], full: HistoryMatrices
) -> None:
    """(c) drop all pledges at or after their project's checkpoint: the labels move (less
    money arrives), the snapshot features do not."""
    checkpoints = _checkpoints(events)
    kept = [
        e
        for e in events
        if not (isinstance(e, PledgeCreated) and e.occurred_us >= checkpoints[e.project_id])
    ]
    assert len(kept) < len(events)
    stripped = _snapshots(walk_history(kept, WINDOWS))
    original = _snapshots(full)
    common = set(stripped) & set(original)
    assert len(common) > 40
    assert all(stripped[p][0] == original[p][0] for p in common)
    assert any(stripped[p][1] != original[p][1] for p in common), "labels did depend on them"
