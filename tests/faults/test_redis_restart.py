"""Redis restarts (issue 5, item 4), on servers of the test's own.

1. Append-only persistence on (``appendfsync everysec``): mid-stream, Redis hangs (SIGSTOP)
   for 2 s, is killed (SIGKILL) and comes back without its last 2 write transactions (two
   batches, ~1,000 events: about the second ``everysec`` may lose); later it is restarted
   gracefully. The worker must wait and retry with backoff (it never exits;
   ``escrowguard_store_errors_total`` > 0), notice the new server, resume from the positions
   Redis still holds, and end with the clean run's state and ids.
2. No persistence: Redis loses everything, and the worker is restarted. It finds no state
   marker while its group has committed offsets: it decides nothing and reports the loss;
   ``escrowguard rebuild-state`` (replays the input topics into the empty Redis, sends
   nothing, marks the state) runs while it waits, and it resumes by itself. After it and
   the rest of the history: the clean run's state, ids and messages.
3. ``FLUSHALL`` on the same server while a worker runs, then more events: none of them is
   decided against the empty state (nothing scored, committed or written), the loss is
   reported (log, /health, metric); ``rebuild-state`` with the worker running; the worker
   resumes, and the run ends equal to the clean run (the held-back events decided then).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from escrowguard.demo import read_outputs
from escrowguard.infra import EmbeddedServers, redis_client
from escrowguard.infra.embedded import settings_for
from escrowguard.settings import Settings, settings_env
from escrowguard.stream_app.store import key_prefix
from escrowguard.stream_app.supervisor import WorkerProcess, committed_offsets, wait_caught_up
from tests.faults.harness import (
    BackgroundReplay,
    HistoryFile,
    OutputReport,
    RunResult,
    check_against_clean,
    collect,
    fresh_namespace,
    metric,
    time_cuts,
    wait_for,
)

pytestmark = pytest.mark.slow

#: Events per second: the ~11k events take ~9 s, the restarts fall inside.
REPLAY_RATE = 1200.0
#: Write transactions the crash loses (one per decided batch of up to 500 events, ~300 kB).
LOST_TRANSACTIONS = 2
MULTI = b"*1\r\n$5\r\nMULTI\r\n"


def _scored(worker: WorkerProcess) -> float:
    return metric(worker, "escrowguard_events_scored_total")


def _crash_redis_losing_its_tail(servers: EmbeddedServers, s: Settings) -> int:
    """Redis hangs (SIGSTOP) for 2 s, dies (SIGKILL) and comes back without its last
    ``LOST_TRANSACTIONS`` write transactions: what ``appendfsync everysec`` loses when the
    machine (not only the process) goes down. A SIGKILLed process alone loses nothing the
    kernel already has, so the lost second is made explicit: the append-only file is cut
    at a transaction boundary (each batch's Lua write is one MULTI/EXEC block in it).
    Returns the bytes cut."""
    client = redis_client(s.redis)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    servers.pause_redis()  # hangs: calls wait on their sockets
    time.sleep(2.0)
    os.kill(pid, signal.SIGKILL)
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie",
        "Redis to die",
        10,
    )
    (aof,) = (servers.redis_data_dir / "appendonlydir").glob("*.incr.aof")
    data = aof.read_bytes()
    starts = [m.start() for m in re.finditer(re.escape(MULTI), data)]
    assert len(starts) > LOST_TRANSACTIONS, "too few writes to lose some"
    cut = starts[-LOST_TRANSACTIONS]
    aof.write_bytes(data[:cut])
    servers.restart_redis(hard=True)  # the dead child is reaped, a new one starts
    return len(data) - cut


def test_redis_restarts_with_aof_mid_stream(
    settings: Settings,
    private_servers: EmbeddedServers,
    small_history: HistoryFile,
    bundle: Path,
    clean_small: RunResult,
    tmp_path: Path,
) -> None:
    s = fresh_namespace(settings_for(settings, private_servers), partitions=4)
    worker = WorkerProcess(s, tmp_path / "worker.log", bundle=bundle)
    worker.start()
    try:
        worker.wait_serving()
        started = time.monotonic()
        replay = BackgroundReplay(s, small_history, REPLAY_RATE)
        wait_for(lambda: _scored(worker) > 2000, "2,000 events scored", 120)
        lost = _crash_redis_losing_its_tail(private_servers, s)
        at_crash = _scored(worker)
        wait_for(lambda: _scored(worker) > at_crash + 1000, "scoring after the crash", 120)
        private_servers.restart_redis(hard=False)  # graceful: SHUTDOWN writes the AOF
        at_restart = _scored(worker)
        summary = replay.join(300)
        wait_for(lambda: _scored(worker) > at_restart, "scoring after the restart", 120)
        wait_caught_up(s, [worker], timeout_s=600)
        catch_up = time.monotonic() - started
        assert worker.alive(), worker.log_tail()
        errors = metric(worker, "escrowguard_store_errors_total")
        restarts = worker.log_path.read_text().count("event=redis_restarted")
        rewinds = worker.log_path.read_text().count("event=rewound_to_store")
        run = collect(s, summary.total_sent, catch_up)
    finally:
        worker.stop()
    print(
        f"\nAOF restarts: {run.events:,} events in {run.catch_up_s:.1f} s; crash lost the last "
        f"{LOST_TRANSACTIONS} transactions ({lost:,} bytes of AOF); store errors {errors:.0f}, "
        f"restarts seen {restarts}, rewinds {rewinds}; {run.outputs.counts()}"
    )
    assert errors > 0
    assert restarts == 2 and rewinds == 2
    problems = check_against_clean(clean_small, run)
    assert not problems, "\n".join(problems)
    # the lost batches were decided again: their outputs reached the wire twice
    assert sum(run.outputs.duplicates.values()) > 0


def _namespace_keys(s: Settings) -> int:
    client = redis_client(s.redis)
    try:
        return sum(1 for _ in client.scan_iter(match=f"{key_prefix(s)}:*", count=1000))
    finally:
        client.close()


def _rebuild_state(s: Settings, bundle: Path, log_path: Path) -> float:
    """``escrowguard rebuild-state`` as an operator runs it; its wall time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESCROWGUARD_")}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.pop("REDIS_URL", None)
    env.update(settings_env(s))
    started = time.monotonic()
    with log_path.open("wb") as log:
        done = subprocess.run(
            [sys.executable, "-m", "escrowguard", "rebuild-state", "--models", str(bundle)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
            check=False,
        )
    assert done.returncode == 0, log_path.read_text()[-2000:]
    return time.monotonic() - started


def _lost(worker: WorkerProcess) -> float:
    return metric(worker, "escrowguard_redis_state_lost")


def _log_lines(worker: WorkerProcess, event: str) -> list[str]:
    return [x for x in worker.log_path.read_text().splitlines() if f"event={event}" in x]


def _marker(s: Settings) -> bytes | None:
    client = redis_client(s.redis)
    try:
        value: bytes | None = client.get(f"{key_prefix(s)}:marker")
        return value
    finally:
        client.close()


def _committed(s: Settings) -> int:
    return sum(committed_offsets(s, s.kafka.consumer_group).values())


def _assert_loss_reported(worker: WorkerProcess, reason: str) -> dict[str, object]:
    """The loss is on /health (503, reason, action), the metric and one ERROR log line."""
    health = worker.health()
    assert health["http_status"] == 503, health
    assert health["status"] == "redis_state_lost" and health["reason"] == reason, health
    assert "escrowguard rebuild-state" in str(health["action"]), health
    assert _lost(worker) == 1
    (line,) = _log_lines(worker, "redis_state_lost")
    assert "level=error" in line, line
    assert "escrowguard rebuild-state" in line, line
    return health


def test_redis_loss_without_persistence_is_rebuilt_from_the_topics(
    settings: Settings,
    tiny_history: HistoryFile,
    bundle: Path,
    clean_tiny: RunResult,
    tmp_path: Path,
) -> None:
    """Redis restarts without persistence while the worker is idle, and the worker is
    restarted (an orchestrator, or an operator following the old procedure): the new worker
    finds no marker while its group has committed offsets, so it decides nothing and says
    so. ``rebuild-state`` runs while it waits; it then resumes by itself, and after the rest
    of the history the state, ids and messages are the clean run's."""
    (cut,) = time_cuts(tiny_history, (0.5,))
    with EmbeddedServers(redis_appendonly=False) as servers:
        s = fresh_namespace(settings_for(settings, servers), partitions=4)
        worker = WorkerProcess(s, tmp_path / "worker.log", bundle=bundle)
        worker.start()
        try:
            worker.wait_serving()
            wait_for(lambda: bool(_log_lines(worker, "worker_started")), "worker_started", 120)
            assert _marker(s) is not None, "a fresh deployment marks its state"
            assert _lost(worker) == 0 and not _log_lines(worker, "redis_state_lost")
            first = BackgroundReplay(s, tiny_history, None, time_until=cut).join()
            wait_caught_up(s, [worker], timeout_s=600)
            keys_before = _namespace_keys(s)
            servers.restart_redis(hard=True)  # no AOF, no RDB: everything is gone
            assert _namespace_keys(s) == 0
            worker.stop()
            worker = WorkerProcess(s, tmp_path / "worker-restarted.log", bundle=bundle)
            worker.start()
            worker.wait_serving()
            wait_for(lambda: bool(_log_lines(worker, "worker_started")), "worker_started", 120)
            _assert_loss_reported(worker, "marker_missing")
            rebuild_s = _rebuild_state(s, bundle, tmp_path / "rebuild.log")
            keys_rebuilt = _namespace_keys(s)
            wait_for(lambda: _lost(worker) == 0, "the worker to resume after rebuild-state", 120)
            second = BackgroundReplay(s, tiny_history, None, time_from=cut).join()
            wait_caught_up(s, [worker], timeout_s=600)
            restored = len(_log_lines(worker, "redis_state_restored"))
            run = collect(s, first.total_sent + second.total_sent, 0.0)
        finally:
            worker.stop()
    print(
        f"\nRedis loss: {first.total_sent:,} events before the loss ({keys_before:,} keys), "
        f"restarted worker paused at start, rebuild-state {rebuild_s:.1f} s (command wall "
        f"time, {keys_rebuilt:,} keys), {second.total_sent:,} after; {run.outputs.counts()}"
    )
    assert restored == 1
    assert run.events == tiny_history.events
    problems = check_against_clean(clean_tiny, run)
    assert not problems, "\n".join(problems)


def test_redis_flushall_mid_stream_pauses_the_worker_until_rebuild_state(
    settings: Settings,
    private_servers: EmbeddedServers,
    tiny_history: HistoryFile,
    bundle: Path,
    clean_tiny: RunResult,
    tmp_path: Path,
) -> None:
    """``FLUSHALL`` on the same server (same run id: no restart to notice) while a worker
    runs, then more events (3% of the history). The worker must decide none of them
    against the empty state: nothing scored, committed or written, the loss reported (one
    ERROR line naming the command, /health 503 with the reason, the gauge at 1). Then
    ``rebuild-state`` with the worker still running; the worker resumes by itself, decides
    the events it held back against the rebuilt state, and after the rest of the history
    the state, ids and messages (dead letters included: none) are the clean run's.

    Before the state marker the worker decided the window on the empty Redis: 77 events,
    64 wrong dead letters (docs/reliability.md)."""
    cut, window_end = time_cuts(tiny_history, (0.5, 0.53))
    s = fresh_namespace(settings_for(settings, private_servers), partitions=4)
    worker = WorkerProcess(s, tmp_path / "worker.log", bundle=bundle)
    worker.start()
    try:
        worker.wait_serving()
        sent = BackgroundReplay(s, tiny_history, None, time_until=cut).join().total_sent
        wait_caught_up(s, [worker], timeout_s=600)
        scored, committed = _scored(worker), _committed(s)
        client = redis_client(s.redis)
        try:
            run_id = client.info("server")["run_id"]
            client.flushall()
        finally:
            client.close()
        window = BackgroundReplay(s, tiny_history, None, time_from=cut, time_until=window_end)
        window_sent = window.join().total_sent
        # the worker reports the loss, or (without the marker) decides the window and commits
        wait_for(
            lambda: _lost(worker) == 1 or _committed(s) >= committed + window_sent,
            "the loss reported or the window committed",
            180,
        )
        decided_on_empty = _scored(worker) - scored
        letters = len(OutputReport.of(read_outputs(s)).dead_letters)
        assert _lost(worker) == 1, (
            f"loss not reported: {decided_on_empty:.0f} events decided against the empty "
            f"state, {letters} dead letters"
        )
        health = _assert_loss_reported(worker, "marker_missing")
        assert decided_on_empty == 0
        assert _committed(s) == committed
        assert _namespace_keys(s) == 0 or _marker(s) is None
        keys_while_lost = _namespace_keys(s)
        client = redis_client(s.redis)
        try:
            assert client.info("server")["run_id"] == run_id  # no restart to notice
            assert not client.exists(f"{key_prefix(s)}:pos"), "the worker wrote positions"
        finally:
            client.close()
        rebuild_s = _rebuild_state(s, bundle, tmp_path / "rebuild.log")
        wait_caught_up(s, [worker], timeout_s=600)  # resumed: the window decided now
        assert _lost(worker) == 0
        rest = BackgroundReplay(s, tiny_history, None, time_from=window_end).join()
        wait_caught_up(s, [worker], timeout_s=600)
        assert worker.alive(), worker.log_tail()
        restored = len(_log_lines(worker, "redis_state_restored"))
        lost_lines = len(_log_lines(worker, "redis_state_lost"))
        run = collect(s, sent + window_sent + rest.total_sent, 0.0)
    finally:
        worker.stop()
    print(
        f"\nFLUSHALL mid-stream: {sent:,} events before, {window_sent:,} sent while the state "
        f"was lost: {decided_on_empty:.0f} decided, {letters} dead letters, committed offsets "
        f"unchanged ({committed:,}), {keys_while_lost} namespace keys written; /health "
        f"{health['http_status']} {health['reason']}; rebuild-state {rebuild_s:.1f} s with the "
        f"worker running; {lost_lines} redis_state_lost line, {restored} restored; "
        f"{rest.total_sent:,} after; {run.outputs.counts()}"
    )
    assert restored == 1 and lost_lines == 1
    assert run.events == tiny_history.events
    problems = check_against_clean(clean_tiny, run)
    assert not problems, "\n".join(problems)
