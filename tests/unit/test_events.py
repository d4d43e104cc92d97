"""The wire contract: every rejection reason, round trips, exact money, and properties.

Each rejection asserts the exact ``Reason`` code, the field it names and that the message
says it in words. The valid events below are shaped like the generator's (ids, whole-second
UTC times, money as JSON numbers); ``wire`` writes them with money as exact JSON numbers.
"""

from __future__ import annotations

import doctest
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from escrowguard import events
from escrowguard.errors import DecodeError, EscrowguardError
from escrowguard.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    EVENT_TYPE_BY_NAME,
    EVENT_TYPES,
    MAX_ID_LENGTH,
    BackerRegistered,
    MilestoneCreated,
    MilestoneResolved,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
    cents_to_decimal,
    decode,
    encode,
    from_us,
    to_us,
)
from escrowguard.producers.generator import generate_history
from escrowguard.reasons import CONTRACT_REASONS, Reason

_WIRE = msgspec.json.Encoder(decimal_format="number")

BACKER: dict[str, Any] = {
    "event_type": "backer_registered",
    "event_id": "backer:b000001",
    "schema_version": 1,
    "occurred_at": "2025-01-01T11:46:43Z",
    "backer_id": "b000001",
    "wallet": "w000007",
}
PROJECT: dict[str, Any] = {
    "event_type": "project_created",
    "event_id": "project:p00001",
    "schema_version": 1,
    "occurred_at": "2025-01-02T00:00:00Z",
    "project_id": "p00001",
    "creator_id": "c00001",
    "creator_wallet": "w000001",
    "creator_reputation": 7.5,
    "funding_goal": Decimal("5000.00"),
    "deadline": "2025-02-15T00:00:00Z",
}
MILESTONE: dict[str, Any] = {
    "event_type": "milestone_created",
    "event_id": "milestone:m000001",
    "schema_version": 1,
    "occurred_at": "2025-01-02T00:00:01Z",
    "project_id": "p00001",
    "milestone_id": "m000001",
    "index": 1,
    "funding_amount": Decimal("1250.00"),
    "voting_opens_at": "2025-03-07T00:00:00Z",
    "voting_closes_at": "2025-03-14T00:00:00Z",
}
PLEDGE: dict[str, Any] = {
    "event_type": "pledge_created",
    "event_id": "pledge:pl000001",
    "schema_version": 1,
    "occurred_at": "2025-01-03T10:00:00Z",
    "project_id": "p00001",
    "pledge_id": "pl000001",
    "backer_id": "b000001",
    "amount": Decimal("25.50"),
    "source_wallet": "w000007",
    "voting_power": 0.26,
}
VOTE: dict[str, Any] = {
    "event_type": "vote_cast",
    "event_id": "vote:v0000001",
    "schema_version": 1,
    "occurred_at": "2025-03-08T00:00:00Z",
    "project_id": "p00001",
    "milestone_id": "m000001",
    "vote_id": "v0000001",
    "backer_id": "b000001",
    "approve": True,
    "vote_weight": 0.26,
}
RESOLVED: dict[str, Any] = {
    "event_type": "milestone_resolved",
    "event_id": "resolved:m000001",
    "schema_version": 1,
    "occurred_at": "2025-03-14T01:00:00Z",
    "project_id": "p00001",
    "milestone_id": "m000001",
    "approval_rate": 0.8123,
    "approved": True,
}
VALID: dict[str, dict[str, Any]] = {
    obj["event_type"]: obj for obj in (BACKER, PROJECT, MILESTONE, PLEDGE, VOTE, RESOLVED)
}
MONEY_FIELDS = [
    ("project_created", "funding_goal"),
    ("milestone_created", "funding_amount"),
    ("pledge_created", "amount"),
]
TIMESTAMP_FIELDS = [
    (t, f)
    for t, obj in VALID.items()
    for f in obj
    if f in {"occurred_at", "deadline", "voting_opens_at", "voting_closes_at"}
]
ID_FIELDS = [(t, f) for t, obj in VALID.items() for f in obj if f.endswith(("_id", "wallet"))]


def wire(obj: Any) -> bytes:
    """Compact wire JSON; ``Decimal`` values become exact JSON numbers."""
    return _WIRE.encode(obj)


def changed(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of ``base`` with some fields replaced (key order kept)."""
    return {**base, **changes}


def without(base: dict[str, Any], name: str) -> dict[str, Any]:
    """A copy of ``base`` without one field."""
    return {k: v for k, v in base.items() if k != name}


_E = TypeVar("_E", bound=events.Event)
UnknownFields = Literal["reject", "ignore"]


def decode_as(cls: type[_E], data: bytes, unknown_fields: UnknownFields = "reject") -> _E:
    """``decode``, checking the type of event it returns."""
    event = decode(data, unknown_fields=unknown_fields)
    assert type(event) is cls
    return event


def rejection(data: bytes, **options: Any) -> DecodeError:
    """The DecodeError ``decode`` raises for ``data``; fails the test if it accepts it."""
    with pytest.raises(DecodeError) as info:
        decode(data, **options)
    return info.value


def assert_rejected(
    data: bytes, reason: Reason, field: str | None = None, **options: Any
) -> DecodeError:
    """``data`` is rejected with exactly ``reason`` (and ``field``), in readable words."""
    err = rejection(data, **options)
    assert err.reason == reason, f"{err.reason}: {err}"
    assert Reason(err.reason) is reason
    assert err.field == field
    assert_readable(err)
    return err


def assert_readable(err: DecodeError) -> None:
    """A message a person can act on: one short printable line naming the field."""
    message = str(err)
    assert isinstance(err, EscrowguardError)
    assert err.message == message
    assert 10 <= len(message) <= 300, message
    assert message.isprintable(), message
    assert message != err.reason
    if err.field is not None:
        assert err.field in message, message


# --- valid events --------------------------------------------------------------------------


def test_doctests() -> None:
    result = doctest.testmod(events)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_each_valid_event_decodes_to_its_type(event_type: str) -> None:
    event = decode(wire(VALID[event_type]))
    assert type(event) is EVENT_TYPE_BY_NAME[event_type]
    assert event.event_type == event_type
    assert event.event_id == VALID[event_type]["event_id"]
    assert event.key == VALID[event_type][event.key_field]
    for name, value in VALID[event_type].items():
        if name in {"event_type", "occurred_at", "deadline"} or name.startswith("voting_"):
            continue
        assert getattr(event, name) == value, name


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_round_trip_encode_decode(event_type: str) -> None:
    data = wire(VALID[event_type])
    event = decode(data)
    assert encode(event) == data
    assert decode(encode(event)) == event


def test_six_event_types_with_their_topics_and_keys() -> None:
    assert sorted(VALID) == sorted(EVENT_TYPE_BY_NAME)
    assert {t.__name__: (t.topic_suffix, t.key_field) for t in EVENT_TYPES} == {
        "BackerRegistered": ("backers", "backer_id"),
        "ProjectCreated": ("projects", "project_id"),
        "MilestoneCreated": ("projects", "project_id"),
        "PledgeCreated": ("pledges", "project_id"),
        "VoteCast": ("votes", "project_id"),
        "MilestoneResolved": ("projects", "project_id"),
    }


def test_events_built_in_code_round_trip() -> None:
    at = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
    built = [
        BackerRegistered("backer:b1", 1, at, backer_id="b1", wallet="w1"),
        ProjectCreated(
            "project:p1", 1, at, "p1", "c1", "w2", 0.0, cents_to_decimal(1), at + timedelta(1)
        ),
        MilestoneCreated(
            "milestone:m1", 1, at, "p1", "m1", 3, cents_to_decimal(99), at, at + timedelta(7)
        ),
        PledgeCreated("pledge:pl1", 1, at, "p1", "pl1", "b1", cents_to_decimal(1050), "w1", 0.0),
        VoteCast("vote:v1", 1, at, "p1", "m1", "v1", "b1", False, 0.0),
        MilestoneResolved("resolved:m1", 1, at, "p1", "m1", 1.0, True),
    ]
    assert [type(e) for e in built] == list(EVENT_TYPES)
    for event in built:
        assert decode(encode(event)) == event
    assert b'"amount":10.50' in encode(built[3])


@pytest.fixture(scope="module")
def generated() -> list[bytes]:
    """A small generated history's wire events (every type occurs)."""
    return generate_history(11, 0.1).events


def test_every_generated_event_round_trips(generated: list[bytes]) -> None:
    decoded = [decode(data) for data in generated]
    assert {e.event_type for e in decoded} == set(EVENT_TYPE_BY_NAME)
    assert [encode(e) for e in decoded] == generated


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2025-01-01T00:00:00Z", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T02:00:00+02:00", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2024-12-31T19:00:00-05:00", datetime(2025, 1, 1, tzinfo=UTC)),
        ("2025-01-01T00:00:00.000001Z", datetime(2025, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
        ("2025-01-01t00:00:00z", datetime(2025, 1, 1, tzinfo=UTC)),
    ],
)
def test_rfc3339_timestamps_with_any_offset(text: str, utc: datetime) -> None:
    event = decode(wire(changed(BACKER, occurred_at=text)))
    assert event.occurred_at == utc
    assert event.occurred_us == to_us(utc)
    assert from_us(event.occurred_us) == utc


def test_whitespace_and_field_order_do_not_matter() -> None:
    spaced = json.dumps(dict(reversed(list(changed(PLEDGE, amount=25.5).items()))), indent=2)
    assert decode(spaced.encode()) == decode(wire(PLEDGE))


@pytest.mark.parametrize(
    "value", ["x", "a" * MAX_ID_LENGTH, "projekt-ü-日本", "with space", "a/b:c#1", "é" * 64]
)
def test_ids_of_1_to_64_printable_characters_are_accepted(value: str) -> None:
    assert decode_as(VoteCast, wire(changed(VOTE, vote_id=value))).vote_id == value


@pytest.mark.parametrize(
    ("changes", "name", "value"),
    [
        ({"creator_reputation": 0}, "creator_reputation", 0.0),
        ({"creator_reputation": 10}, "creator_reputation", 10.0),
        ({"approval_rate": 0}, "approval_rate", 0.0),
        ({"approval_rate": 1}, "approval_rate", 1.0),
        ({"voting_power": 0}, "voting_power", 0.0),
        ({"vote_weight": 0.0}, "vote_weight", 0.0),
        ({"index": 12}, "index", 12),
    ],
)
def test_range_bounds_are_inclusive(changes: dict[str, Any], name: str, value: float) -> None:
    base = next(obj for obj in VALID.values() if name in obj)
    assert getattr(decode(wire(changed(base, **changes))), name) == value


def test_voting_may_open_at_creation_and_deadline_a_microsecond_later() -> None:
    at = MILESTONE["occurred_at"]
    assert decode_as(
        MilestoneCreated, wire(changed(MILESTONE, voting_opens_at=at))
    ).voting_opens_at == datetime(2025, 1, 2, 0, 0, 1, tzinfo=UTC)
    deadline = "2025-01-02T00:00:00.000001Z"
    assert decode_as(ProjectCreated, wire(changed(PROJECT, deadline=deadline))).deadline > datetime(
        2025, 1, 2, tzinfo=UTC
    )


# --- exact money ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("0.29", 29),  # 0.29 * 100 == 28.999999999999996 in floats
        ("4.35", 435),  # 434.99999999999994
        ("1.15", 115),  # 114.99999999999999
        ("0.1", 10),
        ("0.01", 1),
        ("1", 100),
        ("1.50", 150),
        ("1.500", 150),  # trailing zeros are not extra decimal places
        ("1e2", 10_000),
        ("2.5E1", 2_500),
        ("12345678.91", 1_234_567_891),
        ("99999999999.99", 9_999_999_999_999),  # the largest accepted amount
    ],
)
def test_money_is_parsed_exactly(text: str, cents: int) -> None:
    data = wire(PLEDGE).replace(b'"amount":25.50', b'"amount":' + text.encode())
    event = decode(data)
    assert isinstance(event, PledgeCreated)
    assert event.amount == Decimal(text)
    assert event.amount_cents == cents
    assert decode(encode(event)) == event
    if "e" not in text.lower():
        assert encode(event) == data  # the amount is written back digit for digit


def test_money_sums_are_exact_in_cents() -> None:
    amounts = ["0.10", "0.20", "0.29", "4.35", "1.15", "99999999.99"]
    cents = [
        decode_as(PledgeCreated, wire(changed(PLEDGE, amount=Decimal(a)))).amount_cents
        for a in amounts
    ]
    assert sum(cents) == 10_000_000_608
    assert cents_to_decimal(sum(cents)) == sum(Decimal(a) for a in amounts)
    assert 0.1 + 0.2 != 0.3  # what floats would have done
    assert cents[0] + cents[1] == 30


@pytest.mark.parametrize(("event_type", "field"), MONEY_FIELDS)
def test_every_money_field_has_exact_cents(event_type: str, field: str) -> None:
    event = decode(wire(changed(VALID[event_type], **{field: Decimal("0.29")})))
    assert getattr(event, f"{field}_cents") == 29


# --- rejections: one test per reason -------------------------------------------------------


def test_too_large_is_checked_before_parsing() -> None:
    # not UTF-8 and not JSON either: only the size can have been looked at
    assert_rejected(b"\xff" * (DEFAULT_MAX_MESSAGE_BYTES + 1), Reason.TOO_LARGE)


def test_too_large_default_bound_is_64_kib() -> None:
    padded = changed(BACKER, wallet="w")
    data = wire(padded)
    fill = b" " * (DEFAULT_MAX_MESSAGE_BYTES - len(data))
    assert DEFAULT_MAX_MESSAGE_BYTES == 65_536
    assert decode_as(BackerRegistered, data + fill).wallet == "w"
    err = assert_rejected(data + fill + b" ", Reason.TOO_LARGE)
    assert "65537" in str(err) and "65536" in str(err)


def test_too_large_bound_is_configurable() -> None:
    data = wire(BACKER)
    assert decode(data, max_bytes=len(data)).event_id == BACKER["event_id"]
    assert_rejected(data, Reason.TOO_LARGE, max_bytes=len(data) - 1)


@pytest.mark.parametrize(
    "data",
    [
        b'{"event_type":"backer_registered\xff"}',
        wire(BACKER).replace(b"w000007", b"w\xc3\x28"),  # broken 2-byte sequence
        wire(BACKER).replace(b"w000007", b"w\xc0\xaf"),  # overlong '/'
        wire(BACKER).replace(b"w000007", b"w\xed\xa0\x80"),  # UTF-8-encoded surrogate
        wire(BACKER)[:-2] + b"\xe2\x82",  # truncated sequence at the end
        "\ufeff".encode("utf-16") + b"{}",
    ],
    ids=["invalid-byte", "broken", "overlong", "surrogate", "truncated", "utf16"],
)
def test_not_utf8(data: bytes) -> None:
    assert_rejected(data, Reason.NOT_UTF8)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"{",
        b"{'event_type': 'backer_registered'}",
        wire(PLEDGE)[:-1],
        wire(PLEDGE) + b"}",
        wire(PLEDGE) + b"\n{}",
        wire(PLEDGE).replace(b'"voting_power":0.26', b'"voting_power":NaN'),
        wire(PLEDGE).replace(b'"voting_power":0.26', b'"voting_power":Infinity'),
        wire(PLEDGE).replace(b'"voting_power":0.26', b'"voting_power":-Infinity'),
        wire(PLEDGE).replace(b'"amount":25.50', b'"amount":NaN'),
        wire(PLEDGE).replace(b'"amount":25.50', b'"amount":Infinity'),
        wire(PLEDGE).replace(b'"amount":25.50', b'"amount":.5'),
        wire(PLEDGE).replace(b'"amount":25.50', b'"amount":025.50'),
        wire(PLEDGE).replace(b'"amount":25.50', b'"amount":+25.50'),
        wire(BACKER).replace(b'"w000007"', b'"w\\x07"'),
        wire(BACKER).replace(b'"w000007"', b'"w\\ud800"'),  # lone surrogate escape
        "\ufeff".encode() + wire(BACKER),  # byte-order mark
    ],
    ids=[
        "empty",
        "blank",
        "unclosed",
        "single-quotes",
        "truncated",
        "extra-brace",
        "two-documents",
        "nan",
        "infinity",
        "minus-infinity",
        "money-nan",
        "money-infinity",
        "no-leading-digit",
        "leading-zero",
        "plus-sign",
        "bad-escape",
        "lone-surrogate",
        "bom",
    ],
)
def test_not_json(data: bytes) -> None:
    assert_rejected(data, Reason.NOT_JSON)


def test_python_json_would_have_accepted_nan_and_infinity() -> None:
    data = wire(PLEDGE).replace(b'"voting_power":0.26', b'"voting_power":NaN')
    assert json.loads(data)["voting_power"] != json.loads(data)["voting_power"]  # NaN
    assert_rejected(data, Reason.NOT_JSON)


@pytest.mark.parametrize("unknown_fields", ["reject", "ignore"])
def test_not_json_after_an_unknown_field(unknown_fields: UnknownFields) -> None:
    """The first error a strict pass sees is the unknown field; ignoring it must still
    reject the malformed rest as not JSON (it used to leak msgspec's own error)."""
    head = wire(PLEDGE)[:-1] + b',"note":1'
    reason = Reason.NOT_JSON if unknown_fields == "ignore" else Reason.UNKNOWN_FIELD
    field = None if unknown_fields == "ignore" else "note"
    for data in (head, head + b",", head + b"}garbage", head + b',"x":NaN}'):
        assert_rejected(data, reason, field, unknown_fields=unknown_fields)


@pytest.mark.parametrize(
    "data",
    [
        wire(BACKER)[:-1] + b',"wallet":"w000007"}',  # same value twice
        wire(BACKER)[:-1] + b',"wallet":"w999999"}',  # a second value
        wire(PLEDGE)[:-1] + b',"amount":1000000}',
        wire(PLEDGE)[:-1] + b',"event_type":"pledge_created"}',
        wire(PLEDGE)[:-1] + b',"event_type":"vote_cast"}',  # msgspec reports a bad tag
        wire(PLEDGE)[:-1] + b',"schema_version":2}',
        wire(BACKER)[:-1] + b', "wallet" : "w2"}',  # not compact: the slow path
        wire(BACKER).replace(b'{"event_type"', b'{"backer_id":"b9","event_type"'),
    ],
    ids=[
        "same-value",
        "other-value",
        "money",
        "same-tag",
        "other-tag",
        "schema-version",
        "spaced",
        "first-key",
    ],
)
def test_duplicate_keys(data: bytes) -> None:
    assert_rejected(data, Reason.DUPLICATE_KEY)


def test_duplicate_keys_in_ignore_mode() -> None:
    data = wire(BACKER)[:-1] + b',"note":1,"note":2}'
    assert_rejected(data, Reason.DUPLICATE_KEY, unknown_fields="ignore")
    data = wire(BACKER)[:-1] + b',"note":1,"wallet":"w2"}'
    assert_rejected(data, Reason.DUPLICATE_KEY, unknown_fields="ignore")


def test_python_json_would_have_accepted_duplicate_keys() -> None:
    data = wire(BACKER)[:-1] + b',"wallet":"w999999"}'
    assert json.loads(data)["wallet"] == "w999999"
    assert_rejected(data, Reason.DUPLICATE_KEY)


@pytest.mark.parametrize(
    "data", [b"[]", b"[" + wire(BACKER) + b"]", b"1", b"-2.5", b'"text"', b"null", b"true"]
)
def test_not_an_object(data: bytes) -> None:
    assert_rejected(data, Reason.NOT_OBJECT)


@pytest.mark.parametrize(
    "value", ["nope", "", "Pledge_Created", "pledge_created ", "pledge", "PledgeCreated"]
)
def test_unknown_event_type(value: str) -> None:
    err = assert_rejected(
        wire(changed(PLEDGE, event_type=value)), Reason.UNKNOWN_EVENT_TYPE, "event_type"
    )
    assert repr(value) in str(err)


@pytest.mark.parametrize("value", [2, 0, -1, 100])
def test_unsupported_schema_version(value: int) -> None:
    err = assert_rejected(
        wire(changed(VOTE, schema_version=value)),
        Reason.UNSUPPORTED_SCHEMA_VERSION,
        "schema_version",
    )
    assert "1" in str(err)


@pytest.mark.parametrize(
    ("event_type", "field"), [(t, f) for t, obj in VALID.items() for f in obj if f != "event_type"]
)
def test_missing_field(event_type: str, field: str) -> None:
    assert_rejected(wire(without(VALID[event_type], field)), Reason.MISSING_FIELD, field)


def test_missing_event_type() -> None:
    assert_rejected(wire(without(PLEDGE, "event_type")), Reason.MISSING_FIELD, "event_type")
    assert_rejected(b"{}", Reason.MISSING_FIELD, "event_type")


@pytest.mark.parametrize(
    ("base", "field", "value"),
    [
        (PLEDGE, "amount", True),  # `true` is not a number
        (PLEDGE, "amount", False),
        (PLEDGE, "voting_power", True),
        (VOTE, "vote_weight", True),
        (RESOLVED, "approval_rate", True),
        (PROJECT, "creator_reputation", True),
        (PROJECT, "funding_goal", True),
        (MILESTONE, "funding_amount", True),
        (MILESTONE, "index", True),
        (MILESTONE, "index", 1.5),
        (MILESTONE, "index", "1"),
        (PLEDGE, "amount", "25.50"),  # money is a JSON number, never a string
        (PROJECT, "funding_goal", "5000"),
        (MILESTONE, "funding_amount", "1250.00"),
        (PLEDGE, "amount", None),
        (PLEDGE, "amount", [25.5]),
        (PLEDGE, "amount", {"cents": 2550}),
        (PLEDGE, "voting_power", "0.26"),
        (VOTE, "approve", 1),
        (VOTE, "approve", "true"),
        (VOTE, "approve", None),
        (RESOLVED, "approved", 0),
        (BACKER, "backer_id", 1),
        (BACKER, "wallet", None),
        (BACKER, "event_id", ["e1"]),
        (BACKER, "event_type", 5),
        (BACKER, "schema_version", "1"),
        (BACKER, "schema_version", True),
        (BACKER, "schema_version", 1.0),
        (PLEDGE, "voting_power", 1e400),  # overflows to infinity
    ],
)
def test_wrong_type(base: dict[str, Any], field: str, value: Any) -> None:
    data = wire(changed(base, **{field: 0}))
    literal = b"1e400" if value == float("inf") else wire(value)
    data = data.replace(b'"%s":0' % field.encode(), b'"%s":%s' % (field.encode(), literal))
    assert_rejected(data, Reason.WRONG_TYPE, field)


def test_money_string_is_caught_with_whitespace_too() -> None:
    data = json.dumps(changed(PLEDGE, amount="25.50"), indent=1).encode()
    assert_rejected(data, Reason.WRONG_TYPE, "amount")


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_unknown_field_rejected_by_default(event_type: str) -> None:
    data = wire(changed(VALID[event_type], note="hello"))
    assert_rejected(data, Reason.UNKNOWN_FIELD, "note")
    assert_rejected(data, Reason.UNKNOWN_FIELD, "note", unknown_fields="reject")


@pytest.mark.parametrize("event_type", sorted(VALID))
def test_unknown_field_ignored_when_configured(event_type: str) -> None:
    base = VALID[event_type]
    extra = {"note": "hello", "nested": {"a": [1, 2.5, None]}, "zz": 1e300}
    data = wire({"early": True, **base, **extra})
    assert decode(data, unknown_fields="ignore") == decode(wire(base))


def test_ignore_mode_still_validates_everything_else() -> None:
    """The unknown field is the only thing ignored: money stays exact (this used to go
    through floats, accepting 1.0000000000000001 as 1.00), types and ranges still hold."""
    extra = {"note": 1}
    cases = [
        (changed(PLEDGE, amount=Decimal("1.0000000000000001"), **extra), Reason.MONEY_PRECISION),
        (changed(PLEDGE, amount=Decimal("0.30000000000000004"), **extra), Reason.MONEY_PRECISION),
        (changed(PLEDGE, amount=Decimal("0.00"), **extra), Reason.NON_POSITIVE_MONEY),
        (changed(PLEDGE, amount="25.50", **extra), Reason.WRONG_TYPE),
        (changed(PLEDGE, amount=True, **extra), Reason.WRONG_TYPE),
        (changed(VOTE, vote_weight=-1, **extra), Reason.NEGATIVE_WEIGHT),
        (without(changed(VOTE, **extra), "vote_id"), Reason.MISSING_FIELD),
        (changed(BACKER, wallet="", **extra), Reason.INVALID_ID),
        (
            changed(BACKER, occurred_at="2025-01-01T00:00:00", **extra),
            Reason.TIMESTAMP_WITHOUT_TIMEZONE,
        ),
    ]
    for obj, reason in cases:
        assert rejection(wire(obj), unknown_fields="ignore").reason == reason, obj
    exact = decode_as(
        PledgeCreated,
        wire(changed(PLEDGE, amount=Decimal("0.29"), **extra)),
        unknown_fields="ignore",
    )
    assert exact.amount_cents == 29


@pytest.mark.parametrize(("event_type", "field"), MONEY_FIELDS)
@pytest.mark.parametrize("value", ["0", "0.00", "-0.01", "-1", "-0", "-5000", "0e10"])
def test_non_positive_money(event_type: str, field: str, value: str) -> None:
    data = wire(changed(VALID[event_type], **{field: Decimal(value)}))
    assert_rejected(data, Reason.NON_POSITIVE_MONEY, field)


@pytest.mark.parametrize(("event_type", "field"), MONEY_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "1.005",
        "0.001",
        "25.501",
        "0.30000000000000004",
        "1.0000000000000000000000000001",  # beyond Decimal's 28-digit context: once accepted
        "1.00000000000000000000000000000000000001",
        "5E-3",
    ],
)
def test_money_with_more_than_two_decimals(event_type: str, field: str, value: str) -> None:
    data = wire(changed(VALID[event_type], **{field: Decimal(value)}))
    err = assert_rejected(data, Reason.MONEY_PRECISION, field)
    assert "two decimal places" in str(err)


@pytest.mark.parametrize("value", ["100000000000", "100000000000.00", "1e20", "1e400"])
def test_money_too_large(value: str) -> None:
    data = wire(changed(PLEDGE, amount=Decimal(value)))
    assert_rejected(data, Reason.MONEY_TOO_LARGE, "amount")


@pytest.mark.parametrize("value", [-0.1, -1, 10.01, 11, 1e300])
def test_reputation_outside_0_to_10(value: float) -> None:
    data = wire(changed(PROJECT, creator_reputation=value))
    err = assert_rejected(data, Reason.REPUTATION_OUT_OF_RANGE, "creator_reputation")
    assert "0-10" in str(err)


@pytest.mark.parametrize("value", [-0.0001, -1, 1.0001, 2, 100])
def test_rate_outside_0_to_1(value: float) -> None:
    data = wire(changed(RESOLVED, approval_rate=value))
    err = assert_rejected(data, Reason.RATE_OUT_OF_RANGE, "approval_rate")
    assert "0-1" in str(err)


@pytest.mark.parametrize(("base", "field"), [(PLEDGE, "voting_power"), (VOTE, "vote_weight")])
@pytest.mark.parametrize("value", [-0.01, -1, -1e300])
def test_negative_weight_or_voting_power(base: dict[str, Any], field: str, value: float) -> None:
    data = wire(changed(base, **{field: value}))
    err = assert_rejected(data, Reason.NEGATIVE_WEIGHT, field)
    assert ">= 0" in str(err)


@pytest.mark.parametrize(("event_type", "field"), TIMESTAMP_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "",
        "2025-13-01T00:00:00Z",
        "2025-02-30T00:00:00Z",
        "2025-01-01T25:00:00Z",
        "2025-01-01",
        "2025-01-01 00:00:00Z ",
        "2025/01/01T00:00:00Z",
        "2025-01-01T00:00:00+25:00",
        1735689600,
    ],
)
def test_unparseable_timestamp(event_type: str, field: str, value: Any) -> None:
    data = wire(changed(VALID[event_type], **{field: value}))
    err = assert_rejected(data, Reason.INVALID_TIMESTAMP, field)
    assert "RFC 3339" in str(err)


@pytest.mark.parametrize(("event_type", "field"), TIMESTAMP_FIELDS)
@pytest.mark.parametrize("value", ["2025-01-01T00:00:00", "2025-01-01T00:00:00.123456"])
def test_timestamp_without_timezone(event_type: str, field: str, value: str) -> None:
    data = wire(changed(VALID[event_type], **{field: value}))
    err = assert_rejected(data, Reason.TIMESTAMP_WITHOUT_TIMEZONE, field)
    assert "timezone" in str(err)


@pytest.mark.parametrize(
    ("base", "changes", "field"),
    [
        (PROJECT, {"deadline": PROJECT["occurred_at"]}, "deadline"),
        (PROJECT, {"deadline": "2024-12-31T00:00:00Z"}, "deadline"),
        (PROJECT, {"deadline": "2025-01-02T01:00:00+02:00"}, "deadline"),  # 23:00Z the day before
        (MILESTONE, {"voting_opens_at": "2025-01-02T00:00:00Z"}, "voting_opens_at"),
        (MILESTONE, {"voting_closes_at": MILESTONE["voting_opens_at"]}, "voting_opens_at"),
        (MILESTONE, {"voting_closes_at": "2025-03-06T00:00:00Z"}, "voting_opens_at"),
        (MILESTONE, {"occurred_at": "2025-04-01T00:00:00Z"}, "voting_opens_at"),
    ],
)
def test_time_inconsistent_with_occurred_at(
    base: dict[str, Any], changes: dict[str, Any], field: str
) -> None:
    err = assert_rejected(wire(changed(base, **changes)), Reason.INCONSISTENT_TIME, field)
    assert "occurred_at" in str(err)


@pytest.mark.parametrize(("event_type", "field"), ID_FIELDS)
@pytest.mark.parametrize(
    "value",
    [
        "",
        "a" * (MAX_ID_LENGTH + 1),
        "é" * (MAX_ID_LENGTH + 1),
        "a\x00b",
        "line\nbreak",
        "tab\t",
        "\x1b[31mred",
        "del\x7f",
        "nel\x85",  # C1 control characters are control characters too
        "\x9f",
    ],
    ids=["empty", "65", "65-non-ascii", "nul", "newline", "tab", "escape", "del", "nel", "c1"],
)
def test_invalid_ids(event_type: str, field: str, value: str) -> None:
    data = wire(changed(VALID[event_type], **{field: value}))
    assert_rejected(data, Reason.INVALID_ID, field)


def test_invalid_id_sent_as_json_escape() -> None:
    data = wire(BACKER).replace(b'"w000007"', b'"w\\u0007"')
    err = assert_rejected(data, Reason.INVALID_ID, "wallet")
    assert "control character" in str(err)


@pytest.mark.parametrize("value", [0, -1])
def test_milestone_index_starts_at_1(value: int) -> None:
    assert_rejected(wire(changed(MILESTONE, index=value)), Reason.INDEX_OUT_OF_RANGE, "index")


def test_every_contract_reason_is_exercised() -> None:
    """A reason added to the contract needs a test above (this file names each one)."""
    source = Path(__file__).read_text(encoding="utf-8")
    missing = [r.name for r in CONTRACT_REASONS if f"Reason.{r.name}" not in source]
    assert missing == []


def test_error_carries_a_reason_code_a_dead_letter_can_hold() -> None:
    err = rejection(wire(changed(PLEDGE, amount=Decimal("1.001"))))
    assert err.reason in CONTRACT_REASONS
    assert isinstance(err.reason, str) and err.reason == "money_precision"
    assert err.field == "amount"


@pytest.mark.parametrize(
    "data",
    [
        wire(changed(BACKER, wallet="w" * 60_000)),
        wire(changed(BACKER, event_type="x" * 60_000)),  # msgspec echoes the whole value
        wire(changed(PLEDGE, amount=Decimal("1." + "0" * 60_000 + "1"))),
        wire(changed(PLEDGE, amount=Decimal("-" + "9" * 60_000))),
        b"x" * 1_000_000,
    ],
    ids=["id", "event-type", "money-precision", "money-negative", "garbage"],
)
def test_messages_never_echo_a_payload(data: bytes) -> None:
    err = rejection(data, max_bytes=2_000_000)
    assert_readable(err)


@pytest.mark.parametrize("value", ["a\nINFO forged=line", "\x1b[2J", "it's"])
def test_messages_escape_what_they_quote(value: str) -> None:
    err = assert_rejected(
        wire(changed(BACKER, event_type=value)), Reason.UNKNOWN_EVENT_TYPE, "event_type"
    )
    assert repr(value) in str(err)


# --- properties ----------------------------------------------------------------------------

_ids = st.text(
    st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), min_size=1, max_size=64
)
_times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
_cents = st.integers(min_value=1, max_value=10**13 - 1)
_weights = st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False)


@given(
    event_id=_ids,
    project_id=_ids,
    pledge_id=_ids,
    backer_id=_ids,
    wallet=_ids,
    at=_times,
    cents=_cents,
    power=_weights,
)
def test_property_pledges_round_trip_exactly(
    event_id: str,
    project_id: str,
    pledge_id: str,
    backer_id: str,
    wallet: str,
    at: datetime,
    cents: int,
    power: float,
) -> None:
    pledge = PledgeCreated(
        event_id, 1, at, project_id, pledge_id, backer_id, cents_to_decimal(cents), wallet, power
    )
    decoded = decode_as(PledgeCreated, encode(pledge))
    assert decoded == pledge
    assert decoded.amount_cents == cents
    assert decoded.occurred_us == to_us(at)


@given(
    value=st.decimals(
        min_value=Decimal("-1e12"), max_value=Decimal("1e12"), places=6, allow_nan=False
    )
)
def test_property_money_accepted_iff_positive_two_places_and_bounded(value: Decimal) -> None:
    data = wire(changed(PLEDGE, amount=value))
    cents = value * 100
    valid = 0 < cents < 10**13 and cents == int(cents)
    try:
        event = decode_as(PledgeCreated, data)
    except DecodeError as err:
        assert not valid, err
        assert err.reason in {
            Reason.NON_POSITIVE_MONEY,
            Reason.MONEY_PRECISION,
            Reason.MONEY_TOO_LARGE,
        }
    else:
        assert valid
        assert event.amount_cents == int(cents)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    event_type=st.sampled_from(sorted(VALID)),
    drop=st.sets(st.text(max_size=20), max_size=2),
    replace=st.dictionaries(
        st.sampled_from(sorted({f for o in VALID.values() for f in o})), _json, max_size=2
    ),
    unknown_fields=st.sampled_from(["reject", "ignore"]),
)
def test_property_mutated_events_decode_or_raise_a_contract_reason(
    event_type: str,
    drop: set[str],
    replace: dict[str, Any],
    unknown_fields: UnknownFields,
) -> None:
    base = VALID[event_type]
    obj = {k: v for k, v in base.items() if k not in drop} | replace
    try:
        event = decode(wire(obj), unknown_fields=unknown_fields)
    except DecodeError as err:
        assert err.reason in CONTRACT_REASONS
        assert_readable(err)
    else:
        assert isinstance(event, EVENT_TYPES)
        assert decode(encode(event)) == event


@given(data=st.binary(max_size=300))
def test_property_arbitrary_bytes_never_raise_anything_else(data: bytes) -> None:
    try:
        decode(data)
    except DecodeError as err:
        assert err.reason in CONTRACT_REASONS


@given(
    prefix=st.integers(min_value=0, max_value=len(wire(MILESTONE))),
    noise=st.binary(max_size=8),
    unknown_fields=st.sampled_from(["reject", "ignore"]),
)
def test_property_corrupted_events_never_raise_anything_else(
    prefix: int, noise: bytes, unknown_fields: UnknownFields
) -> None:
    data = wire(MILESTONE)
    corrupted = data[:prefix] + noise + data[prefix + len(noise) :]
    try:
        decode(corrupted, unknown_fields=unknown_fields)
    except DecodeError as err:
        assert err.reason in CONTRACT_REASONS


def test_generated_events_decode_in_both_modes(generated: list[bytes]) -> None:
    kinds = Counter(decode(d, unknown_fields="ignore").event_type for d in generated)
    assert set(kinds) == set(EVENT_TYPE_BY_NAME)
