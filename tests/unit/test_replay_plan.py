"""The pure half of the replay: validation and rejects, time range, ordering, pacing.

Lines come from the generator's history (scale 0.2, seed 3) or are written here. Pacing is
checked on a simulated clock that advances by exactly the waits the pacer asks for.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from escrowguard.errors import ConfigError
from escrowguard.events import INPUT_TOPIC_SUFFIXES, decode, to_us
from escrowguard.producers.export import History
from escrowguard.producers.generator import generate_history
from escrowguard.producers.replay_plan import (
    REJECT_KEEP_BYTES,
    Pacer,
    Reject,
    TokenBucket,
    format_us,
    parse_event_time,
    parse_speed,
    plan_replay,
    time_bounds_us,
)
from escrowguard.reasons import Reason

BACKER = (
    b'{"event_type":"backer_registered","event_id":"%s","schema_version":1,'
    b'"occurred_at":"%s","backer_id":"b1","wallet":"w1"}'
)
PLEDGE = (
    b'{"event_type":"pledge_created","event_id":"pl1","schema_version":1,'
    b'"occurred_at":"2025-01-01T00:00:00Z","project_id":"p1","pledge_id":"pl1",'
    b'"backer_id":"b1","amount":%s,"source_wallet":"w1","voting_power":0.5}'
)


def backer(event_id: str, at: str) -> bytes:
    """A valid backer_registered line."""
    return BACKER % (event_id.encode(), at.encode())


@pytest.fixture(scope="module")
def history() -> History:
    """A small generated history: its events are valid and in occurred_at order."""
    return generate_history(3, 0.2)


# --- validation and rejects --------------------------------------------------------------


def test_every_valid_line_is_planned_once_byte_for_byte_with_its_key_and_topic(
    history: History,
) -> None:
    plan = plan_replay(history.events)
    assert len(plan) == len(history.events)
    assert plan.rejected == {} and plan.blank_lines == 0 and not plan.sorted_in_memory
    assert isinstance(plan.order, range)
    planned = list(plan.events())
    assert [p.value for p in planned] == history.events
    for p in planned:
        event = decode(p.value)
        assert p.key == event.key.encode()
        assert p.topic_suffix == event.topic_suffix
        assert p.occurred_us == event.occurred_us
    assert set(plan.per_topic()) == set(INPUT_TOPIC_SUFFIXES)
    assert sum(plan.per_topic().values()) == len(history.events)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"not json at all", Reason.NOT_JSON),
        (b"[1, 2]", Reason.NOT_OBJECT),
        (b'{"event_type":"nope","event_id":"x"}', Reason.UNKNOWN_EVENT_TYPE),
        (BACKER.replace(b',"wallet":"w1"', b"") % (b"e", b"2025-01-01T00:00:00Z"), "missing_field"),
        (BACKER % (b"e", b"2025-01-01T00:00:00"), Reason.TIMESTAMP_WITHOUT_TIMEZONE),
        (BACKER % (b"e", b"yesterday"), Reason.INVALID_TIMESTAMP),
        (PLEDGE % b"10.005", Reason.MONEY_PRECISION),
        (PLEDGE % b"-3", Reason.NON_POSITIVE_MONEY),
        (PLEDGE % b'"10.00"', Reason.WRONG_TYPE),
        (b'{"event_type":"backer_registered","event_id":"\xff"}', Reason.NOT_UTF8),
        (backer("e", "2025-01-01T00:00:00Z")[:-1] + b',"extra":1}', Reason.UNKNOWN_FIELD),
    ],
)
def test_invalid_lines_are_rejected_with_the_contract_reason(line: bytes, reason: str) -> None:
    rejects: list[Reject] = []
    ok = backer("ok", "2025-01-01T00:00:00Z")
    plan = plan_replay([ok, line, ok.replace(b'"ok"', b'"ok2"')], on_reject=rejects.append)
    assert len(plan) == 2
    assert plan.rejected == {str(reason): 1}
    assert [(r.line_number, r.reason) for r in rejects] == [(2, str(reason))]
    assert rejects[0].detail
    assert rejects[0].original == line.decode("utf-8", errors="replace")
    assert all(line != p.value for p in plan.events())


def test_reject_records_are_json_lines_with_a_bounded_original() -> None:
    huge = b'{"event_type":"nope","pad":"' + b"x" * 5000 + b'"}'
    rejects: list[Reject] = []
    plan_replay([huge], on_reject=rejects.append, max_bytes=10_000)
    record = json.loads(rejects[0].to_json())
    assert set(record) == {"line_number", "reason", "detail", "original", "truncated"}
    assert record["line_number"] == 1 and record["reason"] == "unknown_event_type"
    assert record["truncated"] is True
    assert len(record["original"].encode()) == REJECT_KEEP_BYTES


def test_a_line_over_the_size_limit_is_rejected_as_too_large() -> None:
    rejects: list[Reject] = []
    line = backer("e" * 10, "2025-01-01T00:00:00Z")
    plan = plan_replay([line], max_bytes=len(line) - 1, on_reject=rejects.append)
    assert len(plan) == 0 and plan.rejected == {"too_large": 1}


def test_unknown_fields_follow_the_worker_setting() -> None:
    line = backer("e", "2025-01-01T00:00:00Z")[:-1] + b',"extra":1}'
    plan = plan_replay([line], unknown_fields="ignore")
    assert [p.value for p in plan.events()] == [line]  # sent as it is, extra field and all


def test_blank_lines_are_skipped_and_line_numbers_count_them() -> None:
    rejects: list[Reject] = []
    lines = [b"\n", backer("a", "2025-01-01T00:00:00Z") + b"\r\n", b"   \n", b"oops\n"]
    plan = plan_replay(lines, on_reject=rejects.append)
    assert (plan.lines_read, plan.blank_lines, len(plan)) == (4, 2, 1)
    assert next(plan.events()).value.endswith(b"}")  # CR and LF stripped
    assert [r.line_number for r in rejects] == [4]


# --- order and range ---------------------------------------------------------------------


def test_unsorted_input_is_sorted_stably_and_says_so() -> None:
    lines = [
        backer("late", "2025-01-03T00:00:00Z"),
        backer("tie-1", "2025-01-02T00:00:00Z"),
        backer("early", "2025-01-01T00:00:00Z"),
        backer("tie-2", "2025-01-02T00:00:00Z"),
    ]
    plan = plan_replay(lines)
    assert plan.sorted_in_memory and plan.out_of_order_lines == 3  # each one earlier than "late"
    assert [decode(p.value).event_id for p in plan.events()] == ["early", "tie-1", "tie-2", "late"]


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_shuffle_plans_the_same_multiset_in_time_order(seed: int) -> None:
    days = [f"2025-01-{d:02d}T00:00:00Z" for d in (1, 2, 2, 3, 5, 8, 8, 13)]
    lines = [backer(f"e{i}", at) for i, at in enumerate(days)]
    shuffled = lines[:]
    random.Random(seed).shuffle(shuffled)
    planned = [p.value for p in plan_replay(shuffled).events()]
    assert Counter(planned) == Counter(lines)
    times = [decode(v).occurred_us for v in planned]
    assert times == sorted(times)
    for value in planned:  # ties keep the order they had in the file
        same = [v for v in shuffled if decode(v).occurred_us == decode(value).occurred_us]
        assert [v for v in planned if v in same] == same


def test_time_range_is_from_inclusive_until_exclusive(history: History) -> None:
    times = sorted({decode(e).occurred_us for e in history.events})
    start_us, end_us = times[100], times[200]
    plan = plan_replay(history.events, start_us=start_us, end_us=end_us)
    kept = [p.occurred_us for p in plan.events()]
    expected = [decode(e).occurred_us for e in history.events]
    expected = [t for t in expected if start_us <= t < end_us]
    assert kept == expected
    assert kept[0] == start_us and end_us not in kept
    assert plan.outside_range == len(history.events) - len(kept)


def test_invalid_lines_outside_the_range_are_still_rejected() -> None:
    plan = plan_replay(
        [b"garbage", backer("a", "2025-01-01T00:00:00Z")],
        start_us=to_us(datetime(2026, 1, 1, tzinfo=UTC)),
    )
    assert plan.rejected == {"not_json": 1} and plan.outside_range == 1 and len(plan) == 0


# --- options -----------------------------------------------------------------------------


def test_event_times_parse_rfc3339_and_dates_and_refuse_the_rest() -> None:
    assert to_us(parse_event_time("2025-03-01T00:00:00Z")) == to_us(
        parse_event_time("2025-03-01T01:00:00+01:00")
    )
    assert parse_event_time("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)
    for bad in ("2025-03-01T00:00:00", "yesterday", "2025-13-01", ""):
        with pytest.raises(ConfigError):
            parse_event_time(bad)


def test_an_empty_time_range_is_refused() -> None:
    day = parse_event_time("2025-03-01")
    with pytest.raises(ConfigError, match="later than"):
        time_bounds_us(day, day)
    assert time_bounds_us(None, None) == (None, None)


@pytest.mark.parametrize("text", ["0", "-2", "fast", "nan", "inf", ""])
def test_speed_must_be_max_or_positive(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_speed(text)


def test_format_us_round_trips_microseconds() -> None:
    assert format_us(1_735_689_600_000_001) == "2025-01-01T00:00:00.000001Z"


# --- pacing ------------------------------------------------------------------------------


def simulate(pacer: Pacer, occurred_us: list[int], overhead_s: float = 0.0) -> list[float]:
    """Send times on a simulated clock that sleeps exactly as asked (waits < 1 ms skipped,
    like the replay loop); ``overhead_s`` is the cost of one send."""
    now = 0.0
    sent_at = []
    for at_us in occurred_us:
        wait = pacer.delay_s(at_us, now)
        if wait >= 0.001:
            now += wait
        sent_at.append(now)
        now += overhead_s
    return sent_at


def test_max_speed_never_waits() -> None:
    pacer = Pacer(speed=None, rate=None, first_us=0)
    assert not pacer.paced
    assert simulate(pacer, [0, 10**12, 2 * 10**12]) == [0.0, 0.0, 0.0]


def test_speed_n_waits_event_time_gaps_divided_by_n() -> None:
    minute_us = 60_000_000
    times = [0, minute_us, minute_us, 10 * minute_us]
    sent = simulate(Pacer(speed=60.0, rate=None, first_us=0), times)
    assert sent == pytest.approx([0.0, 1.0, 1.0, 10.0])


def test_speed_schedule_does_not_drift_when_sends_cost_time() -> None:
    times = [i * 1_000_000 for i in range(100)]  # one event per event-time second
    sent = simulate(Pacer(speed=100.0, rate=None, first_us=0), times, overhead_s=0.004)
    assert sent[-1] == pytest.approx(0.99, abs=0.005)  # due times are absolute, not gaps


@pytest.mark.parametrize("rate", [50.0, 1000.0, 20_000.0])
def test_rate_caps_every_window_up_to_a_short_burst(rate: float) -> None:
    n = int(rate * 2)
    sent = simulate(Pacer(speed=None, rate=rate, first_us=0), [0] * n)
    burst = max(1.0, rate * 0.01) + rate * 0.001  # + waits under 1 ms, carried not slept
    for window_s in (0.01, 0.1, 1.0):
        j = 0
        for i, start in enumerate(sent):  # events in [start, start + window)
            while j < n and sent[j] < start + window_s:
                j += 1
            assert j - i <= burst + rate * window_s + 1
    assert sent[-1] == pytest.approx(
        (n - max(1.0, rate * 0.01)) / rate, rel=0.02
    )  # and no slower than asked


def test_rate_and_speed_together_take_the_later_of_both() -> None:
    sec = 1_000_000
    sent = simulate(Pacer(speed=1.0, rate=2.0, first_us=0), [0, 0, 0, 5 * sec])
    assert sent == pytest.approx([0.0, 0.5, 1.0, 5.0])


def test_token_bucket_refills_up_to_its_burst_only() -> None:
    bucket = TokenBucket(rate_per_s=10, burst=3)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.1)
    assert [bucket.reserve(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # burst, not 1000
    assert bucket.reserve(100.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        TokenBucket(rate_per_s=0)
