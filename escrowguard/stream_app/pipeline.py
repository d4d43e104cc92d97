"""One batch, decided purely: stored state + events in -> writes + outputs out.

The adapter (``worker.py``) does the I/O around this: it reads the batch's as-of contexts
from the store (one Lua call), calls ``BatchProcessor.process``, writes ``writes`` (one more
Lua call), sends ``outputs``, and only then commits offsets. Everything here is a plain
function of its arguments, so a redelivered batch decides exactly what the first delivery
decided, and the whole pipeline runs in unit tests against ``MemoryStore``.
"""

from __future__ import annotations

import bisect
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec
import numpy as np

from escrowguard.events import (
    AnyEvent,
    MilestoneResolved,
    PledgeCreated,
    VoteCast,
    from_us,
)
from escrowguard.models.bandit import BanditState, choose_arm, from_counts
from escrowguard.models.checks import check_event
from escrowguard.models.features import (
    ANOMALY_FEATURES,
    PLEDGE_FEATURES,
    PROJECT_FEATURES,
    VOTE_FEATURES,
    FeatureWindows,
    PledgeContext,
    ResolutionContext,
    VoteContext,
    checkpoint_us,
    pledge_features,
    project_features,
    vote_state_features,
)
from escrowguard.models.records import MilestoneRef, ResolutionRecord, VoteRecord
from escrowguard.models.rules import (
    exit_scam,
    pending_milestones,
    route,
    severity_for_risk,
    sybil_vote,
    wash_trading,
)
from escrowguard.models.state import Effects, MemoryState, effects_of, with_overlay
from escrowguard.outputs import (
    Alert,
    AlertKind,
    AlertReason,
    AnyOutput,
    MilestoneDecision,
    PayoutFreeze,
    freeze_id,
    make_id,
)
from escrowguard.reasons import Reason
from escrowguard.settings import BanditSettings, ThresholdSettings
from escrowguard.stream_app.explain import explain_pledge
from escrowguard.stream_app.monitor import Monitor
from escrowguard.stream_app.ordering import Pending

log = logging.getLogger(__name__)
DAY_US: Final = 86_400 * 1_000_000
_PLEDGE_INDEX: Final = {name: i for i, name in enumerate(PLEDGE_FEATURES)}
_VOTE_INDEX: Final = {name: i for i, name in enumerate(VOTE_FEATURES)}
_ANOMALY_COLUMNS: Final = [_PLEDGE_INDEX[name] for name in ANOMALY_FEATURES]
#: After-vote feature rows kept for the next vote of the same milestone (its "before").
VOTE_ROWS_KEPT: Final = 8192


class ModelSet(Protocol):
    """What the pipeline needs from a model bundle (``stream_app.serving.ServingModels``)."""

    version: str
    anomaly_threshold: float
    training_end_us: int

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """Higher = more anomalous; one per row of ANOMALY_FEATURES columns."""

    def risk(self, X: np.ndarray) -> np.ndarray:
        """P(final approval < target) per row of VOTE_FEATURES."""

    def success(self, X: np.ndarray) -> np.ndarray:
        """P(funded by the deadline) per row of PROJECT_FEATURES."""

    def reference(self, feature: str) -> tuple[float, float]:
        """(median, spread) of a feature on the training history."""

    def reference_mean(self, name: str) -> tuple[float, float]:
        """(mean, standard deviation) of a feature or score on the training history."""


class MissingBanditDays(Exception):  # noqa: N818 - a request, not a failure
    """The batch needs posteriors the read did not fetch (a milestone created in the same
    batch as its first vote); the worker reads them and decides the batch again."""

    def __init__(self, days: set[int]) -> None:
        super().__init__(f"bandit days not read: {sorted(days)}")
        self.days = days


@dataclass
class EventRead:
    """What the store returned for one event: its dedupe record and as-of context."""

    seen: str | None  # the position tag (``Position.tag``) recorded when it was applied, if it was
    context: object


@dataclass
class BatchReads:
    """The store's answer for a batch of candidates."""

    frontier_us: int  # F: every input partition has applied all events before this
    processed_max_us: int  # the latest event time processed anywhere (lateness bound)
    events: list[EventRead]  # one per eligible candidate, in order
    bandit: dict[int, dict[str, tuple[int, int]]]  # day -> arm -> (successes, failures)


@dataclass
class Writes:
    """Everything the batch changes in the store; applied atomically by one Lua call."""

    seen: list[tuple[str, int, str]] = field(default_factory=list)  # (event_id, t_us, pos)
    effects: list[Effects] = field(default_factory=list)
    arms: dict[str, str] = field(default_factory=dict)  # milestone_id -> release arm
    labels: int = 0  # new milestone outcomes after the bundle's training history


@dataclass
class DeadLetterNote:
    """An event the history rejects, for the dead-letter topic."""

    pending: Pending
    reason: Reason
    detail: str


@dataclass
class BatchOutcome:
    """The decision for one batch."""

    processed: list[Pending]
    writes: Writes
    outputs: list[AnyOutput]
    dead_letters: list[DeadLetterNote]
    duplicates: int = 0
    redeliveries: int = 0
    outcomes_from_us: int | None = None  # earliest milestone outcome this batch applies
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class _VoteJob:
    pending: Pending
    event: VoteCast
    milestone: MilestoneRef
    after: list[float]
    before: list[float] | None
    redelivery: bool


class BatchProcessor:
    """Decides a batch: checks, features, model calls (one per model), rules, outputs."""

    def __init__(
        self,
        models: ModelSet,
        windows: FeatureWindows,
        thresholds: ThresholdSettings,
        bandit: BanditSettings,
    ) -> None:
        self.models = models
        self.windows = windows
        self.th = thresholds
        self.bandit = bandit
        self.monitor: Monitor | None = None  # per-worker drift and online evaluation
        self._retrain_sent: set[str] = set()
        self._vote_rows: OrderedDict[tuple[object, ...], list[float]] = OrderedDict()

    def monitor_alerts(self, labels_total: int, wall: datetime) -> list[Alert]:
        """Operational alerts: drift, and retraining once enough new labels arrived."""
        out = self.monitor.take_alerts(wall) if self.monitor is not None else []
        if labels_total >= self.th.retrain_after_labels:
            version = self.models.version
            alert_id = make_id("al", AlertKind.RETRAIN_NEEDED, version, "labels")
            if alert_id not in self._retrain_sent:
                self._retrain_sent.add(alert_id)
                out.append(
                    Alert(
                        alert_id=alert_id,
                        kind=AlertKind.RETRAIN_NEEDED,
                        severity="low",
                        score=float(labels_total),
                        threshold=float(self.th.retrain_after_labels),
                        project_id=None,
                        milestone_id=None,
                        backer_id=None,
                        event_ids=[],
                        reasons=[
                            AlertReason(
                                "new_labels",
                                labels_total,
                                self.th.retrain_after_labels,
                                f"{labels_total} milestone outcomes arrived since bundle {version} "
                                "was trained",
                            )
                        ],
                        occurred_at=wall,
                        emitted_at=wall,
                        model_version=version,
                    )
                )
        return out

    def process(
        self, candidates: Sequence[Pending], reads: BatchReads, now: datetime
    ) -> BatchOutcome:
        """Decide the eligible prefix of ``candidates`` (``len(reads.events)`` of them)."""
        eligible = list(candidates[: len(reads.events)])
        overlay = MemoryState()
        writes = Writes()
        outputs: list[AnyOutput] = []
        dead: list[DeadLetterNote] = []
        out = BatchOutcome(eligible, writes, outputs, dead)
        pledge_jobs: list[tuple[Pending, PledgeCreated, PledgeContext, list[float], bool]] = []
        checkpoint_jobs: list[tuple[Pending, PledgeCreated, list[float], int]] = []
        vote_jobs: list[_VoteJob] = []
        resolution_jobs: list[tuple[Pending, MilestoneResolved, ResolutionContext, bool]] = []

        outcomes_from_us: int | None = None  # earliest milestone outcome decided in-batch
        batch_outcomes: list[tuple[int, MilestoneRef, bool]] = []
        in_batch: set[str] = set()
        for pending, read in zip(eligible, reads.events, strict=True):
            event = pending.event
            position = pending.pos.tag()
            redelivery = False
            if event.event_id in in_batch:
                out.duplicates += 1  # the same event id twice within one batch
                continue
            in_batch.add(event.event_id)
            if read.seen is not None:
                if read.seen != position:
                    out.duplicates += 1
                    continue
                redelivery = True
                out.redeliveries += 1
            elif pending.t_us < reads.processed_max_us:
                dead.append(
                    DeadLetterNote(
                        pending,
                        Reason.TOO_LATE,
                        "event time is before events already scored: it arrived later than "
                        "the ordering bound (docs/ordering.md)",
                    )
                )
                writes.seen.append((event.event_id, pending.t_us, position))
                continue
            try:
                ctx = with_overlay(read.context, overlay, event, self.windows)
                reason = check_event(event, ctx)
                if reason is not None:
                    dead.append(DeadLetterNote(pending, reason, _explain_reason(reason, event)))
                    if not redelivery:
                        writes.seen.append((event.event_id, pending.t_us, position))
                    continue
                if isinstance(event, PledgeCreated):
                    assert isinstance(ctx, PledgeContext)
                    row = pledge_features(
                        pending.t_us,
                        event.amount_cents,
                        event.backer_id,
                        event.source_wallet,
                        ctx,
                        self.windows,
                    )
                    pledge_jobs.append((pending, event, ctx, row, redelivery))
                    job = self._checkpoint(pending, event, ctx)
                    if job is not None:
                        checkpoint_jobs.append(job)
                elif isinstance(event, VoteCast):
                    assert isinstance(ctx, VoteContext) and ctx.milestone is not None
                    vote_jobs.append(self._vote_job(pending, event, ctx, redelivery))
                elif isinstance(event, MilestoneResolved):
                    assert isinstance(ctx, ResolutionContext)
                    resolution_jobs.append((pending, event, ctx, redelivery))
                    if not redelivery:
                        outcomes_from_us = min(outcomes_from_us or pending.t_us, pending.t_us)
                        if ctx.votes and ctx.milestone is not None:
                            # an outcome the bandit learns from (the milestone had an arm)
                            batch_outcomes.append((pending.t_us, ctx.milestone, event.approved))
            except Exception as exc:  # one poison event must not stop the others
                dead.append(_processing_error(pending, exc))
                if not redelivery:
                    writes.seen.append((event.event_id, pending.t_us, position))
                continue
            if not redelivery:
                overlay.apply(event)
                writes.seen.append((event.event_id, pending.t_us, position))
                writes.effects.append(effects_of(event))
                if isinstance(event, MilestoneResolved) and (
                    pending.t_us > self.models.training_end_us
                ):
                    writes.labels += 1

        out.outcomes_from_us = outcomes_from_us
        version = self.models.version
        emitted = now
        arms = _Arms(self, reads, batch_outcomes)
        stages: list[tuple[list[Any], Callable[[list[Any], list[AnyOutput]], None]]] = [
            (pledge_jobs, lambda jobs, o: self._score_pledges(jobs, o, version, emitted)),
            (checkpoint_jobs, lambda jobs, o: self._score_checkpoints(jobs, o, version, emitted)),
            (
                vote_jobs,
                lambda jobs, o: self._score_votes(jobs, arms, writes, o, version, emitted),
            ),
            (resolution_jobs, lambda jobs, o: self._score_resolutions(jobs, o, version, emitted)),
        ]
        for jobs, stage in stages:
            _isolated(jobs, stage, outputs, dead)
        out.counts = {
            "pledges": len(pledge_jobs),
            "votes": len(vote_jobs),
            "resolutions": len(resolution_jobs),
        }
        return out

    def score_pledge_now(self, pending: Pending, stored: object) -> dict[str, object]:
        """Score one pledge on demand against the stored state (nothing written or sent)."""
        event = pending.event
        assert isinstance(event, PledgeCreated)
        reason = check_event(event, stored)
        if reason is not None:
            return {"event_id": event.event_id, "rejected": str(reason)}
        assert isinstance(stored, PledgeContext) and stored.project is not None
        row = pledge_features(
            pending.t_us,
            event.amount_cents,
            event.backer_id,
            event.source_wallet,
            stored,
            self.windows,
        )
        X = np.asarray([row], dtype=np.float64)
        score = float(self.models.anomaly_scores(X[:, _ANOMALY_COLUMNS])[0])
        values = dict(zip(PLEDGE_FEATURES, row, strict=True))
        wash = wash_trading(values, event.source_wallet, stored.project.creator_wallet)
        return {
            "event_id": event.event_id,
            "model_version": self.models.version,
            "anomaly_score": round(score, 6),
            "threshold": round(self.models.anomaly_threshold, 6),
            "anomalous": score >= self.models.anomaly_threshold,
            "reasons": [
                msgspec.to_builtins(r)
                for r in explain_pledge(values, event.amount_cents, stored, self.models)
            ],
            "wash_trading": [msgspec.to_builtins(r) for r in wash or []],
            "features": {k: round(v, 6) for k, v in values.items()},
        }

    # --- pledges ---

    def _checkpoint(
        self, pending: Pending, event: PledgeCreated, ctx: PledgeContext
    ) -> tuple[Pending, PledgeCreated, list[float], int] | None:
        """The first pledge at or after the project's checkpoint scores its success."""
        project = ctx.project
        if project is None:
            return None
        at = checkpoint_us(project, self.th.project_checkpoint_fraction)
        if pending.t_us < at or any(p.t_us >= at for p in ctx.project_pledges):
            return None
        before = [p for p in ctx.project_pledges if p.t_us < at]
        milestones = sum(1 for m in ctx.milestones if m.t_us < at)
        return pending, event, project_features(at, project, before, milestones), at

    def _score_pledges(
        self,
        jobs: list[tuple[Pending, PledgeCreated, PledgeContext, list[float], bool]],
        outputs: list[AnyOutput],
        version: str,
        emitted: datetime,
    ) -> None:
        if not jobs:
            return
        X = np.asarray([row for _, _, _, row, _ in jobs], dtype=np.float64)
        scores = self.models.anomaly_scores(X[:, _ANOMALY_COLUMNS])
        threshold = self.models.anomaly_threshold
        for (_pending, event, ctx, row, _), score in zip(jobs, scores, strict=True):
            values = dict(zip(PLEDGE_FEATURES, row, strict=True))
            occurred = event.occurred_at
            if score >= threshold:
                outputs.append(
                    Alert(
                        alert_id=make_id("al", AlertKind.PLEDGE_ANOMALY, event.event_id, version),
                        kind=AlertKind.PLEDGE_ANOMALY,
                        severity=severity_for_risk(float(score), threshold),
                        score=round(float(score), 6),
                        threshold=round(threshold, 6),
                        project_id=event.project_id,
                        milestone_id=None,
                        backer_id=event.backer_id,
                        event_ids=[event.event_id],
                        reasons=explain_pledge(values, event.amount_cents, ctx, self.models),
                        occurred_at=occurred,
                        emitted_at=emitted,
                        model_version=version,
                    )
                )
            assert ctx.project is not None
            reasons = wash_trading(values, event.source_wallet, ctx.project.creator_wallet)
            if reasons:
                outputs.append(
                    Alert(
                        alert_id=make_id("al", AlertKind.WASH_TRADING, event.event_id, version),
                        kind=AlertKind.WASH_TRADING,
                        severity="high",
                        score=1.0,
                        threshold=1.0,
                        project_id=event.project_id,
                        milestone_id=None,
                        backer_id=event.backer_id,
                        event_ids=[event.event_id],
                        reasons=reasons,
                        occurred_at=occurred,
                        emitted_at=emitted,
                        model_version=version,
                    )
                )
        if self.monitor is not None:
            fresh = [i for i, j in enumerate(jobs) if not j[4]]
            self.monitor.observe_pledges([jobs[i] for i in fresh], X[fresh], scores[fresh])

    def _score_checkpoints(
        self,
        jobs: list[tuple[Pending, PledgeCreated, list[float], int]],
        outputs: list[AnyOutput],
        version: str,
        emitted: datetime,
    ) -> None:
        if not jobs:
            return
        probs = self.models.success(np.asarray([j[2] for j in jobs], dtype=np.float64))
        limit = self.th.project_at_risk_below
        for (_, event, row, at), prob in zip(jobs, probs, strict=True):
            if prob >= limit:
                continue
            values = dict(zip(PROJECT_FEATURES, row, strict=True))
            outputs.append(
                Alert(
                    alert_id=make_id("al", AlertKind.PROJECT_AT_RISK, event.project_id, version),
                    kind=AlertKind.PROJECT_AT_RISK,
                    severity="medium",
                    score=round(float(prob), 6),
                    threshold=limit,
                    project_id=event.project_id,
                    milestone_id=None,
                    backer_id=None,
                    event_ids=[event.event_id],
                    reasons=[
                        AlertReason(
                            "success_probability",
                            round(float(prob), 4),
                            limit,
                            f"predicted chance of reaching the goal is {prob:.0%} at "
                            f"{self.th.project_checkpoint_fraction:.0%} of the campaign",
                        ),
                        AlertReason(
                            "pledge_count",
                            values["pledge_count"],
                            self.models.reference("pledge_count")[0],
                            f"{int(values['pledge_count'])} pledges from "
                            f"{int(values['unique_backers'])} backers so far",
                        ),
                    ],
                    occurred_at=from_us(at),
                    emitted_at=emitted,
                    model_version=version,
                )
            )

    # --- votes ---

    def _vote_job(
        self, pending: Pending, event: VoteCast, ctx: VoteContext, redelivery: bool
    ) -> _VoteJob:
        assert ctx.milestone is not None
        this = VoteRecord(
            pending.t_us, event.event_id, event.backer_id, event.approve, event.vote_weight
        )
        votes = [*ctx.votes, this]
        after = vote_state_features(
            pending.t_us,
            votes,
            ctx.milestone,
            ctx.project,
            ctx.project_pledges,
            ctx.resolutions,
            self.windows,
        )
        before = None
        if ctx.votes:
            # the state after the previous vote: usually that vote's own "after" row
            last = ctx.votes[-1]
            pledges = _before(ctx.project_pledges, last.t_us)
            resolutions = _before(ctx.resolutions, last.t_us)
            key = _vote_state_key(ctx.milestone.milestone_id, ctx.votes, pledges, resolutions)
            before = self._vote_rows.get(key)
            if before is None:
                before = vote_state_features(
                    last.t_us,
                    ctx.votes,
                    ctx.milestone,
                    ctx.project,
                    pledges,
                    resolutions,
                    self.windows,
                )
        key = _vote_state_key(
            ctx.milestone.milestone_id, votes, ctx.project_pledges, ctx.resolutions
        )
        self._vote_rows[key] = after
        if len(self._vote_rows) > VOTE_ROWS_KEPT:
            self._vote_rows.popitem(last=False)
        return _VoteJob(pending, event, ctx.milestone, after, before, redelivery)

    def _score_votes(
        self,
        jobs: list[_VoteJob],
        arms: _Arms,
        writes: Writes,
        outputs: list[AnyOutput],
        version: str,
        emitted: datetime,
    ) -> None:
        if not jobs:
            return
        rows = [j.after for j in jobs] + [j.before for j in jobs if j.before is not None]
        risks = self.models.risk(np.asarray(rows, dtype=np.float64))
        after_risk = risks[: len(jobs)]
        before_iter = iter(risks[len(jobs) :])
        th = self.th
        for job, raw_risk in zip(jobs, after_risk, strict=True):
            prior = float(next(before_iter)) if job.before is not None else None
            risk = float(raw_risk)
            ev = job.event
            occurred = ev.occurred_at
            f_after = dict(zip(VOTE_FEATURES, job.after, strict=True))
            fired: list[Alert] = []
            if risk >= th.risk_freeze_at and (prior is None or prior < th.risk_freeze_at):
                fired.append(
                    Alert(
                        alert_id=make_id("al", AlertKind.MILESTONE_RISK, ev.milestone_id, version),
                        kind=AlertKind.MILESTONE_RISK,
                        severity=severity_for_risk(risk, th.risk_freeze_at),
                        score=round(risk, 6),
                        threshold=th.risk_freeze_at,
                        project_id=ev.project_id,
                        milestone_id=ev.milestone_id,
                        backer_id=None,
                        event_ids=[ev.event_id],
                        reasons=_risk_reasons(f_after, risk, th),
                        occurred_at=occurred,
                        emitted_at=emitted,
                        model_version=version,
                    )
                )
            sybil_after = sybil_vote(f_after, th)
            sybil_before = (
                sybil_vote(dict(zip(VOTE_FEATURES, job.before, strict=True)), th)
                if job.before is not None
                else None
            )
            if sybil_after and not sybil_before:
                fired.append(
                    Alert(
                        alert_id=make_id("al", AlertKind.SYBIL_VOTE, ev.milestone_id, version),
                        kind=AlertKind.SYBIL_VOTE,
                        severity="high",
                        score=round(f_after["weight_hhi"], 6),
                        threshold=th.sybil_max_hhi,
                        project_id=ev.project_id,
                        milestone_id=ev.milestone_id,
                        backer_id=None,
                        event_ids=[ev.event_id],
                        reasons=sybil_after,
                        occurred_at=occurred,
                        emitted_at=emitted,
                        model_version=version,
                    )
                )
            if fired:
                outputs.extend(fired)
                outputs.append(
                    PayoutFreeze(
                        freeze_id=freeze_id(ev.milestone_id),
                        action="freeze",
                        project_id=ev.project_id,
                        milestone_id=ev.milestone_id,
                        reason=",".join(a.kind for a in fired),
                        risk_score=round(risk, 6),
                        alert_ids=[a.alert_id for a in fired],
                        occurred_at=occurred,
                        emitted_at=emitted,
                        model_version=version,
                    )
                )
            route_now = route(risk, th)
            if prior is None or route(prior, th) != route_now:
                arm = arms.arm(job.milestone)
                writes.arms[ev.milestone_id] = arm
                outputs.append(
                    MilestoneDecision(
                        decision_id=make_id("dc", ev.milestone_id, ev.event_id, version),
                        milestone_id=ev.milestone_id,
                        project_id=ev.project_id,
                        route=route_now,
                        release_arm=arm,
                        risk_score=round(risk, 6),
                        event_id=ev.event_id,
                        occurred_at=occurred,
                        emitted_at=emitted,
                        model_version=version,
                    )
                )
        if self.monitor is not None:
            fresh = [i for i, j in enumerate(jobs) if not j.redelivery]
            self.monitor.observe_votes([jobs[i] for i in fresh], after_risk[fresh])

    # --- resolutions ---

    def _score_resolutions(
        self,
        jobs: list[tuple[Pending, MilestoneResolved, ResolutionContext, bool]],
        outputs: list[AnyOutput],
        version: str,
        emitted: datetime,
    ) -> None:
        if not jobs:
            return
        th = self.th
        eval_rows: list[list[float]] = []
        eval_labels: list[bool] = []
        for _, ev, ctx, redelivery in jobs:
            assert ctx.milestone is not None and ctx.project is not None
            this = _resolution_record(ev)
            funded = sum(p.amount_cents for p in ctx.project_pledges)
            ratio = funded / ctx.project.goal_cents if ctx.project.goal_cents else 0.0
            resolved_after = [*ctx.resolutions, this]
            reasons = exit_scam(ratio, resolved_after, th)
            if reasons and not exit_scam(ratio, ctx.resolutions, th):
                alert = Alert(
                    alert_id=make_id("al", AlertKind.EXIT_SCAM, ev.project_id, version),
                    kind=AlertKind.EXIT_SCAM,
                    severity="critical",
                    score=1.0,
                    threshold=1.0,
                    project_id=ev.project_id,
                    milestone_id=ev.milestone_id,
                    backer_id=None,
                    event_ids=[
                        r.event_id for r in resolved_after[-th.exit_scam_min_low_milestones :]
                    ],
                    reasons=reasons,
                    occurred_at=ev.occurred_at,
                    emitted_at=emitted,
                    model_version=version,
                )
                outputs.append(alert)
                for m in pending_milestones(ctx.milestones, resolved_after):
                    outputs.append(
                        PayoutFreeze(
                            freeze_id=freeze_id(m.milestone_id),
                            action="freeze",
                            project_id=ev.project_id,
                            milestone_id=m.milestone_id,
                            reason=AlertKind.EXIT_SCAM,
                            risk_score=None,
                            alert_ids=[alert.alert_id],
                            occurred_at=ev.occurred_at,
                            emitted_at=emitted,
                            model_version=version,
                        )
                    )
            if ctx.votes and not redelivery:
                last = ctx.votes[-1]
                eval_rows.append(
                    vote_state_features(
                        last.t_us,
                        ctx.votes,
                        ctx.milestone,
                        ctx.project,
                        _before(ctx.project_pledges, last.t_us),
                        _before(ctx.resolutions, last.t_us),
                        self.windows,
                    )
                )
                eval_labels.append(ev.approval_rate < th.approval_target)
        if self.monitor is not None and eval_rows:
            probs = self.models.risk(np.asarray(eval_rows, dtype=np.float64))
            self.monitor.observe_outcomes(eval_labels, probs)


def _vote_state_key(
    milestone_id: str,
    votes: Sequence[VoteRecord],
    pledges: Sequence[Any],
    resolutions: Sequence[ResolutionRecord],
) -> tuple[object, ...]:
    """Names the inputs of ``vote_state_features`` exactly: logs are sorted by (time, event
    id) and read as prefixes (or the newest-N window of one), so the same length and last
    entry mean the same list (as ``features.index_pledges`` keys its cache)."""
    return (
        milestone_id,
        len(votes),
        votes[-1].event_id if votes else "",
        len(pledges),
        pledges[-1].event_id if pledges else "",
        len(resolutions),
        resolutions[-1].event_id if resolutions else "",
    )


def _before(records: Sequence[Any], t_us: int) -> Sequence[Any]:
    """The prefix of a time-sorted log strictly before ``t_us`` (no copy when it is all)."""
    if not records or records[-1].t_us < t_us:
        return records
    return records[: bisect.bisect_left(records, t_us, key=lambda r: r.t_us)]


def _pending_of(job: Any) -> Pending:
    return job.pending if isinstance(job, _VoteJob) else job[0]


def _isolated(
    jobs: list[Any],
    stage: Callable[[list[Any], list[AnyOutput]], None],
    outputs: list[AnyOutput],
    dead: list[DeadLetterNote],
) -> None:
    """Run a scoring stage on the whole batch; if it raises, run it job by job so only the
    events that really fail are dead-lettered (``processing_error``), never acked away."""
    if not jobs:
        return
    produced: list[AnyOutput] = []
    try:
        stage(jobs, produced)
    except MissingBanditDays:
        raise  # a request for more data, not a failure
    except Exception:
        for job in jobs:
            one: list[AnyOutput] = []
            try:
                stage([job], one)
            except MissingBanditDays:
                raise
            except Exception as exc:
                dead.append(_processing_error(_pending_of(job), exc))
                continue
            outputs.extend(one)
        return
    outputs.extend(produced)


def _processing_error(pending: Pending, exc: Exception) -> DeadLetterNote:
    log.exception(
        "processing_error event_id=%s event_type=%s",
        pending.event.event_id,
        pending.event.event_type,
    )
    return DeadLetterNote(pending, Reason.PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"[:300])


class _Arms:
    """Release arms for one batch: Thompson sampling from the posterior as of the day before
    the milestone's voting opened, seeded by the milestone id, so every decision for a
    milestone names the same arm in every run.

    The posterior is the stored outcome counts plus outcomes decided earlier in this very
    batch (not stored yet), each counted under its own milestone's arm, worked out the
    same way (recursively: earlier days only).
    """

    def __init__(
        self,
        processor: BatchProcessor,
        reads: BatchReads,
        outcomes: Sequence[tuple[int, MilestoneRef, bool]],
    ) -> None:
        self.settings = processor.bandit
        self.reads = reads
        self.outcomes = outcomes
        self.memo: dict[str, str] = {}

    def arm(self, milestone: MilestoneRef) -> str:
        """The milestone's release arm."""
        known = self.memo.get(milestone.milestone_id)
        if known is not None:
            return known
        day = bandit_day(milestone)
        stored = self.reads.bandit.get(day)
        if stored is None:
            raise MissingBanditDays({day})
        counts = {arm: list(stored.get(arm, (0, 0))) for arm in self.settings.arms}
        lo, hi = (day - self.settings.window_days) * DAY_US, day * DAY_US
        for t_us, other, approved in self.outcomes:
            if lo <= t_us < hi:
                tally = counts.setdefault(self.arm(other), [0, 0])
                tally[0 if approved else 1] += 1
        state: BanditState = from_counts(
            self.settings.prior_alpha,
            self.settings.prior_beta,
            {arm: counts[arm][0] for arm in self.settings.arms},
            {arm: counts[arm][1] for arm in self.settings.arms},
        )
        choice = choose_arm(state, seed_key=milestone.milestone_id)
        self.memo[milestone.milestone_id] = choice
        return choice


def bandit_day(milestone: MilestoneRef) -> int:
    """The posterior a milestone's arm is drawn from: the day before its voting opened
    (a batched Thompson sampler; outcomes before that day are all known by then)."""
    return milestone.opens_us // DAY_US - 1


def _resolution_record(ev: MilestoneResolved) -> ResolutionRecord:
    pair = effects_of(ev).resolution
    assert pair is not None
    return pair[1]


def _risk_reasons(f: Mapping[str, float], risk: float, th: ThresholdSettings) -> list[AlertReason]:
    return [
        AlertReason(
            "risk",
            round(risk, 4),
            th.risk_freeze_at,
            f"predicted chance the milestone ends below {th.approval_target:.0%} "
            f"approval is {risk:.0%}",
        ),
        AlertReason(
            "approval_weighted",
            round(f["approval_weighted"], 4),
            th.approval_target,
            f"{f['approval_weighted']:.0%} weighted approval after "
            f"{int(f['votes'])} votes, {f['window_fraction']:.0%} into the window",
        ),
        AlertReason(
            "prior_low_approval",
            f["prior_low_approval"],
            0,
            f"{int(f['prior_low_approval'])} earlier milestones of this project "
            f"resolved below target",
        ),
    ]


def _explain_reason(reason: Reason, event: AnyEvent) -> str:
    texts = {
        Reason.UNKNOWN_PROJECT: "no project with this id was created before the event",
        Reason.UNKNOWN_BACKER: "no backer with this id registered before the event",
        Reason.UNKNOWN_MILESTONE: "no milestone with this id (of this project) existed",
        Reason.NOT_A_BACKER: "the voter never pledged to this project before voting",
        Reason.CAMPAIGN_CLOSED: "the pledge came at or after the project's deadline",
        Reason.VOTING_CLOSED: "the vote came outside the milestone's voting window",
        Reason.ALREADY_EXISTS: "an earlier event already created or resolved this entity",
    }
    return f"{texts.get(reason, str(reason))} ({event.event_type} {event.event_id})"
