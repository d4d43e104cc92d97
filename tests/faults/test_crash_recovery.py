"""Crash a worker, lose nothing, double nothing (issue 5, item 1).

A history of ~104k events (seed 7, scale 9) is replayed at a capped rate while the worker
is killed with SIGKILL six times and restarted each time: twice from outside at a random
moment once it is scoring (mostly inside a batch), and four times by the worker itself at
the n-th pass (n drawn from 2-8) through a named point of a batch
(``escrowguard.stream_app.faults``): decided but not stored, stored but not sent, sent but
not committed (twice; only batches with an alert or a freeze count). After the group
caught up, compared with a clean run of the same history:

- the Redis feature state, key by key (harness.state_dump: the exclusions are listed there);
- the alert-id, freeze-id and decision-id sets, and each id's messages;
- after de-duplication by id every output appears once: each (id, message) pair the clean
  run sent, and nothing else; the copies on the wire beyond the first are counted (they
  must exist: a kill after the send re-sends that batch's outputs);
- no milestone has two freeze ids; every Redis position is at the end of its partition;
- liveness: every incarnation killed at a named point moved the group's commits on.
"""

from __future__ import annotations

import concurrent.futures
import random
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from escrowguard.settings import Settings
from escrowguard.stream_app.supervisor import WorkerProcess, group_progress, wait_caught_up
from tests.faults.conftest import REPLAY_SEED
from tests.faults.harness import (
    BackgroundReplay,
    HistoryFile,
    RunResult,
    check_against_clean,
    clean_run,
    collect,
    fresh_namespace,
    make_history,
    metric,
    wait_for,
)
from tests.redis_state import drop_namespace_keys

pytestmark = pytest.mark.slow

SCALE = 9.0  # ~104k events: the issue asks for >= 100k
KILL_SEED = 20240605
#: The kill plan: where each of the six incarnations dies (shuffled by KILL_SEED).
KILL_POINTS = (
    "sigkill",
    "sigkill",
    "before_store",
    "after_store",
    "after_emit",
    "after_emit",
)
#: Events per second the replay sends: slow enough that the kills fall while it produces.
REPLAY_RATE = 1700.0


@dataclass(frozen=True)
class Kill:
    point: str  # "sigkill" (from outside) or a faults.POINTS name (the worker itself)
    after: float  # sigkill: seconds after it started scoring; else: the n-th pass
    committed: int  # group progress when it died
    at_s: float  # seconds since the replay started
    while_replaying: bool


@pytest.fixture(scope="module")
def big_history(faults_dir: Path) -> HistoryFile:
    history = make_history(faults_dir / "big", REPLAY_SEED, SCALE)
    assert history.events >= 100_000
    return history


def _incarnation(
    settings: Settings, bundle: Path, log_dir: Path, i: int, point: str, rng: random.Random
) -> tuple[WorkerProcess, float]:
    """Start worker ``i`` with its fault; returns it and the fault's parameter."""
    if point == "sigkill":
        param: float = round(rng.uniform(0.3, 3.0), 2)
        env = None
    else:
        param = rng.randint(2, 8)
        env = {"EG_FAULT_KILL_AT": f"{point}:{int(param)}"}
    worker = WorkerProcess(
        settings, log_dir / f"worker-{i}.log", bundle=bundle, name=f"worker-{i}", extra_env=env
    )
    worker.start()
    worker.wait_serving()
    return worker, param


def _scored(worker: WorkerProcess) -> float:
    try:
        return metric(worker, "escrowguard_events_scored_total")
    except Exception:  # not serving (yet, or any more)
        return 0.0


def test_kill_9_at_random_and_named_points_loses_and_doubles_nothing(
    settings: Settings, big_history: HistoryFile, bundle: Path, tmp_path: Path
) -> None:
    # the clean run goes alongside (its own namespace and group): the crashed run spends
    # most of its time starting workers and joining the group, not deciding
    clean_ns = fresh_namespace(settings, partitions=4)
    pool = concurrent.futures.ThreadPoolExecutor(1)
    clean_future = pool.submit(clean_run, clean_ns, big_history, bundle, tmp_path / "clean")
    pool.shutdown(wait=False)
    try:
        run, kills, redeliveries = _crashed_run(settings, big_history, bundle, tmp_path)
        clean = clean_future.result(timeout=900)
    finally:
        concurrent.futures.wait([clean_future], timeout=900)
        drop_namespace_keys(clean_ns)

    print(f"\nclean: {clean.events:,} events in {clean.catch_up_s:.1f} s; {clean.outputs.counts()}")
    print(f"crashed: {run.events:,} events in {run.catch_up_s:.1f} s; {run.outputs.counts()}")
    for k in kills:
        print(
            f"  kill {k.point:<12} at {k.after:<5} after {k.at_s:5.1f} s, committed "
            f"{k.committed:>7,}, replay running: {k.while_replaying}"
        )
    print(f"  redeliveries counted by the last worker: {redeliveries:.0f}")
    assert run.events == clean.events == big_history.events
    assert len(kills) >= 5
    # liveness: a worker killed every few batches still moves its commits on (each named
    # point comes after at least one finished batch of that incarnation)
    stuck = [
        (k.point, before.committed, k.committed)
        for before, k in zip([Kill("start", 0, 0, 0.0, True), *kills], kills, strict=False)
        if k.point != "sigkill" and k.committed <= before.committed
    ]
    assert not stuck, f"killed incarnations that committed nothing: {stuck}"
    problems = check_against_clean(clean, run)
    assert not problems, "\n".join(problems)
    assert not clean.outputs.duplicates, "the clean run itself sent duplicates"
    # kills after the send re-send that batch: at-least-once on the wire, and seen here
    assert sum(run.outputs.duplicates.values()) > 0


def _crashed_run(
    settings: Settings, history: HistoryFile, bundle: Path, tmp_path: Path
) -> tuple[RunResult, list[Kill], float]:
    """The replay with the kill plan, then a last worker until the group caught up."""
    rng = random.Random(KILL_SEED)
    points = list(KILL_POINTS)
    rng.shuffle(points)
    s = fresh_namespace(settings, partitions=4)
    kills: list[Kill] = []
    try:
        started = time.monotonic()
        replay = BackgroundReplay(s, history, REPLAY_RATE)
        for i, point in enumerate(points):
            worker, param = _incarnation(s, bundle, tmp_path, i, point, rng)
            try:
                if point == "sigkill":
                    wait_for(lambda w=worker: _scored(w) > 0, "the worker to score", 120)
                    time.sleep(param)
                    worker.kill()
                else:
                    wait_for(lambda w=worker: not w.alive(), f"the {point} fault", 180)
                    log = worker.log_path.read_text()
                    assert f"event=fault_kill point={point}" in log, worker.log_tail()
            finally:
                worker.kill()  # a no-op when it is dead already
            kills.append(
                Kill(
                    point,
                    param,
                    group_progress(s).committed,
                    time.monotonic() - started,
                    replay.running(),
                )
            )
        final = WorkerProcess(s, tmp_path / "worker-final.log", bundle=bundle, name="final")
        final.start()
        try:
            final.wait_serving()
            summary = replay.join(600)
            wait_caught_up(s, [final], timeout_s=600)
            catch_up = time.monotonic() - started
            redeliveries = metric(final, "escrowguard_redeliveries_total")
        finally:
            final.stop()
        return collect(s, summary.total_sent, catch_up), kills, redeliveries
    finally:
        drop_namespace_keys(s)
