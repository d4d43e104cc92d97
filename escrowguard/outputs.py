"""The output contract: alerts, payout freezes, milestone decisions and dead letters.

Every output carries ``schema_version``, ``occurred_at`` (event time of the triggering
event), ``emitted_at`` (wall clock) and the ``model_version`` that decided it. Every id is
a function of its inputs only (kind, entity, triggering event, model version), so a
redelivered input re-sends the same id and consumers de-duplicate on it.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Final, Literal, TypeAlias

import msgspec

OUTPUT_SCHEMA_VERSION: Final = 1


class AlertKind(StrEnum):
    """What an alert is about (DESIGN.md, "What the scorer detects")."""

    PLEDGE_ANOMALY = "pledge_anomaly"
    WASH_TRADING = "wash_trading"
    SYBIL_VOTE = "sybil_vote"
    EXIT_SCAM = "exit_scam"
    MILESTONE_RISK = "milestone_risk"
    PROJECT_AT_RISK = "project_at_risk"
    DRIFT = "drift"
    RETRAIN_NEEDED = "retrain_needed"


#: Kinds whose ids depend only on the input history: the same history gives the same set,
#: whatever the partitioning, worker count or crashes. ``drift`` and ``retrain_needed`` are
#: operational monitors over each worker's own stream (docs/reliability.md).
DETERMINISTIC_KINDS: Final = frozenset(AlertKind) - {AlertKind.DRIFT, AlertKind.RETRAIN_NEEDED}

Severity: TypeAlias = Literal["low", "medium", "high", "critical"]


class AlertReason(msgspec.Struct, frozen=True):
    """Why, in an analyst's words: a feature, its value, and what it was compared with."""

    feature: str
    value: float | str | None
    reference: float | str | None
    detail: str


class _Output(msgspec.Struct, frozen=True, kw_only=True):
    schema_version: int = OUTPUT_SCHEMA_VERSION
    occurred_at: datetime
    emitted_at: datetime
    model_version: str


class Alert(_Output, frozen=True, kw_only=True):
    """A detection for the security team (topic ``escrow.alerts``)."""

    alert_id: str
    kind: AlertKind
    severity: Severity
    score: float
    threshold: float
    project_id: str | None
    milestone_id: str | None
    backer_id: str | None
    event_ids: list[str]
    reasons: list[AlertReason]


class PayoutFreeze(_Output, frozen=True, kw_only=True):
    """Hold (or release) a milestone's payout (topic ``escrow.payout-freezes``).

    ``freeze_id`` depends on the milestone only, so a milestone never has two active
    freezes, whatever triggered them and whichever model version was serving.
    """

    freeze_id: str
    action: Literal["freeze", "release"]
    project_id: str
    milestone_id: str
    reason: str
    risk_score: float | None
    alert_ids: list[str]


class MilestoneDecision(_Output, frozen=True, kw_only=True):
    """How a milestone's payout is routed and released (topic ``escrow.milestone-decisions``)."""

    decision_id: str
    milestone_id: str
    project_id: str
    route: Literal["auto_approve", "manual_review"]
    release_arm: str
    risk_score: float
    event_id: str


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message escrowguard could not use, kept for inspection (topic ``escrow.deadletter``).

    ``original`` holds the message bytes as text when they are valid UTF-8, else base64
    (``encoding`` says which), truncated to a bound (``truncated``). ``dead_letter_id`` is
    derived from the source position, so a redelivered message re-sends the same id.
    """

    schema_version: int = OUTPUT_SCHEMA_VERSION
    dead_letter_id: str
    reason: str
    detail: str
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str | None
    original: str
    encoding: Literal["utf-8", "base64"]
    original_size: int
    truncated: bool
    emitted_at: datetime


AnyOutput: TypeAlias = Alert | PayoutFreeze | MilestoneDecision | DeadLetter

_ENCODER = msgspec.json.Encoder()


def encode_output(output: AnyOutput) -> bytes:
    """Compact JSON of an output."""
    return _ENCODER.encode(output)


def decode_output(data: bytes, kind: type[AnyOutput]) -> AnyOutput:
    """Parse an output message (for consumers: tail, tests, the demo's evaluation)."""
    return msgspec.json.decode(data, type=kind)


def make_id(prefix: str, *parts: str) -> str:
    """A deterministic output id: a prefix and a 24-hex-digit hash of the parts.

    >>> make_id("al", "wash_trading", "e1", "v1") == make_id("al", "wash_trading", "e1", "v1")
    True
    >>> make_id("al", "a", "bc") != make_id("al", "ab", "c")
    True
    """
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=12).hexdigest()
    return f"{prefix}-{digest}"


def freeze_id(milestone_id: str) -> str:
    """The one freeze id a milestone can have."""
    return make_id("fz", milestone_id)


#: ``model_version`` of a release: decided by a person, not a model.
MANUAL_MODEL_VERSION: Final = "manual"


def build_release(
    freeze_id: str,
    project_id: str,
    milestone_id: str,
    reason: str,
    now: datetime,
) -> PayoutFreeze:
    """A manual-review release of a freeze (same ``freeze_id`` as the freeze it ends)."""
    return PayoutFreeze(
        freeze_id=freeze_id,
        action="release",
        project_id=project_id,
        milestone_id=milestone_id,
        reason=f"manual_release: {reason}",
        risk_score=None,
        alert_ids=[],
        occurred_at=now,
        emitted_at=now,
        model_version=MANUAL_MODEL_VERSION,
    )
