"""Everything one worker process holds: settings, models, store, sender, worker.

Both consumption paths (``batch.py`` and the agent in ``app.py``) feed a ``Runtime``;
``decide`` retries with exponential backoff while Redis or Kafka is unavailable, and notices
when Redis came back as a different server (restarted), so the batch path can rewind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from escrowguard.errors import PublishError, StoreError
from escrowguard.infra import require_topics, topic_partitions
from escrowguard.logs import log_event
from escrowguard.models.features import FeatureWindows
from escrowguard.models.serving import ServingModels, load_serving_models
from escrowguard.settings import Settings
from escrowguard.stream_app.emit import Publisher
from escrowguard.stream_app.metrics import Metrics
from escrowguard.stream_app.monitor import Monitor
from escrowguard.stream_app.pipeline import BatchProcessor
from escrowguard.stream_app.store import RedisStore
from escrowguard.stream_app.worker import RawMessage, ScoringWorker
from escrowguard.topics import input_topics

log = logging.getLogger(__name__)


class Runtime:
    """Everything one worker process holds: settings, models, store, sender, worker."""

    def __init__(self, settings: Settings, bundle: Path | None = None) -> None:
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

    async def start(self) -> None:
        """Check topics and Redis, start the producer, register partitions."""
        require_topics(self.settings)
        self.redis_run_id = await self.store.wait_until_available()
        await self.publisher.start()
        counts = topic_partitions(self.settings, input_topics(self.settings.topics))
        await self.store.register_partitions(
            f"{topic}:{p}" for topic, n in sorted(counts.items()) for p in range(n)
        )
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
            self.store.cache.clear()
            self.worker.store_restarted()
            self.store_restarted = True
