"""The state marker's pure pieces: what a worker makes of the marker Redis holds."""

from __future__ import annotations

import pytest

from escrowguard.stream_app.metrics import Metrics
from escrowguard.stream_app.state_marker import (
    ACTION,
    REBUILDING,
    MarkerCheck,
    StartState,
    check_marker,
    is_whole,
    new_marker_id,
    start_state,
)

TP = ("escrow.pledges", 0)


def test_marker_ids_are_fresh_and_whole() -> None:
    a, b = new_marker_id(), new_marker_id()
    assert a != b
    assert is_whole(a) and is_whole(b)
    assert not is_whole(None) and not is_whole("") and not is_whole(REBUILDING + a)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        ("m1", MarkerCheck.OK),
        (None, MarkerCheck.LOST),  # FLUSHALL, restart without persistence, lost volume
        ("", MarkerCheck.LOST),
        (REBUILDING + "m2", MarkerCheck.REBUILDING),
        ("m2", MarkerCheck.REPLACED),  # rebuilt meanwhile: rewind to it, do not pause
    ],
)
def test_a_worker_compares_the_marker_with_its_own(
    current: str | None, expected: MarkerCheck
) -> None:
    assert check_marker("m1", current) is expected


def test_a_worker_that_knows_no_marker_never_takes_a_missing_one_for_its_own() -> None:
    # a worker that started on a lost state expects "": nothing Redis holds matches it
    assert check_marker("", None) is MarkerCheck.LOST
    assert check_marker("", "m1") is MarkerCheck.REPLACED


@pytest.mark.parametrize(
    ("marker", "positions", "committed", "expected"),
    [
        # a fresh deployment: empty Redis, nothing committed (or committed at 0)
        (None, False, {}, StartState.CREATE),
        (None, False, {TP: 0}, StartState.CREATE),
        # decided before, Redis holds nothing of it: lost
        (None, False, {TP: 1}, StartState.LOST),
        (None, False, {TP: 0, ("escrow.votes", 3): 812}, StartState.LOST),
        # positions without a marker: written by a worker that predates markers
        (None, True, {TP: 812}, StartState.ADOPT),
        ("m1", False, {TP: 812}, StartState.READY),  # restart with AOF: the marker survived
        ("m1", True, {}, StartState.READY),
        (REBUILDING + "m1", True, {TP: 812}, StartState.REBUILDING),
    ],
)
def test_what_a_starting_worker_finds(
    marker: str | None,
    positions: bool,
    committed: dict[tuple[str, int], int],
    expected: StartState,
) -> None:
    assert start_state(marker, positions, committed) is expected


def test_the_action_names_the_command() -> None:
    assert "escrowguard rebuild-state" in ACTION


def test_the_lost_state_gauge_is_exported() -> None:
    m = Metrics()
    m.set("escrowguard_redis_state_lost", 1)
    text = m.render()
    assert "# TYPE escrowguard_redis_state_lost gauge" in text
    assert "\nescrowguard_redis_state_lost 1\n" in text
