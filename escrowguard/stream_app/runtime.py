"""Everything one worker process holds: settings, models, store, sender, worker.

Both consumption paths (``batch.py`` and the agent in ``app.py``) feed a ``Runtime``;
``decide`` retries with exponential backoff while Redis or Kafka is unavailable, and notices
when Redis came back as a different server (restarted), so the batch path can rewind. When
Redis lost the namespace's state (its marker is gone: ``state_marker.py``) it decides nothing
more until ``rebuild-state`` has marked a whole state again, then rewinds the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from kafka.errors import KafkaError

from escrowguard.errors import InfraError, PublishError, StoreError
from escrowguard.infra import require_topics, topic_partitions
from escrowguard.logs import log_event
from escrowguard.models.features import FeatureWindows
from escrowguard.models.serving import ServingModels, load_serving_models
from escrowguard.settings import Settings
from escrowguard.stream_app.emit import Publisher
from escrowguard.stream_app.metrics import Metrics
from escrowguard.stream_app.monitor import Monitor
from escrowguard.stream_app.pipeline import BatchProcessor
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
from escrowguard.stream_app.store import MARKER_CHANGED, RedisStore
from escrowguard.stream_app.supervisor import committed_offsets
from escrowguard.stream_app.worker import RawMessage, ScoringWorker
from escrowguard.topics import input_topics

log = logging.getLogger(__name__)

#: Seconds between two looks at the state marker while the state is lost.
STATE_POLL_S = 1.0


class Runtime:
    """Everything one worker process holds: settings, models, store, sender, worker.

    ``rebuild``: the runtime of ``rebuild-state``, which marks the state itself and fails
    (instead of pausing) when Redis loses it during the rebuild.
    """

    def __init__(
        self, settings: Settings, bundle: Path | None = None, rebuild: bool = False
    ) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.models: ServingModels = load_serving_models(settings, bundle)
        self.windows = FeatureWindows.from_settings(
            settings.features, settings.thresholds.approval_target
        )
        self.models.check_windows(self.windows)
        self.store = RedisStore(settings, self.windows)
        self.publisher = Publisher(settings)
        self.processor = BatchProcessor(
            self.models, self.windows, settings.thresholds, settings.bandit
        )
        self.processor.monitor = Monitor(self.models, settings.thresholds)
        self.worker = ScoringWorker(
            settings, self.store, self.processor, self.publisher, self.metrics
        )
        self.started_s = time.monotonic()
        self.healthy = False
        self.redis_run_id = ""
        self.store_restarted = False  # set when Redis came back with another run id
        self.rebuild = rebuild
        # why nothing is decided (a MarkerCheck/StartState value), None while deciding
        self.state_lost: str | None = None

    async def start(self) -> None:
        """Check topics and Redis, start the producer, register partitions."""
        require_topics(self.settings)
        self.redis_run_id = await self.store.wait_until_available()
        await self.publisher.start()
        counts = topic_partitions(self.settings, input_topics(self.settings.topics))
        await self.store.register_partitions(
            f"{topic}:{p}" for topic, n in sorted(counts.items()) for p in range(n)
        )
        self.metrics.set("escrowguard_redis_state_lost", 0)
        if not self.rebuild:
            await self._check_state_at_start()
        self.metrics.set("escrowguard_model_info", 1, version=self.models.version)
        log_event(
            log,
            "worker_started",
            model_version=self.models.version,
            consumption=self.settings.worker.consumption,
            group=self.settings.kafka.consumer_group,
        )

    async def stop(self) -> None:
        """Stop the producer and the Redis pool."""
        await self.publisher.stop()
        await self.store.close()

    def maybe_reload(self) -> None:
        """Switch to a newly promoted bundle at a batch boundary (no restart)."""
        fresh = self.models.reload_if_promoted(self.settings)
        if fresh is not None:
            fresh.check_windows(self.windows)
            self.models = fresh
            self.processor.models = fresh
            self.processor.monitor = Monitor(fresh, self.settings.thresholds)
            self.metrics.values.pop("escrowguard_model_info", None)
            self.metrics.set("escrowguard_model_info", 1, version=fresh.version)
            log_event(log, "model_promoted", model_version=fresh.version)

    async def decide(self, messages: Sequence[RawMessage], strict_offsets: bool = True) -> int:
        """Ingest and decide, retrying with backoff while Redis or Kafka is unavailable."""
        now_s, wall = time.monotonic(), datetime.now(UTC)
        self.worker.ingest(messages, now_s, wall, strict_offsets)
        delay = self.settings.redis.retry_backoff_initial_s
        failed = False
        while True:
            try:
                if self.state_lost is not None:
                    # nothing is decided until a whole state is back; then the consumer
                    # rewinds to Redis's positions first (BatchLoop.step)
                    await self._wait_for_state()
                    return 0
                if failed:
                    await self._check_store_restart()
                    if self.store_restarted:
                        # decide nothing more on the restarted Redis before the consumer
                        # rewinds to the positions it still holds (BatchLoop.step)
                        return 0
                self.maybe_reload()
                n = await self.worker.drain(time.monotonic(), datetime.now(UTC))
                self.healthy = True
                self.worker.maybe_log(time.monotonic())
                return n
            except (StoreError, PublishError) as exc:
                self.healthy = False
                if (
                    isinstance(exc, StoreError)
                    and exc.reason == MARKER_CHANGED
                    and await self._state_changed()
                ):
                    return 0
                name = (
                    "escrowguard_store_errors_total"
                    if isinstance(exc, StoreError)
                    else "escrowguard_publish_errors_total"
                )
                self.metrics.inc(name)
                log_event(
                    log,
                    "batch_retry",
                    logging.WARNING,
                    reason=exc.reason,
                    error=exc.message,
                    retry_in_s=round(delay, 2),
                )
            except Exception:
                # a bug, not an outage: the buffer is untouched, so retrying is safe; the
                # per-event isolation in the pipeline keeps one bad event from looping here
                self.healthy = False
                self.metrics.inc("escrowguard_batch_failures_total")
                log.exception("batch_failed retry_in_s=%s", round(delay, 2))
            failed = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.settings.redis.retry_backoff_max_s)

    async def _check_store_restart(self) -> None:
        """After an outage: did Redis restart (maybe without its last writes)?"""
        run_id = await self.store.ping()
        if run_id != self.redis_run_id:
            log_event(
                log, "redis_restarted", logging.WARNING, previous=self.redis_run_id, current=run_id
            )
            self.redis_run_id = run_id
            self._forget_server_view()
            self.store_restarted = True

    # --- the state marker (state_marker.py) ---

    async def _check_state_at_start(self) -> None:
        """Decide against the marked state, mark a fresh one, or find the state lost."""
        marker = await self.store.get_marker()
        if is_whole(marker):
            self.store.marker = marker
            return
        positions = await self.store.positions() if marker is None else {}
        committed = await self._committed() if marker is None and not positions else {}
        state = start_state(marker, bool(positions), committed)
        if state in (StartState.CREATE, StartState.ADOPT):
            self.store.marker = await self.store.create_marker(new_marker_id())
            log_event(
                log,
                "state_marker_created",
                logging.WARNING if state is StartState.ADOPT else logging.INFO,
                reason=state.value,
                marker=self.store.marker,
            )
            return
        self.store.marker = ""  # matches no marker: nothing is read or written
        self._lose(state.value, committed_offsets=sum(committed.values()))

    async def _committed(self) -> dict[tuple[str, int], int]:
        """The worker group's committed offsets on the input partitions."""
        names = set(input_topics(self.settings.topics))
        try:
            offsets = await asyncio.to_thread(
                committed_offsets, self.settings, self.settings.kafka.consumer_group
            )
        except KafkaError as exc:
            raise InfraError(
                f"reading the group's committed offsets failed: {exc}", "broker_unavailable"
            ) from exc
        return {tp: off for tp, off in offsets.items() if tp[0] in names}

    async def _state_changed(self) -> bool:
        """A read or write found another marker than ours: pause (state lost, or a rebuild
        running) or rewind to the rebuilt state. False when the marker is ours after all, or
        Redis cannot say (an ordinary failure: retried)."""
        try:
            current = await self.store.get_marker()
        except StoreError:
            return False
        check = check_marker(self.store.marker or "", current)
        if check is MarkerCheck.OK:
            return False
        if self.rebuild:
            raise StoreError(
                f"Redis lost the state while it was being rebuilt (marker now {current!r}): "
                "run `escrowguard rebuild-state` again",
                "redis_state_lost",
            )
        if check is MarkerCheck.REPLACED:
            log_event(
                log,
                "redis_state_replaced",
                logging.WARNING,
                previous=self.store.marker,
                current=current,
            )
            self._adopt(str(current))
            return True
        self._lose(check.value)
        return True

    def _lose(self, reason: str, **detail: object) -> None:
        """Stop deciding: report once (log, /health, metric) and forget the old server's view."""
        first = self.state_lost is None
        self.state_lost = reason
        self.healthy = False
        self.metrics.set("escrowguard_redis_state_lost", 1)
        self._forget_server_view()
        if first:
            log_event(
                log,
                "redis_state_lost",
                logging.ERROR,
                reason=reason,
                marker_expected=self.store.marker or None,
                action=ACTION,
                **detail,
            )

    async def _wait_for_state(self) -> None:
        """While the state is lost: look at the marker now and then; once a whole state is
        marked (``rebuild-state`` ended), decide against it after a rewind."""
        await asyncio.sleep(STATE_POLL_S)
        try:
            current = await self.store.get_marker()
        except StoreError:
            self.metrics.inc("escrowguard_store_errors_total")
            return
        if not is_whole(current):
            reason = (
                MarkerCheck.REBUILDING.value
                if current and current.startswith(REBUILDING)
                else MarkerCheck.LOST.value
            )
            if reason != self.state_lost:
                log_event(log, "redis_state_waiting", logging.WARNING, reason=reason)
                self.state_lost = reason
            return
        log_event(log, "redis_state_restored", logging.WARNING, marker=current)
        self._adopt(str(current))

    def _adopt(self, marker: str) -> None:
        """Decide against ``marker``'s state from now on, after a rewind to its positions."""
        self.store.marker = marker
        self.state_lost = None
        self.metrics.set("escrowguard_redis_state_lost", 0)
        self._forget_server_view()
        self.store_restarted = True

    def _forget_server_view(self) -> None:
        """Drop what was learnt from Redis's earlier state: cached log prefixes, the latest
        decided event time, bandit posteriors."""
        self.store.cache.clear()
        self.worker.store_restarted()
