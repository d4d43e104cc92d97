"""Rebalance mid-stream (issue 5, item 3): a second worker joins the group while the history
is being replayed and decided, later the first one leaves (SIGTERM, a clean leave); after
the group caught up, the same equality as the crash test holds against the clean run:
Redis state key by key, alert/freeze/decision ids and their messages, no double freeze.

The history goes out in three slices by event time so that, however fast the machine,
each hand-over has history still to come: the first slice before the join, the second
while the second worker starts and joins, the third as the first worker leaves. The
hand-overs redeliver (a message decided but not committed is decided again by the new
owner: same position, so nothing is applied twice and the same ids are re-sent); the
copies on the wire are counted and printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from escrowguard.settings import Settings
from escrowguard.stream_app.supervisor import WorkerProcess, group_progress, wait_caught_up
from tests.faults.harness import (
    BackgroundReplay,
    HistoryFile,
    RunResult,
    check_against_clean,
    collect,
    fresh_namespace,
    metric,
    time_cuts,
    wait_for,
)
from tests.redis_state import drop_namespace_keys

pytestmark = pytest.mark.slow

#: Events per second of the second slice (~3.4k events), replayed while the second worker
#: starts and joins (~8 s here): whether the join falls inside it is printed, not asserted.
JOIN_RATE = 200.0


def _scored(worker: WorkerProcess) -> float:
    return metric(worker, "escrowguard_events_scored_total")


def _partitions(worker: WorkerProcess) -> int:
    return int(worker.health().get("partitions") or 0)


def test_a_worker_joins_and_one_leaves_mid_stream(
    settings: Settings,
    small_history: HistoryFile,
    bundle: Path,
    clean_small: RunResult,
    tmp_path: Path,
) -> None:
    s = fresh_namespace(settings, partitions=4)
    cut_join, cut_leave = time_cuts(small_history, (0.3, 0.6))
    first = WorkerProcess(s, tmp_path / "first.log", bundle=bundle, name="first")
    second = WorkerProcess(s, tmp_path / "second.log", bundle=bundle, name="second")
    lag: dict[str, int] = {}
    try:
        first.start()
        first.wait_serving()
        started = time.monotonic()
        sent = BackgroundReplay(s, small_history, None, time_until=cut_join).join().total_sent
        wait_for(lambda: _scored(first) > 0, "the first worker to score", 120)
        middle = BackgroundReplay(
            s, small_history, JOIN_RATE, time_from=cut_join, time_until=cut_leave
        )
        second.start()  # joins while the middle slice is produced and decided
        second.wait_serving()
        wait_for(lambda: _partitions(second) > 0, "the second worker's partitions", 120)
        lag["join"] = group_progress(s).lag
        joined_while_replaying = middle.running()
        sent += middle.join().total_sent
        last = BackgroundReplay(s, small_history, None, time_from=cut_leave)
        wait_for(lambda: _scored(second) > 0, "the second worker to score", 300)
        lag["leave"] = group_progress(s).lag
        scored_first = _scored(first)
        first.stop()  # leaves mid-stream (SIGTERM: a clean leave)
        sent += last.join().total_sent
        wait_caught_up(s, [second], timeout_s=600)
        catch_up = time.monotonic() - started
        scored_second = _scored(second)
        redeliveries = metric(second, "escrowguard_redeliveries_total")
        run = collect(s, sent, catch_up)
    finally:
        first.stop()
        second.stop()
        drop_namespace_keys(s)
    print(
        f"\nrebalance: {run.events:,} events in {run.catch_up_s:.1f} s; joined while the "
        f"replay ran: {joined_while_replaying}, lag at the join {lag['join']:,}, at the leave "
        f"{lag['leave']:,}; scored by the first "
        f"{scored_first:.0f}, by the second {scored_second:.0f} (redeliveries "
        f"{redeliveries:.0f}); {run.outputs.counts()}"
    )
    assert run.events == small_history.events
    assert scored_first > 0 and scored_second > 0
    problems = check_against_clean(clean_small, run)
    assert not problems, "\n".join(problems)
