"""Hostile input: what the wire contract and a running worker do with malformed, malicious
and duplicated messages.

- ``decode`` under hypothesis (10,000 examples per property): on arbitrary bytes and on
  mutated valid events, the only exception that ever leaves it is ``DecodeError`` with a
  contract reason code; what it accepts re-encodes to the same event.
- A running worker fed, by a raw kafka-python producer on every input topic, malformed
  bytes, wrong types, oversized messages, unknown event types and schema versions,
  duplicate event ids, timestamps far in the future and the past, references to unknown
  projects/milestones/backers and votes from non-backers, interleaved with the valid
  history: each lands in the dead-letter topic with its own reason code (duplicates are
  counted and dropped), the worker never stops, and the alert/freeze/decision ids of the
  valid events equal those of a clean run.
- An exception raised while handling one event (injected into the real worker with a
  ``sitecustomize`` module on the child's PYTHONPATH: test-only, nothing in the package)
  dead-letters that event as ``processing_error``; nothing is acked silently.
"""

from __future__ import annotations

import base64
import json
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escrowguard.errors import DecodeError
from escrowguard.events import (
    EVENT_TYPE_BY_NAME,
    INPUT_TOPIC_SUFFIXES,
    MilestoneCreated,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
    decode,
    encode,
)
from escrowguard.outputs import Alert, AlertKind, DeadLetter
from escrowguard.producers.generator import generate_history
from escrowguard.reasons import CONTRACT_REASONS, Reason
from escrowguard.settings import Settings
from tests.faults.conftest_hostile import (
    Message,
    TrainedBundle,
    clean_ids,
    describe_difference,
    event_message,
    id_sets,
    metric_value,
    namespace,
    reference_ids,
    run_worker,
    trained_bundle,
)

__all__ = ["trained_bundle"]

pytestmark = pytest.mark.faults

# --- decode under hypothesis -----------------------------------------------------------------

_SAMPLE_HISTORY = generate_history(3, 0.05)


def _samples() -> list[dict[str, Any]]:
    """A few valid events of every type, as JSON objects."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for line in _SAMPLE_HISTORY.events:
        obj = json.loads(line)
        bucket = by_type.setdefault(obj["event_type"], [])
        if len(bucket) < 20:
            bucket.append(obj)
    assert set(by_type) == set(EVENT_TYPE_BY_NAME)
    return [obj for objs in by_type.values() for obj in objs]


SAMPLES = _samples()
FIELD_NAMES = sorted({key for obj in SAMPLES for key in obj} | {"extra", ""})
#: Values that sit on the contract's edges (money, ranges, ids, times, types).
EDGE_VALUES = [
    0, -1, 1, 2, 11, 0.5, 1.5, -0.0, 1.234, 12.345, 12.5, 1e12, 1e308, 2**63, 2**64,
    True, False, None, "", "1", "12.50", "NaN", "x" * 65, "a\u0001b", "\ud800", [], {}, [1],
    "2025-01-01T00:00:00Z", "2025-01-01T00:00:00", "2025-13-01T00:00:00Z",
    "2025-06-01T12:00:00+14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
]  # fmt: skip


def _value_pool(seed: int = 1, size: int = 400) -> list[Any]:
    """Edge values plus seeded random ones: mutations index into it (one cheap integer draw
    per value keeps 10,000 examples fast; hypothesis still searches the indices)."""
    rng = random.Random(seed)
    pool: list[Any] = list(EDGE_VALUES)
    while len(pool) < size:
        kind = rng.randrange(5)
        if kind == 0:
            pool.append(rng.randint(-(2**70), 2**70))
        elif kind == 1:
            pool.append(rng.uniform(-1e6, 1e6) * 10 ** rng.randint(-5, 300))
        elif kind == 2:
            pool.append(round(rng.uniform(0, 10_000), rng.randint(0, 4)))
        elif kind == 3:
            pool.append("".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 12))))
        else:
            pool.append({"k": rng.random()} if rng.random() < 0.5 else [rng.random(), None])
    return pool


VALUE_POOL = _value_pool()
JSON_VALUES = st.recursive(
    st.sampled_from(VALUE_POOL) | st.floats(allow_nan=True, allow_infinity=True),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=4,
)
DECODE_SETTINGS = settings(
    max_examples=10_000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
_SEPARATORS = [(",", ":"), (", ", ": "), (",\n", " :\t")]
_INT = st.integers(0, 2**20)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid event with a few structural edits, serialised loosely, maybe byte-mangled."""
    obj: Any = dict(SAMPLES[draw(st.integers(0, len(SAMPLES) - 1))])
    for op, k, v in draw(st.lists(st.tuples(st.integers(0, 5), _INT, _INT), max_size=3)):
        names = [*sorted(obj), *FIELD_NAMES] if isinstance(obj, dict) else FIELD_NAMES
        key = names[k % len(names)]
        if not isinstance(obj, dict):
            break
        if op <= 1:  # set a field (its own, mostly) to an edge or random value
            obj[key] = VALUE_POOL[v % len(VALUE_POOL)]
        elif op == 2:
            obj.pop(key, None)
        elif op == 3:
            obj["event_type"] = [*EVENT_TYPE_BY_NAME, "refund", 1, None][v % 9]
        elif op == 4:
            obj[key] = obj[names[v % len(obj)]] if obj else None
        else:
            obj = {"event": obj} if v % 2 else [obj]
    style = draw(st.integers(0, 5))
    text = json.dumps(
        obj, allow_nan=True, ensure_ascii=style % 2 == 0, separators=_SEPARATORS[style % 3]
    )
    data = text.encode("utf-8", errors="surrogatepass")
    edits = draw(st.lists(st.tuples(st.integers(0, 4), _INT, st.integers(0, 255)), max_size=2))
    for kind, where, byte in edits if draw(st.integers(0, 3)) == 0 else []:
        at = where % (len(data) + 1)
        if kind == 0:  # insert a byte
            data = data[:at] + bytes([byte]) + data[at:]
        elif kind == 1:  # delete a few bytes
            data = data[:at] + data[at + byte % 4 + 1 :]
        elif kind == 2:  # truncate
            data = data[:at]
        elif kind == 3:  # duplicate a key/value pair
            comma = data.find(b",", at)
            if comma > 0:
                data = data[: comma + 1] + data[1 : comma + 1] + data[comma + 1 :]
        elif data:  # overwrite one byte
            at = at % len(data)
            data = data[:at] + bytes([byte]) + data[at + 1 :]
    return data


def _decode_or_reason(data: bytes, max_bytes: int, unknown: str) -> str:
    """decode; a DecodeError must carry a contract reason, anything else propagates.
    Returns the reason, or "accepted"."""
    try:
        event = decode(data, max_bytes=max_bytes, unknown_fields=unknown)  # type: ignore[arg-type]
    except DecodeError as exc:
        assert exc.reason in CONTRACT_REASONS, exc.reason
        return str(exc.reason)
    # what is accepted is a well-formed event: it re-encodes to the same event
    assert decode(encode(event)) == event
    return "accepted"


def test_decode_lets_only_decode_error_escape_on_arbitrary_bytes() -> None:
    outcomes: Counter[str] = Counter()

    @DECODE_SETTINGS
    @given(
        data=st.binary(max_size=600)
        | st.builds(lambda v: json.dumps(v, allow_nan=True).encode(), JSON_VALUES),
        max_bytes=st.sampled_from([64 * 1024, 100]),
        unknown=st.sampled_from(["reject", "ignore"]),
    )
    def decode_arbitrary(data: bytes, max_bytes: int, unknown: str) -> None:
        outcomes[_decode_or_reason(data, max_bytes, unknown)] += 1

    decode_arbitrary()
    assert sum(outcomes.values()) >= 10_000, outcomes


def test_decode_lets_only_decode_error_escape_on_mutated_events() -> None:
    outcomes: Counter[str] = Counter()

    @DECODE_SETTINGS
    @given(data=mutated_events(), unknown=st.sampled_from(["reject", "ignore"]))
    def decode_mutated(data: bytes, unknown: str) -> None:
        outcomes[_decode_or_reason(data, 64 * 1024, unknown)] += 1

    decode_mutated()
    # worth something only if the mutants get past the JSON parser into the validation:
    # many are accepted, and most of the contract's reasons are reached
    assert sum(outcomes.values()) >= 10_000, outcomes
    assert outcomes["accepted"] >= 100, outcomes
    assert len(set(outcomes) & CONTRACT_REASONS) >= 16, outcomes


# --- a running worker, fed hostile messages among the valid history ----------------------------

DAY = timedelta(days=1)


def _ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def contract_noise(templates: dict[str, dict[str, Any]]) -> list[tuple[bytes | None, str]]:
    """Messages the wire contract rejects, each with the reason it must get."""
    pledge, vote = templates["pledge_created"], templates["vote_cast"]
    project, milestone = templates["project_created"], templates["milestone_created"]
    resolved, backer = templates["milestone_resolved"], templates["backer_registered"]

    def edit(base: dict[str, Any], **changes: Any) -> bytes:
        obj = {**base, "event_id": f"hostile-{len(changes)}-{sorted(changes)[0]}"}
        for key, value in changes.items():
            if value is _DELETE:
                obj.pop(key)
            else:
                obj[key] = value
        return _json(obj)

    valid_pledge = _json(pledge)
    return [
        (b"\xff\xfe\x00 not utf-8 \xc3\x28", Reason.NOT_UTF8),
        (b'{"event_type": "pledge_created", "amount": NaN', Reason.NOT_JSON),
        (b"", Reason.NOT_JSON),
        (None, Reason.NOT_JSON),  # a tombstone: no value at all
        (b"[1, 2, 3]", Reason.NOT_OBJECT),
        (valid_pledge[:-1] + b',"event_id":"second"}', Reason.DUPLICATE_KEY),
        (edit(pledge, event_type="refund_issued"), Reason.UNKNOWN_EVENT_TYPE),
        (edit(vote, schema_version=2), Reason.UNSUPPORTED_SCHEMA_VERSION),
        (edit(pledge, amount=_DELETE), Reason.MISSING_FIELD),
        (edit(vote, approve="yes"), Reason.WRONG_TYPE),
        (
            valid_pledge.replace(b'"amount":', b'"amount":"', 1).replace(
                b',"source', b'","source', 1
            ),
            Reason.WRONG_TYPE,
        ),
        (edit(backer, referrer="b1"), Reason.UNKNOWN_FIELD),
        (edit(backer, backer_id="x" * 65), Reason.INVALID_ID),
        (edit(backer, wallet="w\u0007"), Reason.INVALID_ID),
        (edit(vote, occurred_at="yesterday"), Reason.INVALID_TIMESTAMP),
        (
            edit(vote, occurred_at=vote["occurred_at"].rstrip("Z")),
            Reason.TIMESTAMP_WITHOUT_TIMEZONE,
        ),
        (edit(pledge, amount=0), Reason.NON_POSITIVE_MONEY),
        (edit(pledge, amount=12.345), Reason.MONEY_PRECISION),
        (edit(pledge, amount=1e12), Reason.MONEY_TOO_LARGE),
        (edit(project, creator_reputation=11), Reason.REPUTATION_OUT_OF_RANGE),
        (edit(resolved, approval_rate=1.5), Reason.RATE_OUT_OF_RANGE),
        (edit(vote, vote_weight=-1.0), Reason.NEGATIVE_WEIGHT),
        (edit(milestone, index=0), Reason.INDEX_OUT_OF_RANGE),
        (edit(project, deadline=project["occurred_at"]), Reason.INCONSISTENT_TIME),
        (edit(backer, wallet="w" * 60, pad="x" * 70_000), Reason.TOO_LARGE),
    ]


_DELETE = object()


class HistoryFacts:
    """What the valid history says, for crafting references that cannot hold."""

    def __init__(self, lines: tuple[bytes, ...]) -> None:
        self.events = [decode(x) for x in lines]
        self.templates: dict[str, dict[str, Any]] = {}
        for line in lines:
            obj = json.loads(line)
            self.templates.setdefault(obj["event_type"], obj)

    def first_after(self, start: int, kind: type) -> int:
        return next(i for i in range(start, len(self.events)) if isinstance(self.events[i], kind))

    def registered_before(self, i: int) -> list[str]:
        return [e.backer_id for e in self.events[:i] if type(e).__name__ == "BackerRegistered"]

    def backers_of(self, project_id: str, i: int) -> set[str]:
        return {
            e.backer_id
            for e in self.events[:i]
            if isinstance(e, PledgeCreated) and e.project_id == project_id
        }


def stream_noise(facts: HistoryFacts, start: int) -> list[tuple[int, Message, str]]:
    """Messages that decode but that the history rejects, each placed right after the valid
    event (index into the history) whose time it takes: (index, message, reason)."""
    ev = facts.events
    out: list[tuple[int, Message, str]] = []

    def place(i: int, obj: dict[str, Any], reason: str, suffix: str | None = None) -> None:
        event = decode(_json(obj))
        out.append((i, (suffix or event.topic_suffix, event.key.encode(), _json(obj)), reason))

    # a pledge: to a project that does not exist; from a backer who never registered
    i = facts.first_after(start, PledgeCreated)
    p = json.loads(encode(ev[i]))
    place(
        i,
        {**p, "event_id": "hx-pl-1", "pledge_id": "hx-pl-1", "project_id": "p-none"},
        Reason.UNKNOWN_PROJECT,
    )
    place(
        i,
        {**p, "event_id": "hx-pl-2", "pledge_id": "hx-pl-2", "backer_id": "b-none"},
        Reason.UNKNOWN_BACKER,
    )
    # a valid-looking pledge on the votes topic
    place(i, {**p, "event_id": "hx-pl-3", "pledge_id": "hx-pl-3"}, Reason.WRONG_TOPIC, "votes")
    # a pledge after its project's deadline, by a registered backer
    t = ev[i].occurred_at
    closed = next(e for e in ev[:i] if isinstance(e, ProjectCreated) and e.deadline < t)
    place(
        i,
        {**p, "event_id": "hx-pl-4", "pledge_id": "hx-pl-4", "project_id": closed.project_id},
        Reason.CAMPAIGN_CLOSED,
    )
    # votes: for a milestone that does not exist; from a registered non-backer; too late
    j = facts.first_after(i, VoteCast)
    v = json.loads(encode(ev[j]))
    vote = ev[j]
    assert isinstance(vote, VoteCast)
    place(
        j,
        {**v, "event_id": "hx-vo-1", "vote_id": "hx-vo-1", "milestone_id": "m-none"},
        Reason.UNKNOWN_MILESTONE,
    )
    backers = facts.backers_of(vote.project_id, j)
    outsider = next(b for b in facts.registered_before(j) if b not in backers)
    place(
        j,
        {**v, "event_id": "hx-vo-2", "vote_id": "hx-vo-2", "backer_id": outsider},
        Reason.NOT_A_BACKER,
    )
    t = vote.occurred_at
    over = next(e for e in ev[:j] if isinstance(e, MilestoneCreated) and e.voting_closes_at < t)
    voter = next(iter(sorted(facts.backers_of(over.project_id, j))))
    place(
        j,
        {
            **v,
            "event_id": "hx-vo-3",
            "vote_id": "hx-vo-3",
            "project_id": over.project_id,
            "milestone_id": over.milestone_id,
            "backer_id": voter,
        },
        Reason.VOTING_CLOSED,
    )
    # an existing project and backer created again (new event ids)
    k = facts.first_after(j, PledgeCreated)
    t = ev[k].occurred_at
    old = next(e for e in ev[:k] if isinstance(e, ProjectCreated))
    again = json.loads(encode(old))
    again.update(event_id="hx-pr-1", occurred_at=_ts(t), deadline=_ts(t + 30 * DAY))
    place(k, again, Reason.ALREADY_EXISTS)
    b = dict(facts.templates["backer_registered"])
    place(k, {**b, "event_id": "hx-ba-1", "occurred_at": _ts(t)}, Reason.ALREADY_EXISTS)
    # far in the past (after events already scored) and far in the future
    place(
        k,
        {**b, "event_id": "hx-ba-2", "backer_id": "b-past", "occurred_at": "2001-01-01T00:00:00Z"},
        Reason.TOO_LATE,
    )
    place(
        k,
        {
            **b,
            "event_id": "hx-ba-3",
            "backer_id": "b-future",
            "occurred_at": "2100-01-01T00:00:00Z",
        },
        Reason.FUTURE_TIMESTAMP,
    )
    return out


def duplicate_noise(
    facts: HistoryFacts, lines: tuple[bytes, ...], start: int
) -> list[tuple[int, Message]]:
    """Copies of valid events (same event id) sent again, 40 events later (likely in the
    same batch as the original) and 3,000 later (long after it was stored), some with other
    content: every one must be counted as a duplicate and dropped."""
    out = []
    for kind in ("BackerRegistered", "ProjectCreated", "PledgeCreated", "VoteCast"):
        i = next(n for n in range(start, len(lines)) if type(facts.events[n]).__name__ == kind)
        out += [(i + 40, event_message(lines[i])), (i + 3000, event_message(lines[i]))]
    i = facts.first_after(start + 500, PledgeCreated)
    changed = json.loads(lines[i])
    changed["amount"] = 99_999.0
    suffix, key, _ = event_message(lines[i])
    out += [(i + 40, (suffix, key, _json(changed))), (i + 3000, (suffix, key, _json(changed)))]
    return out


def test_hostile_messages_are_dead_lettered_and_the_valid_events_decided_as_without_them(
    settings: Settings, trained_bundle: TrainedBundle, tmp_path: Path
) -> None:
    lines = trained_bundle.lines
    facts = HistoryFacts(lines)
    cut = len(lines) // 5  # phase 1: the first fifth, decided before any noise arrives
    planned: list[tuple[int, Message, str | None]] = []
    rng = random.Random(11)
    for raw, reason in contract_noise(facts.templates):
        for suffix in INPUT_TOPIC_SUFFIXES:  # every input topic gets each one
            planned.append((rng.randrange(cut, len(lines)), (suffix, b"hostile", raw), reason))
    huge = b'{"event_type":"backer_registered","pad":"' + b"x" * 900_000 + b'"}'
    planned.append((rng.randrange(cut, len(lines)), ("pledges", b"huge", huge), Reason.TOO_LARGE))
    planned += [(i, m, r) for i, m, r in stream_noise(facts, cut + 200)]
    duplicates = duplicate_noise(facts, lines, cut + 100)
    planned += [(i, m, None) for i, m in duplicates]

    by_index: dict[int, list[tuple[Message, str | None]]] = {}
    for i, message, reason in planned:
        by_index.setdefault(i, []).append((message, reason))
    phase1 = [event_message(x) for x in lines[:cut]]
    phase2: list[Message] = []
    expected: list[str | None] = []  # per phase-2 message: its reason, None when valid
    for i in range(cut, len(lines)):
        phase2.append(event_message(lines[i]))
        expected.append(None)
        for message, reason in by_index.get(i, []):
            phase2.append(message)
            expected.append(reason if reason is not None else "duplicate")

    clean = clean_ids(settings, trained_bundle, tmp_path)
    run = run_worker(namespace(settings, trained_bundle), [phase1, phase2], tmp_path / "worker.log")

    # every message was consumed and committed; the worker never stopped (run_worker
    # checks it is alive after each phase)
    assert run.committed == run.produced == len(lines) + len(planned)
    # each hostile message has exactly one dead letter, at its position, with its reason
    letters: dict[tuple[str, int, int], DeadLetter] = {}
    for letter in run.outputs.dead_letters:
        letters.setdefault(
            (letter.source_topic, letter.source_partition, letter.source_offset), letter
        )
    want: dict[tuple[str, int, int], str] = {}
    sent: dict[tuple[str, int, int], bytes] = {}
    for message, future, reason in zip(phase2, run.futures[1], expected, strict=True):
        if reason is None or reason == "duplicate":
            continue
        meta = future.get(timeout=10)  # type: ignore[attr-defined]
        want[(meta.topic, meta.partition, meta.offset)] = reason
        sent[(meta.topic, meta.partition, meta.offset)] = message[2] or b""
    got = {pos: letter.reason for pos, letter in letters.items()}
    assert got == want, {
        p: (got.get(p), want.get(p)) for p in set(got) | set(want) if got.get(p) != want.get(p)
    }
    # the original bytes are kept (bounded) for inspection
    for pos, letter in letters.items():
        raw = sent[pos]
        assert letter.original_size == len(raw)
        kept = raw[: 16 * 1024]
        assert letter.truncated == (len(raw) > len(kept))
        if letter.encoding == "utf-8":
            assert letter.original.encode() == kept
        else:
            assert base64.b64decode(letter.original) == kept
    # every reason code the contract and the stream give has been exercised
    assert set(want.values()) == set(Reason) - {Reason.DUPLICATE_EVENT, Reason.PROCESSING_ERROR}
    # duplicates are counted once each and dropped (no dead letter, no second effect)
    assert metric_value(run.metrics, "escrowguard_duplicates_total") == len(duplicates)
    assert len(run.outputs.dead_letters) == len(want)  # at-least-once, but one run, no restart
    # the valid events were decided exactly as in a clean run
    ids = id_sets(run.outputs)
    print(f"\nhostile run: {len(want)} dead letters, {len(duplicates)} duplicates; {ids.sizes()}")
    assert ids == clean, describe_difference(ids, clean)
    # and the in-process reference (used where a second real run would cost too much)
    # agrees with the clean run
    reference = reference_ids(lines, settings, trained_bundle)
    assert reference == clean, describe_difference(reference, clean)


# --- an exception while handling one event -----------------------------------------------------

#: Loaded into the worker child only (``sitecustomize_env``): raises inside the pipeline for
#: chosen event ids, at two places: the per-event checks (``check_event``) and the batch
#: scoring stage (output ids are made there, ``make_id``), which the pipeline isolates by
#: re-running it event by event.
POISON = """
import os
_check_ids = set(filter(None, os.environ.get("HX_POISON_CHECK", "").split(",")))
_stage_ids = set(filter(None, os.environ.get("HX_POISON_STAGE", "").split(",")))
if _check_ids or _stage_ids:
    from escrowguard.stream_app import pipeline

    _check_event, _make_id = pipeline.check_event, pipeline.make_id

    def check_event(event, ctx):
        if event.event_id in _check_ids:
            raise RuntimeError("injected fault while checking " + event.event_id)
        return _check_event(event, ctx)

    def make_id(prefix, *parts):
        hit = _stage_ids.intersection(parts)
        if hit:
            raise RuntimeError("injected fault while scoring " + hit.pop())
        return _make_id(prefix, *parts)

    pipeline.check_event, pipeline.make_id = check_event, make_id
"""


def test_an_exception_while_handling_one_event_dead_letters_it(
    settings: Settings, trained_bundle: TrainedBundle, tmp_path: Path
) -> None:
    from tests.faults.conftest_hostile import reference_outputs, sitecustomize_env

    lines = trained_bundle.lines
    events = [decode(x) for x in lines]
    pledges = [e.event_id for e in events if isinstance(e, PledgeCreated)]
    votes = [e.event_id for e in events if isinstance(e, VoteCast)]
    in_check = {pledges[len(pledges) // 2], votes[len(votes) // 3], votes[2 * len(votes) // 3]}
    # without the events that fail their checks, the rest is decided as if they never were
    kept = [x for x, e in zip(lines, events, strict=True) if e.event_id not in in_check]
    reference = reference_outputs(kept, settings, trained_bundle)
    anomalies = sorted(
        (a.occurred_at, a.event_ids[0])
        for a in reference
        if isinstance(a, Alert) and a.kind == AlertKind.PLEDGE_ANOMALY
    )
    in_stage = anomalies[len(anomalies) // 2][1]  # a pledge that raises an alert
    # a pledge failing in the scoring stage is applied (its effects were decided first) but
    # raises no alert of its own
    expected = id_sets(
        [
            o
            for o in reference
            if not (isinstance(o, Alert) and o.event_ids == [in_stage] and o.backer_id)
        ]
    )

    env = {
        "HX_POISON_CHECK": ",".join(sorted(in_check)),
        "HX_POISON_STAGE": in_stage,
        **sitecustomize_env(tmp_path / "poison", POISON),
    }
    run = run_worker(
        namespace(settings, trained_bundle),
        [[event_message(x) for x in lines]],
        tmp_path / "worker.log",
        extra_env=env,
    )

    assert run.committed == run.produced == len(lines)  # nothing stuck, the worker alive
    letters = {d.event_id: d for d in run.outputs.dead_letters}
    # the poisoned events are dead-lettered as processing_error; the others dead-lettered
    # are exactly the reference's (votes of a backer whose pledge failed: not_a_backer)
    consequences = {o.event_id: o.reason for o in reference if isinstance(o, DeadLetter)}
    assert {k: v.reason for k, v in letters.items()} == {
        **consequences,
        **dict.fromkeys(in_check | {in_stage}, Reason.PROCESSING_ERROR),
    }
    for event_id in in_check | {in_stage}:
        letter = letters[event_id]
        assert "RuntimeError: injected fault" in letter.detail
        assert decode(letter.original.encode()).event_id == event_id  # the message itself
        assert f"processing_error event_id={event_id}" in run.log
    assert (
        metric_value(run.metrics, "escrowguard_dead_letters_total", reason="processing_error") == 4
    )
    got = id_sets(run.outputs)
    assert got == expected, describe_difference(got, expected)
