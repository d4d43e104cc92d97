"""Pauses: the broker, then Redis, frozen (SIGSTOP) for 20 s mid-stream, then resumed.

Each test runs one worker on servers of its own (``private_servers``) while the bundle's
history (~12k events) is offered at 1,500 events/s; once the group has committed a sixth of
it, the server is stopped for 20 s and continued. The worker must wait (not exit, not skip),
recover by itself, and lose nothing: every message committed, no dead letter, and the
alert/freeze/decision ids equal those of a clean run of the same history.

A frozen broker leaves clients with silent connections (fetches, heartbeats and produce
requests time out after ``kafka.request_timeout_ms`` = 30 s; the group's 6 s session expires
on the broker's clock as soon as it runs again, so the worker rejoins). A frozen Redis makes
the worker's Lua calls time out after ``redis.socket_timeout_s`` (10 s): the batch is retried
with backoff, the buffer untouched.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from escrowguard.demo import read_outputs
from escrowguard.infra import EmbeddedServers, settings_for
from escrowguard.settings import Settings
from escrowguard.stream_app.supervisor import group_progress, wait_caught_up
from tests.faults.conftest_hostile import (
    Offered,
    TrainedBundle,
    clean_ids,
    describe_difference,
    id_sets,
    metric_value,
    namespace,
    offer,
    trained_bundle,
    worker_process,
)

__all__ = ["trained_bundle"]

pytestmark = pytest.mark.faults

PAUSE_S = 20.0
RATE = 1500.0


@pytest.mark.parametrize("server", ["broker", "redis"])
def test_a_20_s_pause_mid_stream_is_waited_out_and_loses_nothing(
    server: str,
    private_servers: EmbeddedServers,
    settings: Settings,
    trained_bundle: TrainedBundle,
    tmp_path: Path,
) -> None:
    clean = clean_ids(settings, trained_bundle, tmp_path)
    run = namespace(settings_for(settings, private_servers), trained_bundle)
    lines = trained_bundle.lines
    pause, resume = {
        "broker": (private_servers.pause_broker, private_servers.resume_broker),
        "redis": (private_servers.pause_redis, private_servers.resume_redis),
    }[server]
    sent: list[Offered] = []
    with worker_process(run, tmp_path / "worker.log") as worker:
        producer = threading.Thread(target=lambda: sent.append(offer(run, lines, rate=RATE)))
        producer.start()
        deadline = time.monotonic() + 120
        while group_progress(run).committed < len(lines) // 6:  # mid-stream
            assert time.monotonic() < deadline and worker.alive(), worker.log_tail()
            time.sleep(0.2)
        paused_at = group_progress(run).committed
        producing = producer.is_alive()
        pause()
        try:
            time.sleep(PAUSE_S)
            alive_during_pause = worker.alive()
        finally:
            resume()
        producer.join(timeout=300)
        progress = wait_caught_up(run, [worker], timeout_s=300)
        metrics = worker.metrics()
        health = worker.health()
        assert worker.alive(), worker.log_tail()
    outputs = read_outputs(run)

    print(
        f"\n{server} paused {PAUSE_S:.0f} s at {paused_at:,}/{len(lines):,} committed; "
        f"store errors {metric_value(metrics, 'escrowguard_store_errors_total'):.0f}, "
        f"publish errors {metric_value(metrics, 'escrowguard_publish_errors_total'):.0f}, "
        f"redeliveries {metric_value(metrics, 'escrowguard_redeliveries_total'):.0f}"
    )
    assert alive_during_pause
    assert producing and paused_at < len(lines)  # the pause really came mid-stream
    assert sent and sent[0].failed == 0 and sent[0].acked == len(lines), sent
    assert progress.committed == progress.total == len(lines)
    assert health["http_status"] == 200, health
    if server == "redis":  # the worker noticed the outage (timeouts), and retried
        assert metric_value(metrics, "escrowguard_store_errors_total") >= 1
    assert not outputs.dead_letters, [
        (d.reason, d.event_id, d.source_topic, d.source_partition, d.source_offset)
        for d in outputs.dead_letters[:20]
    ]
    got = id_sets(outputs)
    assert got == clean, describe_difference(got, clean)
