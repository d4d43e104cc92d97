"""Run the Faust app as a worker process (``escrowguard worker``), or rebuild the Redis
state from the input topics (``escrowguard rebuild-state``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faust

from escrowguard.errors import ConfigError, StoreError
from escrowguard.logs import configure_logging, log_event
from escrowguard.outputs import AnyOutput
from escrowguard.settings import Settings
from escrowguard.stream_app.app import create_app
from escrowguard.stream_app.batch import BatchLoop
from escrowguard.stream_app.runtime import Runtime
from escrowguard.stream_app.state_marker import REBUILDING, new_marker_id

log = logging.getLogger(__name__)


def run_worker(settings: Settings, bundle: Path | None = None) -> None:
    """Build the app and run it until SIGINT/SIGTERM (mode handles both, stopping cleanly)."""
    if not settings.kafka.bootstrap_servers or not settings.redis.url:
        raise ConfigError(
            "the worker needs servers: set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL (for a local "
            "setup, run `escrowguard infra up --env-file .servers.env` and source that file)"
        )
    app = create_app(settings, bundle)
    worker = faust.Worker(
        app,
        loglevel=settings.logging.level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    configure_logging(settings.logging.level)
    logging.getLogger("faust").setLevel(logging.WARNING)
    worker.execute_from_commandline()


class _Silent:
    """A sender that keeps outputs to itself: a rebuild re-decides history, it does not
    re-announce it."""

    def __init__(self) -> None:
        self.count = 0

    async def send_all(self, outputs: Sequence[AnyOutput]) -> None:
        self.count += len(outputs)


@dataclass(frozen=True)
class RebuildSummary:
    """What ``rebuild_state`` did."""

    events_decided: int
    outputs_suppressed: int
    seconds: float


def rebuild_state(
    settings: Settings, bundle: Path | None = None, progress: Callable[[int], None] | None = None
) -> RebuildSummary:
    """Rebuild Redis feature state by replaying the input topics from their beginning.

    For a Redis that lost its data (no persistence, a lost volume, ``FLUSHALL``). It first
    deletes the namespace's keys (anything written after the loss is wrong, and positions
    would make the rebuild skip the history) and marks the state "rebuilding" (workers
    decide nothing meanwhile: ``state_marker.py``), then reads every input partition from
    the start in a consumer group of its own (the workers' committed offsets stay as they
    are), decides every event (state only: outputs are counted, not sent), stores Redis's
    positions, and stops once every partition is read to its end; last, it marks the state
    whole. Workers paused on the lost state then rewind to Redis's positions and go on (a
    stopped worker started later resumes from the earlier of its commit and Redis's
    position): the events they had not decided are decided then, their outputs sent
    (docs/reliability.md).
    """
    if not settings.kafka.bootstrap_servers or not settings.redis.url:
        raise ConfigError("rebuild-state needs KAFKA_BOOTSTRAP_SERVERS and REDIS_URL")
    return asyncio.run(_rebuild(settings, bundle, progress))


async def _rebuild(
    settings: Settings, bundle: Path | None, progress: Callable[[int], None] | None
) -> RebuildSummary:
    started = time.perf_counter()
    runtime = Runtime(settings, bundle, rebuild=True)
    silent = _Silent()
    runtime.worker.sender = silent
    cleared = await runtime.store.clear()
    marker = new_marker_id()
    rebuilding = REBUILDING + marker
    await runtime.store.set_marker(rebuilding)
    runtime.store.marker = rebuilding
    log_event(log, "state_cleared", keys=cleared, marker=rebuilding)
    group = f"{settings.kafka.consumer_group}-rebuild-{int(time.time())}"
    loop = BatchLoop(runtime, group=group)
    await loop.start()
    decided = 0
    try:
        quiet_since: float | None = None
        while True:
            await loop.step()
            total = int(
                sum(runtime.metrics.values.get("escrowguard_events_scored_total", {}).values())
            )
            if progress is not None and total != decided:
                progress(total)
            decided = total
            if loop.caught_up():
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= 2 * runtime.worker.buffer.idle_s + 1:
                    break
            else:
                quiet_since = None
        if not await runtime.store.finish_rebuild(rebuilding, marker):
            raise StoreError(
                "the state marker changed during the rebuild (Redis lost data again, or another "
                "rebuild-state started): run `escrowguard rebuild-state` again",
                "redis_state_lost",
            )
    finally:
        await loop.stop()
    log_event(log, "state_rebuilt", events=decided, outputs_suppressed=silent.count, marker=marker)
    return RebuildSummary(decided, silent.count, time.perf_counter() - started)
