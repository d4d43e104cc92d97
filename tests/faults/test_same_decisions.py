"""Same history, same decisions (issue 5, item 2): the same file replayed into fresh state
gives the same alert, freeze and decision ids, the same messages under them and the same
Redis state, whether it runs again, on one partition instead of four, or with two workers
in the group instead of one (a smaller history there: two workers are slow, see
conftest.py).

Why it holds: docs/ordering.md (event-time state read as of each event, a frontier shared
through Redis, ids that are functions of their inputs).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from escrowguard.settings import Settings
from tests.faults.harness import (
    HistoryFile,
    RunResult,
    check_against_clean,
    clean_run,
    fresh_namespace,
)
from tests.redis_state import drop_namespace_keys

pytestmark = pytest.mark.slow

LAYOUTS = {
    # name: (history, partitions, workers, same offsets as its reference run)
    "again": ("small", 4, 1, True),
    "one-partition": ("small", 1, 1, False),
    "two-workers": ("tiny", 4, 2, True),
}


def test_the_reference_run_is_clean(clean_small: RunResult, small_history: HistoryFile) -> None:
    report = clean_small.outputs
    print(
        f"\nreference: {clean_small.events:,} events in {clean_small.catch_up_s:.1f} s; "
        f"{report.counts()}"
    )
    assert clean_small.events == small_history.events
    assert report.alert_ids and report.freeze_ids and report.decision_ids
    assert not clean_small.position_problems
    assert not report.double_freezes
    assert not report.duplicates
    assert not report.unreadable


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_same_history_gives_the_same_decisions(
    layout: str, settings: Settings, bundle: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    size, partitions, workers, same_offsets = LAYOUTS[layout]
    history: HistoryFile = request.getfixturevalue(f"{size}_history")
    reference: RunResult = request.getfixturevalue(f"clean_{size}")
    scoped = fresh_namespace(settings, partitions=partitions)
    try:
        run = clean_run(scoped, history, bundle, tmp_path, workers=workers)
    finally:
        drop_namespace_keys(scoped)
    print(
        f"\n{layout}: {run.events:,} events in {run.catch_up_s:.1f} s (reference "
        f"{reference.catch_up_s:.1f} s); {run.outputs.counts()}"
    )
    problems = check_against_clean(reference, run, by_position=same_offsets)
    assert not problems, "\n".join(problems)
