"""The namespace's state marker: how a worker knows Redis still holds what it decided against.

Redis can lose its data without the worker seeing an error: a restart without persistence,
a lost volume, a ``FLUSHALL`` on the same server. Deciding on against the empty state sends
wrong dead letters and misses alerts and freezes (docs/reliability.md). So every namespace
holds one marker key, ``<prefix>:marker``:

- ``<id>``: the state is whole. Written once when the namespace's state is first created (a
  fresh deployment: empty Redis, nothing committed) and by ``rebuild-state`` when it ends;
- ``rebuilding:<id>``: ``rebuild-state`` is replaying the input topics into it.

A worker remembers the id it decides against. The per-batch read script returns the
marker with the batch's reads and the write script refuses a batch unless the marker is
still that id: no extra round trip, and no batch read before a loss is written after it.
A marker that is gone, or says a rebuild is running, pauses the worker (nothing decided,
``/health`` 503, ``escrowguard_redis_state_lost`` 1, one ``redis_state_lost`` ERROR line)
until a whole state is back; a marker with another id means the state was rebuilt
meanwhile: the worker rewinds to Redis's positions, as after a restart.

Pure functions; the store (``store.py``) reads and writes the key.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Final

#: Prefix of the marker while ``rebuild-state`` runs.
REBUILDING: Final = "rebuilding:"
#: What the operator must do, in the log line and on ``/health``.
ACTION: Final = (
    "run `escrowguard rebuild-state` with the workers' settings; running workers stay "
    "paused until it ends, then resume by themselves"
)


class MarkerCheck(StrEnum):
    """What the marker found in Redis says about the state a worker decides against."""

    OK = "ok"  # the state the worker knows
    LOST = "marker_missing"  # Redis lost the namespace's state
    REBUILDING = "rebuild_in_progress"  # rebuild-state is replaying into it
    REPLACED = "replaced"  # another whole state (rebuilt meanwhile): rewind to it


class StartState(StrEnum):
    """What a worker starting up finds."""

    READY = "ready"  # a whole state: decide against it
    CREATE = "fresh"  # a fresh deployment: create the marker
    ADOPT = "existing_state"  # state written before markers existed: keep it, mark it
    LOST = "marker_missing"  # decisions were made and Redis holds nothing of them
    REBUILDING = "rebuild_in_progress"


def new_marker_id() -> str:
    """A fresh marker id (random: two states never share one)."""
    return uuid.uuid4().hex


def is_whole(marker: str | None) -> bool:
    """Whether a marker value says the state is whole (present, no rebuild running)."""
    return bool(marker) and not str(marker).startswith(REBUILDING)


def check_marker(expected: str, current: str | None) -> MarkerCheck:
    """Compare the marker a worker decides against with the one Redis holds now."""
    if current == expected:
        return MarkerCheck.OK
    if not current:
        return MarkerCheck.LOST
    if current.startswith(REBUILDING):
        return MarkerCheck.REBUILDING
    return MarkerCheck.REPLACED


def start_state(
    marker: str | None, has_positions: bool, committed: Mapping[tuple[str, int], int]
) -> StartState:
    """Classify what a starting worker finds.

    ``has_positions``: Redis holds per-partition positions (some state was written);
    ``committed``: the worker group's committed offsets on the input partitions. Without a
    marker, committed offsets past 0 and no positions mean this deployment decided events
    whose effects Redis no longer holds: the state is lost. Positions without a marker
    can only come from a worker that predates markers (a worker that knows them never
    writes without one; ``rebuild-state`` marks its state before writing): adopted.
    """
    if marker:
        return StartState.REBUILDING if marker.startswith(REBUILDING) else StartState.READY
    if has_positions:
        return StartState.ADOPT
    if any(offset > 0 for offset in committed.values()):
        return StartState.LOST
    return StartState.CREATE
