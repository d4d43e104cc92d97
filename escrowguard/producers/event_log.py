"""The history as wire events: one column set per event type, encoded, in stream order.

Each event type is described by its columns (every struct field, in the struct's field
order), its event times and the number in its event id. Event ids are ``<kind>:<id>`` with
the kind prefixes below, chosen in alphabetical order, and ids are zero-padded per kind, so
sorting by (time, kind rank, number) is exactly sorting by (occurred_at, event_id), with no
string comparisons on a million ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, NamedTuple, TypeAlias

import numpy as np

from escrowguard.events import (
    BackerRegistered,
    Event,
    MilestoneCreated,
    MilestoneResolved,
    PledgeCreated,
    ProjectCreated,
    VoteCast,
    cents_to_decimal,
    encode,
)
from escrowguard.producers.draft import Draft, milestone_outcomes, voting_power_h
from escrowguard.producers.progress import Phases

if TYPE_CHECKING:
    from escrowguard.producers.export import Ids

#: Event type -> event-id prefix, in the prefixes' alphabetical order (the sort rank).
EVENT_PREFIXES: Final = {
    "backer_registered": "backer:",
    "milestone_created": "milestone:",
    "pledge_created": "pledge:",
    "project_created": "project:",
    "milestone_resolved": "resolved:",
    "vote_cast": "vote:",
}
_CHUNK: Final = 50_000
Column: TypeAlias = Sequence[Any] | np.ndarray


class EventColumns(NamedTuple):
    """One event type's events as columns (rows in any order)."""

    cls: type[Event]
    times_s: np.ndarray  # occurred_at, epoch seconds
    numbers: np.ndarray  # 0-based number in the event id, unique per type
    fields: dict[str, Column]  # struct field -> values (event_id, occurred_at...)


def _dts(seconds: np.ndarray) -> list[datetime]:
    return [datetime.fromtimestamp(s, UTC) for s in np.asarray(seconds).tolist()]


def _event(
    cls: type[Event],
    prefix: str,
    ids: np.ndarray,
    times_s: np.ndarray,
    numbers: np.ndarray,
    **fields: Column,
) -> EventColumns:
    common = {
        "event_id": [prefix + i for i in ids],
        "schema_version": [1] * len(ids),
        "occurred_at": _dts(times_s),
    }
    return EventColumns(cls, np.asarray(times_s), numbers, common | fields)


def event_columns(draft: Draft, ids: Ids) -> list[EventColumns]:
    """Every event of the history, as columns, one entry per type (``EVENT_PREFIXES``)."""
    b, p, ms, pl, v = draft.backers, draft.projects, draft.milestones, draft.pledges, draft.votes
    out = milestone_outcomes(draft)
    done = np.flatnonzero(out.resolved)
    ms_created = p["created_s"][ms["project"]] + ms["index"]  # index seconds after its project
    vote_project = ms["project"][v["milestone"]]
    return [
        _event(
            BackerRegistered,
            "backer:",
            ids.backer,
            b["registered_s"],
            ids.backer_rank,
            backer_id=ids.backer,
            wallet=ids.wallet[b["wallet"]],
        ),
        _event(
            MilestoneCreated,
            "milestone:",
            ids.milestone,
            ms_created,
            np.arange(ms.size),
            project_id=ids.project[ms["project"]],
            milestone_id=ids.milestone,
            index=ms["index"].tolist(),
            funding_amount=[cents_to_decimal(c) for c in ms["funding_cents"].tolist()],
            voting_opens_at=_dts(ms["opens_s"]),
            voting_closes_at=_dts(ms["closes_s"]),
        ),
        _event(
            PledgeCreated,
            "pledge:",
            ids.pledge,
            pl["t_s"],
            ids.pledge_rank,
            project_id=ids.project[pl["project"]],
            pledge_id=ids.pledge,
            backer_id=ids.backer[pl["backer"]],
            amount=[cents_to_decimal(c) for c in pl["amount_cents"].tolist()],
            source_wallet=ids.wallet[pl["source_wallet"]],
            voting_power=(voting_power_h(pl["amount_cents"]) / 100).tolist(),
        ),
        _event(
            ProjectCreated,
            "project:",
            ids.project,
            p["created_s"],
            np.arange(p.size),
            project_id=ids.project,
            creator_id=ids.creator[p["creator"]],
            creator_wallet=ids.wallet[p["wallet"]],
            creator_reputation=draft.creators["rep"][p["creator"]].tolist(),
            funding_goal=[cents_to_decimal(c) for c in p["goal_cents"].tolist()],
            deadline=_dts(p["deadline_s"]),
        ),
        _event(
            MilestoneResolved,
            "resolved:",
            ids.milestone[done],
            out.resolved_s[done],
            np.arange(done.size),
            project_id=ids.project[ms["project"][done]],
            milestone_id=ids.milestone[done],
            approval_rate=out.rate[done].tolist(),
            approved=out.approved[done].tolist(),
        ),
        _event(
            VoteCast,
            "vote:",
            ids.vote,
            v["t_s"],
            ids.vote_rank,
            project_id=ids.project[vote_project],
            milestone_id=ids.milestone[v["milestone"]],
            vote_id=ids.vote,
            backer_id=ids.backer[v["backer"]],
            approve=v["approve"].tolist(),
            vote_weight=(v["weight_h"] / 100).tolist(),
        ),
    ]


def encode_columns(columns: EventColumns, phases: Phases) -> list[bytes]:
    """Encode one type's events with ``events.encode``, in id (number) order."""
    values = [columns.fields[name] for name in columns.cls.__struct_fields__]
    order = np.argsort(columns.numbers, kind="stable").tolist()
    cls, lines = columns.cls, []
    for start in range(0, len(order), _CHUNK):
        for i in order[start : start + _CHUNK]:
            lines.append(encode(cls(*(column[i] for column in values))))
        phases.advance(min(_CHUNK, len(order) - start))
    return lines


def encode_stream(draft: Draft, ids: Ids, phases: Phases) -> tuple[list[bytes], dict[str, int]]:
    """All events encoded and sorted by (occurred_at, event_id); and the count per type."""
    parts = event_columns(draft, ids)
    total = sum(part.times_s.size for part in parts)
    phases.start("events", total)
    lines: list[bytes] = []
    counts: dict[str, int] = {}
    for name, part in zip(EVENT_PREFIXES, parts, strict=True):
        if part.cls.__struct_config__.tag != name or not np.array_equal(
            np.sort(part.numbers), np.arange(part.numbers.size)
        ):
            raise AssertionError(f"{name}: event columns out of order")  # a bug here
        lines.extend(encode_columns(part, phases))
        counts[name] = part.times_s.size
    times = np.concatenate([part.times_s for part in parts])
    numbers = np.concatenate([part.numbers for part in parts])
    sizes = [part.times_s.size for part in parts]
    offsets = np.repeat(np.cumsum([0, *sizes])[:-1], sizes)
    ranks = np.repeat(np.arange(len(parts)), sizes)
    order = np.lexsort((numbers, ranks, times))
    position = offsets[order] + numbers[order]
    counts["events"] = total
    return [lines[i] for i in position.tolist()], counts
