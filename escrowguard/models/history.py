"""Walk a history in event-time order and build point-in-time feature matrices for training.

One pass: each event is checked and featurised against the state as of its own time, then
applied. Appending later events to a history can never change an earlier event's features,
because nothing after an event is visible when its features are computed (tested).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from escrowguard.errors import DataError, DecodeError
from escrowguard.events import (
    AnyEvent,
    MilestoneResolved,
    PledgeCreated,
    VoteCast,
    decode,
)
from escrowguard.models.checks import check_event
from escrowguard.models.features import (
    PLEDGE_FEATURES,
    PROJECT_FEATURES,
    VOTE_FEATURES,
    FeatureWindows,
    PledgeContext,
    VoteContext,
    checkpoint_us,
    pledge_features,
    project_features,
    vote_state_features,
)
from escrowguard.models.records import VoteRecord
from escrowguard.models.state import MemoryState
from escrowguard.reasons import Reason


@dataclass
class PledgeRows:
    """One row per accepted pledge (order: ``PLEDGE_FEATURES``)."""

    event_ids: list[str] = field(default_factory=list)
    project_ids: list[str] = field(default_factory=list)
    backer_ids: list[str] = field(default_factory=list)
    t_us: list[int] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)

    @property
    def X(self) -> np.ndarray:  # noqa: N802 - the usual name for a feature matrix
        """The feature matrix."""
        return np.asarray(self.rows, dtype=np.float64).reshape(-1, len(PLEDGE_FEATURES))


@dataclass
class VoteRows:
    """One row per accepted vote: the milestone's vote state just after it."""

    event_ids: list[str] = field(default_factory=list)
    milestone_ids: list[str] = field(default_factory=list)
    t_us: list[int] = field(default_factory=list)
    rows: list[list[float]] = field(default_factory=list)

    @property
    def X(self) -> np.ndarray:  # noqa: N802
        """The feature matrix."""
        return np.asarray(self.rows, dtype=np.float64).reshape(-1, len(VOTE_FEATURES))


@dataclass
class HistoryMatrices:
    """Everything training needs from one pass over a history."""

    state: MemoryState
    pledges: PledgeRows
    votes: VoteRows
    final_approval: dict[str, float]  # milestone_id -> final approval rate (the label)
    resolved_at: dict[str, int]  # milestone_id -> resolution time (us)
    rejected: dict[str, Reason]  # event_id -> why the history check rejected it
    start_us: int
    end_us: int
    event_count: int

    def project_snapshots(
        self, fraction: float
    ) -> tuple[list[str], np.ndarray, np.ndarray, list[int]]:
        """Per finished project: features at ``fraction`` of its campaign and the label
        "funded by the deadline". Returns (project_ids, X, y, checkpoint_us)."""
        ids, rows, labels, checkpoints = [], [], [], []
        for pid in sorted(self.state.projects):
            project = self.state.projects[pid]
            if project.deadline_us > self.end_us:
                continue  # still running at the end of the history: no label yet
            at = checkpoint_us(project, fraction)
            pledges = self.state.project_pledges.get(pid, [])
            before = [p for p in pledges if p.t_us < at]
            milestones = [m for m in self.state.project_milestones.get(pid, []) if m.t_us < at]
            funded = sum(p.amount_cents for p in pledges if p.t_us < project.deadline_us)
            ids.append(pid)
            rows.append(project_features(at, project, before, len(milestones)))
            labels.append(int(funded >= project.goal_cents))
            checkpoints.append(at)
        X = np.asarray(rows, dtype=np.float64).reshape(-1, len(PROJECT_FEATURES))
        return ids, X, np.asarray(labels, dtype=np.int64), checkpoints


def walk_history(events: Iterable[AnyEvent], windows: FeatureWindows) -> HistoryMatrices:
    """One point-in-time pass over ``events`` (any order in; processed by event time)."""
    ordered = sorted(events, key=lambda e: (e.occurred_us, e.event_id))
    if not ordered:
        raise DataError("the history is empty: nothing to train on")
    state = MemoryState()
    pledges, votes = PledgeRows(), VoteRows()
    final_approval: dict[str, float] = {}
    resolved_at: dict[str, int] = {}
    rejected: dict[str, Reason] = {}
    for event in ordered:
        if event.event_id in state.seen:
            rejected[event.event_id] = Reason.DUPLICATE_EVENT
            continue
        ctx = state.context_for(event, windows)
        reason = check_event(event, ctx)
        if reason is not None:
            rejected[event.event_id] = reason
            continue
        if isinstance(event, PledgeCreated):
            assert isinstance(ctx, PledgeContext)
            pledges.event_ids.append(event.event_id)
            pledges.project_ids.append(event.project_id)
            pledges.backer_ids.append(event.backer_id)
            pledges.t_us.append(event.occurred_us)
            pledges.rows.append(
                pledge_features(
                    event.occurred_us,
                    event.amount_cents,
                    event.backer_id,
                    event.source_wallet,
                    ctx,
                    windows,
                )
            )
        elif isinstance(event, VoteCast):
            assert isinstance(ctx, VoteContext) and ctx.milestone is not None
            this_vote = VoteRecord(
                event.occurred_us,
                event.event_id,
                event.backer_id,
                event.approve,
                event.vote_weight,
            )
            votes.event_ids.append(event.event_id)
            votes.milestone_ids.append(event.milestone_id)
            votes.t_us.append(event.occurred_us)
            votes.rows.append(
                vote_state_features(
                    event.occurred_us,
                    [*ctx.votes, this_vote],
                    ctx.milestone,
                    ctx.project,
                    ctx.project_pledges,
                    ctx.resolutions,
                    windows,
                )
            )
        elif isinstance(event, MilestoneResolved):
            final_approval[event.milestone_id] = event.approval_rate
            resolved_at[event.milestone_id] = event.occurred_us
        state.apply(event)
    return HistoryMatrices(
        state=state,
        pledges=pledges,
        votes=votes,
        final_approval=final_approval,
        resolved_at=resolved_at,
        rejected=rejected,
        start_us=ordered[0].occurred_us,
        end_us=ordered[-1].occurred_us,
        event_count=len(ordered),
    )


def read_events(path: Path, max_bytes: int = 64 * 1024) -> Iterator[AnyEvent]:
    """Decode an events.jsonl (or a generator output dir holding one), strictly.

    A line that breaks the contract stops the read with its line number: training on a
    silently filtered history would hide a broken export.
    """
    if path.is_dir():
        path = path / "events.jsonl"
    if not path.exists():
        raise DataError(f"no events file at {path}")
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            try:
                yield decode(line, max_bytes=max_bytes)
            except DecodeError as exc:
                raise DataError(
                    f"{path}:{number}: invalid event [{exc.reason}]: {exc}", "invalid_event"
                ) from None
