"""Every reason code escrowguard puts on a rejected or dead-lettered message, in one place.

Decode reasons come from the wire contract (``events.decode``); stream reasons from the
worker, which knows the history (references, ordering, duplicates). A dead letter's
``reason`` is always one of these values.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a message was rejected. The value is the code written to ``escrow.deadletter``."""

    # --- the wire contract (events.decode) ---
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    DUPLICATE_KEY = "duplicate_key"
    NOT_OBJECT = "not_object"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_FIELD = "unknown_field"
    INVALID_ID = "invalid_id"
    INVALID_TIMESTAMP = "invalid_timestamp"
    TIMESTAMP_WITHOUT_TIMEZONE = "timestamp_without_timezone"
    NON_POSITIVE_MONEY = "non_positive_money"
    MONEY_PRECISION = "money_precision"
    MONEY_TOO_LARGE = "money_too_large"
    REPUTATION_OUT_OF_RANGE = "reputation_out_of_range"
    RATE_OUT_OF_RANGE = "rate_out_of_range"
    NEGATIVE_WEIGHT = "negative_weight"
    INDEX_OUT_OF_RANGE = "index_out_of_range"
    INCONSISTENT_TIME = "inconsistent_time"
    # --- the stream (worker), which knows what came before ---
    WRONG_TOPIC = "wrong_topic"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_LATE = "too_late"
    DUPLICATE_EVENT = "duplicate_event"
    UNKNOWN_PROJECT = "unknown_project"
    UNKNOWN_MILESTONE = "unknown_milestone"
    UNKNOWN_BACKER = "unknown_backer"
    NOT_A_BACKER = "not_a_backer"
    CAMPAIGN_CLOSED = "campaign_closed"
    VOTING_CLOSED = "voting_closed"
    ALREADY_EXISTS = "already_exists"
    PROCESSING_ERROR = "processing_error"


_MEMBERS = list(Reason)

#: Reasons decided by ``events.decode`` alone (no history needed): those declared before
#: the stream's own.
CONTRACT_REASONS: frozenset[Reason] = frozenset(_MEMBERS[: _MEMBERS.index(Reason.WRONG_TOPIC)])
