"""Shared pieces of the hostile-input, pause, back-pressure and security fault tests.

Not a conftest (pytest does not load it by itself): the test modules import what they use.

- ``trained_bundle`` (session): the five models trained once on the scale-1 history
  (``generate_history(42, 1.0)``) and promoted into a registry of the session's own; the
  history's lines are what most of these tests replay.
- ``namespace``: fresh topic prefix, Redis key prefix and consumer group on given servers,
  with every topic created.
- ``run_worker``: one ``escrowguard worker`` child, messages produced in phases by a raw
  kafka-python producer (the next phase only once the group committed the previous one),
  outputs read back from the output topics.
- ``clean_ids``: the output id sets of an undisturbed run of the same history on the
  session's servers (computed once per session and bundle, shared by the tests).
- ``reference_ids``: the same decisions computed in process (``ScoringWorker`` over the
  in-memory store, with the real bundle): the clean run for inputs too large to run twice.
- ``offer``: a rate-limited aiokafka producer; ``sitecustomize_env``: code a worker child
  runs at start-up (fault injection and probes, test-only).

Id sets leave out ``drift`` and ``retrain_needed`` alerts: they are per-worker operational
monitors, not part of the run-to-run guarantee (docs/ordering.md, section 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from kafka import KafkaProducer
from kafka.partitioner.default import murmur2

from escrowguard.demo import Outputs, read_outputs, train_and_promote
from escrowguard.events import decode
from escrowguard.infra import create_topics
from escrowguard.kafka_config import client_options
from escrowguard.models.features import FeatureWindows
from escrowguard.models.serving import load_serving_models
from escrowguard.outputs import DETERMINISTIC_KINDS, AnyOutput
from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history
from escrowguard.settings import Settings
from escrowguard.stream_app.memory_store import MemoryStore
from escrowguard.stream_app.pipeline import BatchProcessor
from escrowguard.stream_app.supervisor import WorkerProcess, group_progress, wait_caught_up
from escrowguard.stream_app.worker import RawMessage, ScoringWorker
from escrowguard.topics import input_topics

#: One message to produce: (topic suffix, key, value).
Message = tuple[str, bytes | None, bytes]


@dataclass(frozen=True)
class TrainedBundle:
    """The session's promoted bundle and the history it was trained on."""

    registry_dir: Path
    bundle_dir: Path
    history_dir: Path
    lines: tuple[bytes, ...]

    @property
    def version(self) -> str:
        return self.bundle_dir.name


_BUNDLES: dict[str, TrainedBundle] = {}


def train_once(root: Path, settings: Settings) -> TrainedBundle:
    """Generate the scale-1 history and train + promote its bundle, once per process."""
    if "bundle" not in _BUNDLES:
        history = generate_history(42, 1.0)
        history_dir = root / "history"
        write_history(history, history_dir)
        registry = root / "registry"
        run = settings.replace(models={"registry_dir": str(registry), "bundle_dir": ""})
        bundle = train_and_promote(history_dir, root / "models", run, lambda _line: None)
        _BUNDLES["bundle"] = TrainedBundle(registry, bundle, history_dir, tuple(history.events))
    return _BUNDLES["bundle"]


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> TrainedBundle:
    """The bundle every test here scores with (trained once per session)."""
    from escrowguard.settings import load_settings

    return train_once(tmp_path_factory.mktemp("hostile-bundle"), load_settings(env={}))


def namespace(settings: Settings, bundle: TrainedBundle, **sections: dict[str, object]) -> Settings:
    """``settings`` with a topic prefix, Redis key prefix and group of their own, the
    session's registry, and every topic created."""
    tag = f"h{uuid.uuid4().hex[:10]}"
    scoped = settings.replace(
        topics={"prefix": f"{tag}."},
        redis={"key_prefix": tag},
        kafka={"consumer_group": f"{tag}-scorer"},
        models={"registry_dir": str(bundle.registry_dir), "bundle_dir": ""},
    )
    if sections:
        scoped = scoped.replace(**sections)
    create_topics(scoped)
    return scoped


# --- producing -----------------------------------------------------------------------------


def event_message(line: bytes) -> Message:
    """A valid wire line routed the way the replay tool routes it (topic, key)."""
    event = decode(line)
    return event.topic_suffix, event.key.encode(), line


class RawProducer:
    """A kafka-python producer outside escrowguard: acks=all, idempotent (ordered per
    partition), no validation. ``send`` returns the (partition, offset) future."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer = KafkaProducer(
            **client_options(settings.kafka, client_suffix="hostile"),
            acks="all",
            linger_ms=5,
            max_request_size=2 * 1024 * 1024,
        )
        self.sent = 0

    def send(self, message: Message) -> object:
        suffix, key, value = message
        self.sent += 1
        return self.producer.send(self.settings.topics.name(suffix), value=value, key=key)

    def send_all(self, messages: Sequence[Message]) -> list[object]:
        futures = [self.send(m) for m in messages]
        self.producer.flush(timeout=60)
        return futures

    def close(self) -> None:
        self.producer.close(timeout=10)


def partition_for(key: bytes, partitions: int) -> int:
    """The partition any Kafka client's default partitioner picks for a key."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# --- running a worker -------------------------------------------------------------------------


@dataclass
class WorkerRun:
    """What one worker run produced and how it went."""

    outputs: Outputs
    metrics: str
    log: str
    produced: int
    committed: int
    futures: list[list[object]] = field(default_factory=list)  # per phase, per message
    seconds: float = 0.0
    peak_rss_kib: int = 0


def metric_value(metrics: str, name: str, **labels: str) -> float:
    """A counter/gauge from Prometheus text (summed over label sets matching ``labels``)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += float(value)
    return total


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc/<pid>/status."""
    out = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


@contextlib.contextmanager
def worker_process(
    settings: Settings,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    *,
    default_bind: bool = False,
) -> Iterator[WorkerProcess]:
    """A started, serving worker child; stopped (SIGTERM, then SIGKILL) on the way out.

    ``WorkerProcess`` names the HTTP bind address explicitly (127.0.0.1) whenever it differs
    from the configured default; ``default_bind`` leaves the worker to its default instead."""
    worker = WorkerProcess(settings, log_path, extra_env=extra_env)
    if default_bind:
        worker._env.pop("ESCROWGUARD_HTTP__BIND", None)
    worker.start()
    try:
        worker.wait_serving()
        yield worker
    finally:
        if worker.alive():
            worker.stop(timeout_s=20)


def run_worker(
    settings: Settings,
    phases: Sequence[Sequence[Message]],
    log_path: Path,
    *,
    extra_env: dict[str, str] | None = None,
    during: Callable[[WorkerProcess, int], None] | None = None,
    timeout_s: float = 300.0,
) -> WorkerRun:
    """Start a worker, produce each phase and wait until the group committed it, read the
    outputs. ``during(worker, phase_index)`` runs right after a phase is handed to the
    producer (to pause a server mid-stream, say)."""
    started = time.monotonic()
    producer = RawProducer(settings)
    futures: list[list[object]] = []
    try:
        with worker_process(settings, log_path, extra_env) as worker:
            for i, phase in enumerate(phases):
                futures.append([producer.send(m) for m in phase])
                if during is not None:
                    during(worker, i)
                producer.producer.flush(timeout=120)
                progress = wait_caught_up(settings, [worker], timeout_s=timeout_s)
            metrics = worker.metrics()
            peak = rss_kib(worker.pid or 0)["VmHWM"]
            assert worker.alive(), worker.log_tail()
    finally:
        producer.close()
    return WorkerRun(
        outputs=read_outputs(settings),
        metrics=metrics,
        log=log_path.read_text(errors="replace"),
        produced=producer.sent,
        committed=progress.committed,
        futures=futures,
        seconds=time.monotonic() - started,
        peak_rss_kib=peak,
    )


def committed_total(settings: Settings) -> tuple[int, int]:
    """(committed, available) input messages of the namespace's group."""
    p = group_progress(settings)
    return p.committed, p.total


# --- comparing runs --------------------------------------------------------------------------


@dataclass(frozen=True)
class IdSets:
    """The ids a run decided: alerts (deterministic kinds), freezes, decisions."""

    alerts: frozenset[str]
    freezes: frozenset[str]
    decisions: frozenset[str]

    def sizes(self) -> str:
        return (
            f"{len(self.alerts)} alerts, {len(self.freezes)} freezes, "
            f"{len(self.decisions)} decisions"
        )


def id_sets(outputs: Outputs | Sequence[AnyOutput]) -> IdSets:
    """Id sets of a run's outputs (de-duplicated: outputs are at-least-once on the wire)."""
    if isinstance(outputs, Outputs):
        alerts, freezes, decisions = outputs.alerts, outputs.freezes, outputs.decisions
    else:
        from escrowguard.outputs import Alert, MilestoneDecision, PayoutFreeze

        alerts = [o for o in outputs if isinstance(o, Alert)]
        freezes = [o for o in outputs if isinstance(o, PayoutFreeze)]
        decisions = [o for o in outputs if isinstance(o, MilestoneDecision)]
    return IdSets(
        alerts=frozenset(a.alert_id for a in alerts if a.kind in DETERMINISTIC_KINDS),
        freezes=frozenset(f"{f.freeze_id}:{f.action}" for f in freezes),
        decisions=frozenset(d.decision_id for d in decisions),
    )


def split_phases(lines: Sequence[bytes], first_share: float = 0.2) -> list[list[Message]]:
    """Two phases of valid events: the first ``first_share`` of the history, then the rest."""
    cut = int(len(lines) * first_share)
    return [[event_message(x) for x in lines[:cut]], [event_message(x) for x in lines[cut:]]]


_CLEAN: dict[tuple[str, str], IdSets] = {}


def clean_ids(settings: Settings, bundle: TrainedBundle, log_dir: Path) -> IdSets:
    """Output ids of an undisturbed worker run of the bundle's history (once per session)."""
    key = (bundle.version, settings.kafka.bootstrap_servers)
    if key not in _CLEAN:
        scoped = namespace(settings, bundle)
        run = run_worker(scoped, split_phases(bundle.lines), log_dir / "clean-worker.log")
        assert run.committed == run.produced == len(bundle.lines)
        assert not run.outputs.dead_letters, run.outputs.dead_letters[:3]
        _CLEAN[key] = id_sets(run.outputs)
    return _CLEAN[key]


# --- the in-process reference ------------------------------------------------------------------


class _Collect:
    def __init__(self) -> None:
        self.outputs: list[AnyOutput] = []

    async def send_all(self, outputs: Sequence[AnyOutput]) -> None:
        self.outputs.extend(outputs)


class ReferenceEngine:
    """Decides wire lines in process: one ``ScoringWorker`` over ``MemoryStore`` with the
    real bundle (the store contract test shows the in-memory store decides exactly like
    Redis). Lines may be added while it runs (in event-time order, like a live topic)."""

    def __init__(self, settings: Settings, registry_dir: Path, chunk: int = 500) -> None:
        s = settings.replace(models={"registry_dir": str(registry_dir), "bundle_dir": ""})
        self.settings = s
        windows = FeatureWindows.from_settings(s.features, s.thresholds.approval_target)
        self.store = MemoryStore(windows, s.bandit)
        self.sink = _Collect()
        models = load_serving_models(s)
        processor = BatchProcessor(models, windows, s.thresholds, s.bandit)
        self.worker = ScoringWorker(s, self.store, processor, self.sink)
        self.chunk = chunk
        self.queues: dict[tuple[str, int], list[bytes]] = {
            (topic, p): [] for topic in input_topics(s.topics) for p in range(s.topics.partitions)
        }
        self.offsets = dict.fromkeys(self.queues, 0)
        self.clock = 0.0
        self.wall = datetime.now(UTC)
        self.started = False

    def add(self, lines: Sequence[bytes]) -> None:
        """Append wire lines to their topic partitions (routed as the replay tool does)."""
        parts = self.settings.topics.partitions
        for line in lines:
            suffix, key, value = event_message(line)
            assert key is not None
            self.queues[(self.settings.topics.name(suffix), partition_for(key, parts))].append(
                value
            )

    async def step(self) -> int:
        """Hand every partition its next chunk and decide; returns messages moved."""
        if not self.started:
            await self.store.register_partitions(f"{t}:{p}" for t, p in self.queues)
            self.worker.assign(dict.fromkeys(self.queues, 0), 0.0)
            self.started = True
        self.clock += 0.05
        moved = 0
        for tp, queue in self.queues.items():
            start = self.offsets[tp]
            batch = queue[start : start + self.chunk]
            if batch:
                self.offsets[tp] = start + len(batch)
                self.worker.ingest(
                    [RawMessage(tp[0], tp[1], start + i, v) for i, v in enumerate(batch)],
                    self.clock,
                    self.wall,
                )
                moved += len(batch)
            self.worker.buffer.note_fetch(tp, len(queue), self.clock)
        return moved + await self.worker.drain(self.clock, self.wall)

    async def run_out(self) -> None:
        """Decide everything added so far (idle partitions release the frontier)."""
        while True:
            if not await self.step():
                if len(self.worker.buffer) == 0:
                    return
                self.clock += 1.0


def reference_outputs(
    lines: Sequence[bytes], settings: Settings, bundle: TrainedBundle
) -> list[AnyOutput]:
    """Every output of ``lines`` decided in process (``ReferenceEngine``)."""
    engine = ReferenceEngine(settings, bundle.registry_dir)
    engine.add(lines)
    asyncio.run(engine.run_out())
    return engine.sink.outputs


def reference_ids(lines: Sequence[bytes], settings: Settings, bundle: TrainedBundle) -> IdSets:
    """``id_sets`` of ``reference_outputs``."""
    return id_sets(reference_outputs(lines, settings, bundle))


def describe_difference(got: IdSets, want: IdSets) -> str:
    """What differs between two id sets, for assertion messages."""
    parts = []
    for name in ("alerts", "freezes", "decisions"):
        a, b = getattr(got, name), getattr(want, name)
        if a != b:
            parts.append(f"{name}: {len(a - b)} unexpected, {len(b - a)} missing")
    return "; ".join(parts) or "equal"


# --- a rate-limited producer -------------------------------------------------------------------


@dataclass(frozen=True)
class Offered:
    """What ``offer`` sent: messages acknowledged, failed, and how long sending took."""

    acked: int
    failed: int
    seconds: float

    @property
    def events_per_s(self) -> float:
        return self.acked / self.seconds if self.seconds else 0.0


def offer(settings: Settings, lines: Sequence[bytes], rate: float | None = None) -> Offered:
    """Produce wire lines (routed as the replay tool routes them) with aiokafka, paced to
    ``rate`` events per second (None: as fast as possible); waits for every ack.

    aiokafka, not the replay tool: under CPU contention kafka-python's per-message cost
    (~5k msg/s here with the worker running) cannot offer twice the worker's capacity;
    aiokafka's producer sends ~30k msg/s. acks=all; one batch in flight per partition, so
    each partition keeps the order sent."""
    from aiokafka import AIOKafkaProducer

    messages = [event_message(x) for x in lines]

    async def main() -> Offered:
        producer = AIOKafkaProducer(
            **client_options(settings.kafka, client_suffix="load"),
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        await producer.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        futures = []
        try:
            sent = 0
            while sent < len(messages):
                due = len(messages)
                if rate is not None:
                    due = min(due, int((loop.time() - started) * rate) + 1)
                for suffix, key, value in messages[sent:due]:
                    futures.append(
                        await producer.send(settings.topics.name(suffix), value=value, key=key)
                    )
                sent = max(sent, due)
                if rate is not None:
                    await asyncio.sleep(0.01)
            results = await asyncio.gather(*futures, return_exceptions=True)
        finally:
            await producer.stop()
        failed = sum(1 for r in results if isinstance(r, BaseException))
        return Offered(len(results) - failed, failed, loop.time() - started)

    return asyncio.run(main())


def sitecustomize_env(directory: Path, source: str) -> dict[str, str]:
    """Environment that makes a child Python run ``source`` at start-up (a
    ``sitecustomize`` module on its PYTHONPATH): how these tests inject a fault or a probe
    into a real worker without any hook in the package."""
    import os
    import textwrap

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(textwrap.dedent(source))
    path = os.pathsep.join(p for p in (str(directory), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}
