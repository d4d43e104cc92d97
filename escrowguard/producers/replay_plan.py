"""What a replay sends, in which order, and when: the pure half of ``escrowguard replay``.

No Kafka, no files, no wall clock. ``plan_replay`` validates each line with the wire
contract (``events.decode``), drops blank lines, rejects invalid ones (``Reject``), keeps
only events inside the ``[from, until)`` event-time range, and orders the rest by
``occurred_at`` (a stable sort: ties keep file order; no sort at all when the file is
already in order). To stay small for million-line files it keeps each kept line's raw bytes
(what is sent, byte for byte), its key, topic index and event time in compact arrays, never
the decoded events. ``Pacer`` turns ``--speed`` and ``--rate`` into waits, from a clock
value the caller passes in.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

import msgspec

from escrowguard.errors import ConfigError, DecodeError
from escrowguard.events import (
    DEFAULT_MAX_MESSAGE_BYTES,
    EVENT_TYPES,
    INPUT_TOPIC_SUFFIXES,
    Timestamp,
    decode,
    from_us,
    to_us,
)

#: How much of a rejected line the rejects file keeps (bytes of the original).
REJECT_KEEP_BYTES: Final = 1024
#: A token bucket holds at most this many seconds' worth of events: bursts stay short.
BURST_S: Final = 0.01

_TOPIC_INDEX: Final = {suffix: i for i, suffix in enumerate(INPUT_TOPIC_SUFFIXES)}
_INDEX_OF_TYPE: Final = {cls: _TOPIC_INDEX[cls.topic_suffix] for cls in EVENT_TYPES}


@dataclass(frozen=True)
class Reject:
    """An input line that was not sent, and why (one line of the rejects file)."""

    line_number: int
    reason: str
    detail: str
    original: str
    truncated: bool

    def to_json(self) -> bytes:
        """One JSON line (no newline): line_number, reason, detail, original, truncated."""
        return msgspec.json.encode(self)


def reject_line(line_number: int, raw: bytes, error: DecodeError) -> Reject:
    """The rejects-file record of a line ``events.decode`` refused (original kept as text).

    >>> reject_line(3, b'{"a":1}', DecodeError("not_json", "message is not JSON")).reason
    'not_json'
    """
    kept = raw[:REJECT_KEEP_BYTES]
    return Reject(
        line_number=line_number,
        reason=str(error.reason),
        detail=error.message,
        original=kept.decode("utf-8", errors="replace"),
        truncated=len(raw) > len(kept),
    )


@dataclass(frozen=True)
class PlannedEvent:
    """One event to send: its topic suffix, key, raw bytes and event time."""

    topic_suffix: str
    key: bytes
    value: bytes
    occurred_us: int


@dataclass(frozen=True)
class ReplayPlan:
    """The events to send, in send order, plus what was left out and why.

    ``order`` indexes the kept arrays in ``(occurred_at, line)`` order; it is a ``range``
    when the input was already in order (``sorted_in_memory`` is then False).
    """

    values: list[bytes]
    keys: list[bytes]
    topic_index: array[int]
    occurred_us: array[int]
    order: range | array[int]
    lines_read: int
    blank_lines: int
    rejected: dict[str, int]
    outside_range: int
    out_of_order_lines: int

    @property
    def sorted_in_memory(self) -> bool:
        """True when the input was not in occurred_at order and had to be sorted."""
        return self.out_of_order_lines > 0

    def __len__(self) -> int:
        return len(self.values)

    def per_topic(self) -> dict[str, int]:
        """Planned events per topic suffix (in the contract's topic order, zeros left out)."""
        counts = Counter(self.topic_index)
        return {s: counts[i] for s, i in _TOPIC_INDEX.items() if counts[i]}

    def events(self) -> Iterator[PlannedEvent]:
        """The planned events in send order."""
        for i in self.order:
            yield PlannedEvent(
                INPUT_TOPIC_SUFFIXES[self.topic_index[i]],
                self.keys[i],
                self.values[i],
                self.occurred_us[i],
            )


def plan_replay(
    lines: Iterable[bytes],
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    unknown_fields: Literal["reject", "ignore"] = "reject",
    on_reject: Callable[[Reject], None] | None = None,
    on_line: Callable[[int], None] | None = None,
) -> ReplayPlan:
    """Validate, filter and order the lines of an events.jsonl (1-based line numbers).

    Lines may end with ``\\n`` or ``\\r\\n``; whitespace-only lines are skipped and counted.
    Every non-blank line is validated, also when it falls outside ``[start_us, end_us)``.
    ``on_reject`` receives each invalid line's ``Reject``; ``on_line`` the count of lines read
    so far, every 4,096 lines (progress).

    >>> ok = (b'{"event_type":"backer_registered","event_id":"e%d","schema_version":1,'
    ...       b'"occurred_at":"2025-01-0%dT00:00:00Z","backer_id":"b1","wallet":"w1"}')
    >>> plan = plan_replay([ok % (1, 2), b"", b"nope", ok % (2, 1)])
    >>> [decode(e.value).event_id for e in plan.events()], plan.rejected, plan.blank_lines
    (['e2', 'e1'], {'not_json': 1}, 1)
    """
    values: list[bytes] = []
    keys: list[bytes] = []
    topic_index: array[int] = array("b")
    occurred: array[int] = array("q")
    key_cache: dict[str, bytes] = {}
    rejected: Counter[str] = Counter()
    blank = outside = out_of_order = 0
    latest = -(2**63)
    line_number = 0
    for line_number, line in enumerate(lines, start=1):
        if on_line is not None and line_number % 4096 == 0:
            on_line(line_number)
        raw = line.rstrip(b"\r\n")
        if not raw.strip():
            blank += 1
            continue
        try:
            event = decode(raw, max_bytes=max_bytes, unknown_fields=unknown_fields)
        except DecodeError as exc:
            rejected[str(exc.reason)] += 1
            if on_reject is not None:
                on_reject(reject_line(line_number, raw, exc))
            continue
        at_us = event.occurred_us
        if (start_us is not None and at_us < start_us) or (end_us is not None and at_us >= end_us):
            outside += 1
            continue
        if at_us < latest:
            out_of_order += 1
        else:
            latest = at_us
        key = event.key
        cached = key_cache.get(key)
        if cached is None:
            cached = key_cache[key] = key.encode()
        values.append(raw)
        keys.append(cached)
        topic_index.append(_INDEX_OF_TYPE[type(event)])
        occurred.append(at_us)
    if on_line is not None:
        on_line(line_number)
    order: range | array[int] = range(len(values))
    if out_of_order:
        order = array("q", sorted(range(len(values)), key=occurred.__getitem__))
    return ReplayPlan(
        values=values,
        keys=keys,
        topic_index=topic_index,
        occurred_us=occurred,
        order=order,
        lines_read=line_number,
        blank_lines=blank,
        rejected=dict(rejected.most_common()),
        outside_range=outside,
        out_of_order_lines=out_of_order,
    )


# --- options -----------------------------------------------------------------------------


def parse_event_time(text: str, option: str = "--from") -> datetime:
    """An RFC 3339 timestamp with an offset, or a bare date (midnight UTC), as a datetime.

    >>> parse_event_time("2025-03-01T12:00:00+01:00").isoformat()
    '2025-03-01T12:00:00+01:00'
    >>> parse_event_time("2025-03-01").isoformat()
    '2025-03-01T00:00:00+00:00'
    """
    text = text.strip()
    if len(text) == 10 and text[4:5] == "-" and text[7:8] == "-":
        text += "T00:00:00Z"
    try:
        return msgspec.json.decode(msgspec.json.encode(text), type=Timestamp)
    except msgspec.ValidationError:
        raise ConfigError(
            f"{option} {text!r}: expected an RFC 3339 timestamp with a timezone offset "
            "(2025-03-01T00:00:00Z) or a date (2025-03-01, midnight UTC)",
            "invalid_option",
        ) from None


def time_bounds_us(
    time_from: datetime | None, time_until: datetime | None
) -> tuple[int | None, int | None]:
    """``(start_us, end_us)`` of an event-time range; ConfigError when it is empty.

    >>> time_bounds_us(None, parse_event_time("1970-01-01T00:00:01Z"))
    (None, 1000000)
    """
    start = to_us(time_from) if time_from is not None else None
    end = to_us(time_until) if time_until is not None else None
    if start is not None and end is not None and end <= start:
        raise ConfigError(
            f"--until ({time_until}) must be later than --from ({time_from}): "
            "the range is [from, until)",
            "invalid_option",
        )
    return start, end


def parse_speed(text: str) -> float | None:
    """``max`` (None: as fast as possible) or a positive multiple of real time.

    >>> parse_speed("max"), parse_speed("60"), parse_speed("0.5")
    (None, 60.0, 0.5)
    """
    if text.strip().lower() == "max":
        return None
    try:
        speed = float(text)
    except ValueError:
        speed = math.nan
    if not (math.isfinite(speed) and speed > 0):
        raise ConfigError(
            f"--speed {text!r}: expected 'max' or a positive number (60 = 60x real time)",
            "invalid_option",
        )
    return speed


# --- pacing ------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket holding at most ``burst`` tokens, refilled at ``rate_per_s``.

    ``reserve(now_s)`` takes one token and returns how long the caller must wait before
    using it (the balance may go negative: waits queue up, so the long-run rate is exact).

    >>> bucket = TokenBucket(rate_per_s=10, burst=1)
    >>> [round(bucket.reserve(0.0), 3) for _ in range(3)]
    [0.0, 0.1, 0.2]
    """

    def __init__(self, rate_per_s: float, burst: float = 1.0) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._updated_s: float | None = None

    def reserve(self, now_s: float) -> float:
        """Take a token at ``now_s``; seconds to wait before sending (0 when one is free)."""
        if self._updated_s is not None and now_s > self._updated_s:
            gained = (now_s - self._updated_s) * self.rate_per_s
            self._tokens = min(self.burst, self._tokens + gained)
        if self._updated_s is None or now_s > self._updated_s:
            self._updated_s = now_s
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate_per_s


class Pacer:
    """When to send each event, for ``--speed N`` (event-time gaps / N) and ``--rate R``.

    Times are seconds since the replay started, on whatever clock the caller uses.
    ``delay_s(occurred_us, now_s)`` is how long to wait before sending that event.

    >>> pacer = Pacer(speed=60.0, rate=None, first_us=0)
    >>> pacer.delay_s(60_000_000, now_s=0.25)   # a minute of event time at 60x: 1 s in
    0.75
    """

    def __init__(self, speed: float | None, rate: float | None, first_us: int) -> None:
        self.speed = speed
        self.first_us = first_us
        burst = max(1.0, (rate or 0.0) * BURST_S)
        self.bucket = TokenBucket(rate, burst) if rate else None

    @property
    def paced(self) -> bool:
        """False at ``--speed max`` without ``--rate``: nothing ever waits."""
        return self.speed is not None or self.bucket is not None

    def due_s(self, occurred_us: int) -> float:
        """When ``--speed`` alone would send an event (0 at max speed)."""
        if self.speed is None:
            return 0.0
        return (occurred_us - self.first_us) / 1e6 / self.speed

    def delay_s(self, occurred_us: int, now_s: float) -> float:
        """Seconds to wait before sending this event (reserves a rate token for it)."""
        send_at = max(now_s, self.due_s(occurred_us))
        if self.bucket is not None:
            send_at += self.bucket.reserve(send_at)
        return send_at - now_s


def format_us(us: int) -> str:
    """Epoch microseconds as an RFC 3339 UTC string (for summaries).

    >>> format_us(1_735_689_600_000_000)
    '2025-01-01T00:00:00Z'
    """
    text = from_us(us).isoformat(timespec="microseconds" if us % 1_000_000 else "seconds")
    return text.replace("+00:00", "Z")
