"""The wire contract (schema_version 1): six event types, strict decode, exact money, encode.

This is the only place escrowguard parses input JSON. ``decode`` either returns a frozen,
fully validated event or raises ``DecodeError`` whose ``reason`` is a ``Reason`` code.

Money fields (``amount``, ``funding_goal``, ``funding_amount``) are JSON numbers with at most
two decimal places, parsed exactly into ``Decimal`` and exposed as integer cents
(``amount_cents``...). Python's ``json`` accepts NaN, Infinity and duplicate keys; this
decoder rejects all three, and a money value sent as a JSON string.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Final, Literal, TypeAlias

import msgspec

from escrowguard.errors import DecodeError
from escrowguard.reasons import Reason

SCHEMA_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 64
#: Upper bound on any money field, in cents: keeps sums inside a signed 64-bit integer.
MAX_MONEY_CENTS: Final = 10**13
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US: Final = timedelta(microseconds=1)

Id = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_ID_LENGTH,
        extra_json_schema={"pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"},
        description="1-64 characters, no control characters",
    ),
]
Timestamp = Annotated[
    datetime, msgspec.Meta(tz=True, description="RFC 3339 timestamp with a timezone offset")
]
Money = Annotated[Decimal, msgspec.Meta(description="exact amount, at most two decimal places")]
_MONEY_SCHEMA: Final = {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01}
Weight = Annotated[float, msgspec.Meta(extra_json_schema={"minimum": 0})]
Rate = Annotated[float, msgspec.Meta(extra_json_schema={"minimum": 0, "maximum": 1})]
Reputation = Annotated[float, msgspec.Meta(extra_json_schema={"minimum": 0, "maximum": 10})]


class Event(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="event_type"):
    """Fields every event carries. ``event_id`` is the idempotency key."""

    event_id: Id
    schema_version: Literal[1]
    occurred_at: Timestamp

    #: Topic name without the prefix, and the field whose value is the message key.
    topic_suffix: ClassVar[str]
    key_field: ClassVar[str]

    @property
    def event_type(self) -> str:
        """The wire name of this event's type (its tag)."""
        return type(self).__struct_config__.tag  # type: ignore[return-value]

    @property
    def key(self) -> str:
        """The Kafka message key (DESIGN.md's wire-contract table)."""
        return str(getattr(self, self.key_field))

    @property
    def occurred_us(self) -> int:
        """Event time as integer microseconds since the Unix epoch (exact, sortable)."""
        return to_us(self.occurred_at)


class BackerRegistered(Event, frozen=True, tag="backer_registered"):
    """A backer account was created, with the wallet it pays from by default."""

    topic_suffix: ClassVar[str] = "backers"
    key_field: ClassVar[str] = "backer_id"
    backer_id: Id
    wallet: Id


class ProjectCreated(Event, frozen=True, tag="project_created"):
    """A creator opened a campaign; pledges are accepted until ``deadline``."""

    topic_suffix: ClassVar[str] = "projects"
    key_field: ClassVar[str] = "project_id"
    project_id: Id
    creator_id: Id
    creator_wallet: Id
    creator_reputation: Reputation
    funding_goal: Money
    deadline: Timestamp

    @property
    def funding_goal_cents(self) -> int:
        """The funding goal in integer cents."""
        return int(self.funding_goal * 100)


class MilestoneCreated(Event, frozen=True, tag="milestone_created"):
    """A milestone of a project, paid out after backers approve it in its voting window."""

    topic_suffix: ClassVar[str] = "projects"
    key_field: ClassVar[str] = "project_id"
    project_id: Id
    milestone_id: Id
    index: Annotated[int, msgspec.Meta(extra_json_schema={"minimum": 1})]
    funding_amount: Money
    voting_opens_at: Timestamp
    voting_closes_at: Timestamp

    @property
    def funding_amount_cents(self) -> int:
        """The milestone's payout in integer cents."""
        return int(self.funding_amount * 100)


class PledgeCreated(Event, frozen=True, tag="pledge_created"):
    """A backer pledged money (held in escrow) to a project."""

    topic_suffix: ClassVar[str] = "pledges"
    key_field: ClassVar[str] = "project_id"
    project_id: Id
    pledge_id: Id
    backer_id: Id
    amount: Money
    source_wallet: Id
    voting_power: Weight

    @property
    def amount_cents(self) -> int:
        """The pledged amount in integer cents."""
        return int(self.amount * 100)


class VoteCast(Event, frozen=True, tag="vote_cast"):
    """A backer voted on a milestone."""

    topic_suffix: ClassVar[str] = "votes"
    key_field: ClassVar[str] = "project_id"
    project_id: Id
    milestone_id: Id
    vote_id: Id
    backer_id: Id
    approve: bool
    vote_weight: Weight


class MilestoneResolved(Event, frozen=True, tag="milestone_resolved"):
    """A milestone's vote closed: the label for online evaluation and the bandit."""

    topic_suffix: ClassVar[str] = "projects"
    key_field: ClassVar[str] = "project_id"
    project_id: Id
    milestone_id: Id
    approval_rate: Rate
    approved: bool


AnyEvent: TypeAlias = (
    BackerRegistered
    | ProjectCreated
    | MilestoneCreated
    | PledgeCreated
    | VoteCast
    | MilestoneResolved
)
EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    BackerRegistered,
    ProjectCreated,
    MilestoneCreated,
    PledgeCreated,
    VoteCast,
    MilestoneResolved,
)
EVENT_TYPE_BY_NAME: Final[dict[str, type[Event]]] = {
    str(t.__struct_config__.tag): t for t in EVENT_TYPES
}
#: Topic suffixes of the input topics, in a stable order.
INPUT_TOPIC_SUFFIXES: Final[tuple[str, ...]] = ("backers", "projects", "pledges", "votes")


def to_us(moment: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the Unix epoch."""
    return (moment - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """Integer epoch microseconds back to a UTC datetime."""
    return EPOCH + timedelta(microseconds=us)


# --- decoding ---------------------------------------------------------------------------

_STRICT = msgspec.json.Decoder(AnyEvent)
#: Any JSON, non-integer numbers kept exact (for ``unknown_fields="ignore"``).
_EXACT_ANY = msgspec.json.Decoder(float_hook=Decimal)
_CENT = Decimal("0.01")
_ENCODER = msgspec.json.Encoder(decimal_format="number")
_KEY_OR_STRING = re.compile(rb'("(?:[^"\\]|\\.)*")(\s*:)?', re.S)
_AT_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)`")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_WHITESPACE = b" \t\r\n"
_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {t: t.__struct_fields__ for t in EVENT_TYPES}
_ID_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {
    t: (*tuple(n for n, h in t.__annotations__.items() if h == "Id"), "event_id")
    for t in EVENT_TYPES
}
_ALL_ID_FIELDS: Final = frozenset(n for names in _ID_FIELDS.values() for n in names)
_GET_IDS: Final = {t: operator.attrgetter(*names) for t, names in _ID_FIELDS.items()}
_MONEY_FIELDS: Final[dict[type[Event], tuple[str, ...]]] = {
    t: tuple(n for n, h in t.__annotations__.items() if h == "Money") for t in EVENT_TYPES
}


def decode(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    unknown_fields: Literal["reject", "ignore"] = "reject",
) -> AnyEvent:
    """Decode and validate one message, or raise ``DecodeError`` with a reason code.

    >>> ev = decode(b'{"event_type":"backer_registered","event_id":"e1","schema_version":1,'
    ...             b'"occurred_at":"2025-01-01T00:00:00Z","backer_id":"b1","wallet":"w1"}')
    >>> ev.backer_id, ev.occurred_us
    ('b1', 1735689600000000)
    >>> decode(b'{"event_type":"nope"}')
    Traceback (most recent call last):
    ...
    escrowguard.errors.DecodeError: unknown event_type 'nope'
    """
    if len(data) > max_bytes:
        raise DecodeError(
            Reason.TOO_LARGE, f"message is {len(data)} bytes, over the {max_bytes}-byte limit"
        )
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(
                Reason.NOT_UTF8, f"message is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None
    try:
        event = _STRICT.decode(data)
    except UnicodeDecodeError as exc:
        raise DecodeError(Reason.NOT_UTF8, f"message is not valid UTF-8: {exc.reason}") from None
    except msgspec.ValidationError as exc:
        if unknown_fields == "ignore" and str(exc).startswith("Object contains unknown field"):
            event = _decode_ignoring_unknown(data)
        else:
            # a repeated key can make msgspec report something else (a second event_type)
            _check_duplicate_keys(list(_KEY_OR_STRING.finditer(data)))
            raise _translate(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError(Reason.NOT_JSON, f"message is not JSON: {exc}") from None
    cls = type(event)
    _check_keys(data, cls)
    if not "".join(_GET_IDS[cls](event)).isprintable():
        _check_ids(event, cls)
    for name in _MONEY_FIELDS[cls]:
        _check_money(getattr(event, name), name)
    _VALIDATORS[cls](event)
    return event


def _decode_ignoring_unknown(data: bytes) -> AnyEvent:
    try:
        obj = _EXACT_ANY.decode(data)
    except msgspec.DecodeError as exc:
        raise DecodeError(Reason.NOT_JSON, f"message is not JSON: {exc}") from None
    tag = obj.get("event_type") if isinstance(obj, dict) else None
    cls = EVENT_TYPE_BY_NAME.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise _translate("Invalid value - at `$.event_type`")
    known = {k: v for k, v in obj.items() if k in cls.__struct_fields__ or k == "event_type"}
    try:
        return _STRICT.decode(_ENCODER.encode(known))
    except msgspec.ValidationError as exc:
        raise _translate(str(exc)) from None


def _check_ids(event: Event, cls: type[Event]) -> None:
    for name in _ID_FIELDS[cls]:
        if _CONTROL.search(getattr(event, name)):
            raise DecodeError(Reason.INVALID_ID, f"{name} contains a control character", name)


def _check_keys(data: bytes, cls: type[Event]) -> None:
    """Reject duplicate keys, and money sent as a JSON string (msgspec accepts both)."""
    money = _MONEY_FIELDS[cls]
    # Fast path, exact for compact JSON: every key is directly followed by ':', so when the
    # count of '":' equals the number of (all required, distinct) fields just decoded, no
    # key can appear twice; and a string money value must start right after '"name":'.
    compact = len(data.translate(None, _WHITESPACE)) == len(data)
    if compact and data.count(b'":') == len(_FIELDS[cls]) + 1:
        for name in money:
            if b'"%s":"' % name.encode() in data:
                raise _string_money(name)
        return
    tokens = list(_KEY_OR_STRING.finditer(data))
    _check_duplicate_keys(tokens)
    for i, m in enumerate(tokens[:-1]):
        if m.group(2) and m.group(1)[1:-1].decode() in money:
            nxt = tokens[i + 1]
            if not nxt.group(2) and data[m.end() : nxt.start()].strip() == b"":
                raise _string_money(m.group(1)[1:-1].decode())


def _check_duplicate_keys(tokens: list[re.Match[bytes]]) -> None:
    keys = [m.group(1) for m in tokens if m.group(2)]
    if len(keys) != len(set(keys)):
        raise DecodeError(Reason.DUPLICATE_KEY, "a key appears more than once in the object")


def _string_money(name: str) -> DecodeError:
    return DecodeError(Reason.WRONG_TYPE, f"{name} must be a JSON number, not a string", name)


def _check_money(value: Decimal, name: str) -> None:
    cents = value * 100
    if cents <= 0:
        raise DecodeError(
            Reason.NON_POSITIVE_MONEY, f"{name} must be > 0, got {_shown(value)}", name
        )
    if cents >= MAX_MONEY_CENTS:
        raise DecodeError(
            Reason.MONEY_TOO_LARGE, f"{name} is implausibly large: {_shown(value)}", name
        )
    # exact, unlike ``cents`` (rounded to 28 digits): the quotient fits, the value is < 1e11
    if value % _CENT:
        raise DecodeError(
            Reason.MONEY_PRECISION,
            f"{name} has more than two decimal places: {_shown(value)}",
            name,
        )


def _shown(value: object, limit: int = 40) -> str:
    """``value`` for an error message: escaped (no control characters reach a log line)
    and cut to ``limit`` characters (a message never echoes a payload)."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _translate(message: str) -> DecodeError:
    """Map a msgspec validation message onto the contract's reason codes."""
    m = _AT_FIELD.search(message)
    field = m.group(1) if m else None
    if message.startswith("Object missing required field"):
        name = message.split("`")[1]
        return DecodeError(Reason.MISSING_FIELD, f"missing required field '{name}'", name)
    if message.startswith("Object contains unknown field"):
        name = message.split("`")[1]
        return DecodeError(Reason.UNKNOWN_FIELD, f"unknown field '{name}'", name)
    if message.startswith("Expected `object`") and field is None:
        return DecodeError(Reason.NOT_OBJECT, "message is not a JSON object")
    if field == "event_type":
        if message.startswith("Invalid value"):
            value = message.partition("'")[2].rpartition("' - at")[0]
            return DecodeError(
                Reason.UNKNOWN_EVENT_TYPE, f"unknown event_type {_shown(value)}", field
            )
        return DecodeError(Reason.WRONG_TYPE, "event_type must be a string", field)
    if field == "schema_version" and message.startswith("Invalid"):
        return DecodeError(
            Reason.UNSUPPORTED_SCHEMA_VERSION,
            f"unsupported schema_version (this decoder reads {SCHEMA_VERSION})",
            field,
        )
    if "datetime" in message or "RFC3339" in message:
        if "timezone" in message:
            return DecodeError(
                Reason.TIMESTAMP_WITHOUT_TIMEZONE, f"{field} has no timezone offset", field
            )
        return DecodeError(Reason.INVALID_TIMESTAMP, f"{field} is not an RFC 3339 timestamp", field)
    if field in _ALL_ID_FIELDS and "of length" in message:
        return DecodeError(
            Reason.INVALID_ID, f"{field} must be 1-{MAX_ID_LENGTH} characters long", field
        )
    if message.startswith("Expected"):
        what = message.split(" - at", maxsplit=1)[0]
        return DecodeError(Reason.WRONG_TYPE, f"{field}: {what}", field)
    return DecodeError(Reason.WRONG_TYPE, message, field)


# --- semantic checks (after the structure is known to be right) -------------------------


def _non_negative(value: float, name: str) -> None:
    if value < 0:
        raise DecodeError(Reason.NEGATIVE_WEIGHT, f"{name} must be >= 0", name)


def _check_project(ev: ProjectCreated) -> None:
    if not 0 <= ev.creator_reputation <= 10:
        raise DecodeError(
            Reason.REPUTATION_OUT_OF_RANGE,
            "creator_reputation must be within 0-10",
            "creator_reputation",
        )
    if ev.deadline <= ev.occurred_at:
        raise DecodeError(
            Reason.INCONSISTENT_TIME, "deadline must be after occurred_at", "deadline"
        )


def _check_milestone(ev: MilestoneCreated) -> None:
    if ev.index < 1:
        raise DecodeError(Reason.INDEX_OUT_OF_RANGE, "index starts at 1", "index")
    if not ev.occurred_at <= ev.voting_opens_at < ev.voting_closes_at:
        raise DecodeError(
            Reason.INCONSISTENT_TIME,
            "need occurred_at <= voting_opens_at < voting_closes_at",
            "voting_opens_at",
        )


def _check_pledge(ev: PledgeCreated) -> None:
    _non_negative(ev.voting_power, "voting_power")


def _check_vote(ev: VoteCast) -> None:
    _non_negative(ev.vote_weight, "vote_weight")


def _check_resolved(ev: MilestoneResolved) -> None:
    if not 0 <= ev.approval_rate <= 1:
        raise DecodeError(
            Reason.RATE_OUT_OF_RANGE, "approval_rate must be within 0-1", "approval_rate"
        )


def _check_nothing(ev: Event) -> None:
    return None


_VALIDATORS: Final[dict[type[Event], Callable[[Any], None]]] = {
    BackerRegistered: _check_nothing,
    ProjectCreated: _check_project,
    MilestoneCreated: _check_milestone,
    PledgeCreated: _check_pledge,
    VoteCast: _check_vote,
    MilestoneResolved: _check_resolved,
}


# --- encoding and schemas ---------------------------------------------------------------


def encode(event: Event) -> bytes:
    """Encode an event as compact wire JSON (money as JSON numbers)."""
    return _ENCODER.encode(event)


def json_schemas() -> dict[str, dict[str, Any]]:
    """JSON Schema of every event type, keyed by event_type (written to ``schemas/``)."""
    out: dict[str, dict[str, Any]] = {}
    for name, cls in EVENT_TYPE_BY_NAME.items():
        schema = msgspec.json.schema(cls)
        props = schema["$defs"][cls.__name__]["properties"]
        for money_field in _MONEY_FIELDS[cls]:
            # the wire form is a JSON number, not msgspec's default decimal-as-string
            props[money_field] = {"description": props[money_field]["description"], **_MONEY_SCHEMA}
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["title"] = name
        out[name] = schema
    return out


def cents_to_decimal(cents: int) -> Decimal:
    """Integer cents to an exact two-place Decimal (for building events in code).

    >>> cents_to_decimal(1250)
    Decimal('12.50')
    """
    return Decimal(cents).scaleb(-2)
