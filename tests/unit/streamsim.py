"""A deterministic in-process simulation of the streaming deployment, for unit tests.

Messages go to topic partitions exactly as the replay tool routes them; several
``ScoringWorker`` instances own co-partitioned partition sets and share one
``MemoryStore``; a seeded scheduler interleaves deliveries across partitions and workers
the way a real consumer group might. No servers: this exercises the ordering, redelivery
and idempotency logic itself. The real-server versions live in tests/integration and
tests/faults.
"""

from __future__ import annotations

import asyncio
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from escrowguard.events import AnyEvent, decode
from escrowguard.models.features import (
    ANOMALY_FEATURES,
    PROJECT_FEATURES,
    VOTE_FEATURES,
    FeatureWindows,
)
from escrowguard.outputs import Alert, AnyOutput, DeadLetter, MilestoneDecision, PayoutFreeze
from escrowguard.settings import Settings, load_settings
from escrowguard.stream_app.memory_store import MemoryStore
from escrowguard.stream_app.pipeline import BatchProcessor
from escrowguard.stream_app.worker import RawMessage, ScoringWorker
from escrowguard.topics import topic_for_event

WALL = datetime(2030, 1, 1, tzinfo=UTC)  # "now" for the future-timestamp check


class RuleModels:
    """A deterministic stand-in for a trained bundle: simple functions of the features.

    Not a mock of any server: the pipeline needs *some* model, and these make every
    detection path fire on the synthetic history.
    """

    version = "sim-v1"
    anomaly_threshold = 0.62
    training_end_us = 0

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        # large amount vs the backer's mean, bursts, young accounts (ANOMALY_FEATURES order)
        vs_mean, burst, age = (
            ANOMALY_FEATURES.index(n)
            for n in ("amount_vs_backer_mean", "backer_pledges_1h", "log_account_age_s")
        )
        z = 0.8 * X[:, vs_mean] + 0.5 * X[:, burst] - 0.15 * X[:, age] + 0.5
        return 1 / (1 + np.exp(-z))

    def risk(self, X: np.ndarray) -> np.ndarray:
        approval, low = (
            VOTE_FEATURES.index("approval_weighted"),
            VOTE_FEATURES.index("prior_low_approval"),
        )
        return np.clip(1.0 - X[:, approval] + 0.1 * X[:, low], 0.0, 1.0)

    def success(self, X: np.ndarray) -> np.ndarray:
        return np.clip(X[:, PROJECT_FEATURES.index("pledge_count")] / 20.0, 0.0, 1.0)

    def reference(self, feature: str) -> tuple[float, float]:
        return 0.0, 1.0

    def reference_mean(self, name: str) -> tuple[float, float]:
        return 0.0, 1.0


class CrashError(Exception):
    """A simulated kill -9 of a worker."""


class Collector:
    """The sender: keeps every output, in order. With ``crash_rate``, a send sometimes
    "kills" the worker after its batch was written to the store but before the outputs
    went out (the interesting crash point); sometimes after sending half of them."""

    def __init__(self, crash_rate: float = 0.0, seed: int = 0) -> None:
        self.outputs: list[AnyOutput] = []
        self.crash_rate = crash_rate
        self.rng = random.Random(seed)
        self.crashes = 0

    async def send_all(self, outputs: Sequence[AnyOutput]) -> None:
        if outputs and self.rng.random() < self.crash_rate:
            self.crashes += 1
            if self.rng.random() < 0.5:
                self.outputs.extend(outputs[: len(outputs) // 2])
            raise CrashError
        self.outputs.extend(outputs)

    def ids(self, kind: type) -> set[str]:
        return {output_id(o) for o in self.outputs if isinstance(o, kind)}


def output_id(o: AnyOutput) -> str:
    if isinstance(o, Alert):
        return o.alert_id
    if isinstance(o, PayoutFreeze):
        return o.freeze_id + ":" + o.milestone_id
    if isinstance(o, MilestoneDecision):
        return o.decision_id
    assert isinstance(o, DeadLetter)
    return o.dead_letter_id


@dataclass
class Deployment:
    """Topics, partitions, workers and the shared store of one simulated run."""

    settings: Settings
    store: Any
    workers: list[ScoringWorker]
    owners: dict[tuple[str, int], int]
    queues: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)
    collector: Collector = field(default_factory=Collector)


def partition_of(event: AnyEvent, partitions: int) -> int:
    """Deterministic key partitioning (crc32), the same for every topic."""
    return zlib.crc32(event.key.encode()) % partitions


def deploy(
    partitions: int,
    workers: int,
    batch: int = 200,
    crash_rate: float = 0.0,
    seed: int = 0,
    store_factory: Any = None,
    base: Settings | None = None,
) -> Deployment:
    """``store_factory(settings, windows)`` builds the store (default: ``MemoryStore``)."""
    settings = (base or load_settings(env={})).replace(
        topics={"prefix": "sim.", "partitions": partitions},
        worker={"batch_max_events": batch, "idle_partition_ms": 100},
    )
    windows = FeatureWindows()
    store = (
        store_factory(settings, windows) if store_factory else MemoryStore(windows, settings.bandit)
    )
    collector = Collector(crash_rate, seed)
    models = RuleModels()
    pool = [
        ScoringWorker(
            settings,
            store,
            BatchProcessor(models, windows, settings.thresholds, settings.bandit),
            collector,
        )
        for _ in range(workers)
    ]
    owners = {}
    for suffix in ("backers", "projects", "pledges", "votes"):
        for p in range(partitions):
            owners[(f"sim.{suffix}", p)] = p % workers
    dep = Deployment(settings, store, pool, owners, collector=collector)
    dep.queues = {tp: [] for tp in owners}
    for i, w in enumerate(pool):
        w.assign({tp: 0 for tp, o in owners.items() if o == i}, 0.0)
    return dep


def produce(
    dep: Deployment, lines: Sequence[bytes], extra: Sequence[tuple[str, bytes]] = ()
) -> None:
    """Route wire lines to their topic partitions (``extra``: raw bytes to a topic suffix)."""
    parts = dep.settings.topics.partitions
    for line in lines:
        event = decode(line)
        topic = topic_for_event(event, dep.settings.topics)
        dep.queues[(topic, partition_of(event, parts))].append(line)
    for suffix, raw in extra:
        dep.queues[(f"sim.{suffix}", zlib.crc32(raw) % parts)].append(raw)


async def run(dep: Deployment, seed: int, max_chunk: int = 300) -> None:
    """Deliver everything in a seeded random interleaving until all is decided.

    A worker that crashes (see ``Collector``) loses its buffer and restarts its partitions
    from the committed offsets, like a kill -9 and a restart.
    """
    rng = random.Random(seed)
    offsets = dict.fromkeys(dep.queues, 0)
    clock = 0.0
    while True:
        clock += 0.05
        pending = [tp for tp, q in dep.queues.items() if offsets[tp] < len(q)]
        progress = 0
        if pending:
            tp = rng.choice(pending)
            owner = dep.workers[dep.owners[tp]]
            n = rng.randint(1, max_chunk)
            start = offsets[tp]
            chunk = dep.queues[tp][start : start + n]
            offsets[tp] = start + len(chunk)
            owner.ingest(
                [RawMessage(tp[0], tp[1], start + i, raw) for i, raw in enumerate(chunk)],
                clock,
                WALL,
            )
            progress += len(chunk)
        for w in dep.workers:
            for owned in w.buffer.partitions:
                w.buffer.note_fetch(owned, len(dep.queues[owned]), clock)
        for i, w in enumerate(dep.workers):
            try:
                progress += await w.drain(clock, WALL)
            except CrashError:
                progress += 1
                committed = w.buffer.commit_offsets()
                fresh = ScoringWorker(
                    w.settings,
                    w.store,
                    BatchProcessor(
                        w.processor.models, w.processor.windows, w.processor.th, w.processor.bandit
                    ),
                    w.sender,
                    w.metrics,
                )
                fresh.assign(committed, clock)
                dep.workers[i] = fresh
                for tp, off in committed.items():
                    offsets[tp] = off
        if not pending and progress == 0:
            if all(len(w.buffer) == 0 for w in dep.workers):
                return
            clock += 1.0  # let idle partitions stop holding the frontier back


def simulate(
    lines: Sequence[bytes],
    partitions: int,
    workers: int,
    seed: int,
    crash_rate: float = 0.0,
    store_factory: Any = None,
    base: Settings | None = None,
    **kw: object,
) -> Deployment:
    async def main() -> Deployment:
        dep = deploy(
            partitions,
            workers,
            crash_rate=crash_rate,
            seed=seed,
            store_factory=store_factory,
            base=base,
        )
        await dep.store.register_partitions(f"{t}:{p}" for t, p in dep.owners)
        produce(dep, lines, kw.pop("extra", ()))  # type: ignore[arg-type]
        await run(dep, seed, **kw)  # type: ignore[arg-type]
        return dep

    return asyncio.run(main())
