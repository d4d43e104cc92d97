"""``escrowguard demo``: the whole product end to end on one machine.

Servers (embedded unless configured) -> a generated history with labelled attacks -> the
five models trained and promoted -> a worker process -> the history replayed into fresh
topics -> the worker catches up -> every output read back and scored against the labels.

Each run uses its own topic prefix and Redis key prefix, so it never mixes with an earlier
run on the same servers. Everything it starts is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import collections
import contextlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from kafka import KafkaProducer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from escrowguard.errors import InfraError
from escrowguard.events import PledgeCreated
from escrowguard.infra import create_topics
from escrowguard.infra.embedded import servers_for
from escrowguard.kafka_config import client_options
from escrowguard.models.bundle import promote
from escrowguard.models.detection_scores import (
    KindScore,
    double_freezes,
    exit_scam_freezes,
    score_alerts,
)
from escrowguard.models.history import read_events
from escrowguard.models.serving import SERVING_FEATURES
from escrowguard.models.train import (
    TrainingConfig,
    load_training_data,
    save_trained,
    train_models,
)
from escrowguard.outputs import Alert, DeadLetter, MilestoneDecision, PayoutFreeze
from escrowguard.producers.files import prepare_out_dir, write_history
from escrowguard.producers.generator import check_options, generate_history
from escrowguard.producers.replay import replay_file
from escrowguard.settings import Settings
from escrowguard.stream_app.supervisor import GroupProgress, WorkerProcess, wait_caught_up
from escrowguard.stream_app.tail import scan_output

#: Messages the demo sends straight to an input topic with a raw producer, to show the
#: dead-letter path: (topic suffix, bytes, the reason the worker must give).
HOSTILE_MESSAGES: tuple[tuple[str, bytes, str], ...] = (
    ("pledges", b"\xff\xfe not utf-8", "not_utf8"),
    ("pledges", b'{"event_type": "pledge_created", "amount": NaN}', "not_json"),
    ("votes", b'{"event_type": "vote_rigged", "schema_version": 1}', "unknown_event_type"),
)


@dataclass(frozen=True)
class Outputs:
    """Everything the worker published, read back from the output topics."""

    alerts: list[Alert]
    freezes: list[PayoutFreeze]
    decisions: list[MilestoneDecision]
    dead_letters: list[DeadLetter]
    unreadable: int = 0


@dataclass
class DemoSummary:
    """What the demo measured (printed by ``lines``; the e2e test asserts on it)."""

    events_sent: int = 0
    replay_seconds: float = 0.0
    decide_seconds: float = 0.0
    model_version: str = ""
    alerts_by_kind: dict[str, int] = field(default_factory=dict)
    freezes: int = 0
    frozen_milestones: int = 0
    decisions_by_route: dict[str, int] = field(default_factory=dict)
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)
    scores: dict[str, KindScore] = field(default_factory=dict)
    exit_pending: int = 0
    exit_pending_frozen: int = 0
    double_freezes: int = 0
    model_versions_seen: set[str] = field(default_factory=set)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_s(self) -> float:
        return self.events_sent / self.decide_seconds if self.decide_seconds else 0.0

    def lines(self) -> list[str]:
        """The human summary."""
        out = [
            f"events     {self.events_sent:,} replayed; the worker decided them in "
            f"{self.decide_seconds:.1f} s ({self.events_per_s:,.0f} events/s, replay "
            f"included) with bundle {self.model_version}",
            "alerts     " + ", ".join(f"{k} {n}" for k, n in sorted(self.alerts_by_kind.items())),
            f"freezes    {self.freezes} ({self.frozen_milestones} milestones); exit-scam "
            f"pending milestones frozen {self.exit_pending_frozen}/{self.exit_pending}; "
            f"milestones with two freezes: {self.double_freezes}",
            "decisions  "
            + ", ".join(f"{k} {n}" for k, n in sorted(self.decisions_by_route.items())),
            "dead       "
            + (
                ", ".join(f"{k} {n}" for k, n in sorted(self.dead_letters_by_reason.items()))
                or "none"
            ),
            "",
            f"{'attack':<16}{'unit':<11}{'labelled':>9}{'flagged':>9}{'recall':>8}"
            f"{'precision':>11}",
        ]
        for kind, score in self.scores.items():
            out.append(
                f"{kind:<16}{score.unit:<11}{score.labelled:>9}{score.flagged:>9}"
                f"{score.recall:>8.2f}{score.precision:>11.2f}"
            )
        return out


def read_outputs(settings: Settings, timeout_s: float = 60.0) -> Outputs:
    """Every output message so far (the end of each topic as first seen)."""
    collected: dict[str, list[object]] = {}
    unreadable = 0
    for stream in ("alerts", "freezes", "decisions", "deadletter"):
        items = collected.setdefault(stream, [])
        for message in scan_output(settings, stream, timeout_s=timeout_s):
            if message.output is None:
                unreadable += 1
            else:
                items.append(message.output)
    return Outputs(
        alerts=[o for o in collected["alerts"] if isinstance(o, Alert)],
        freezes=[o for o in collected["freezes"] if isinstance(o, PayoutFreeze)],
        decisions=[o for o in collected["decisions"] if isinstance(o, MilestoneDecision)],
        dead_letters=[o for o in collected["deadletter"] if isinstance(o, DeadLetter)],
        unreadable=unreadable,
    )


def summarize(outputs: Outputs, labels: dict[str, object], events_path: Path) -> DemoSummary:
    """Counts per kind and precision/recall per attack kind (deduplicated by output id:
    outputs are at-least-once on the wire)."""
    alerts = list({a.alert_id: a for a in outputs.alerts}.values())
    freezes = [f for f in outputs.freezes if f.action == "freeze"]
    unique_freezes = {f.freeze_id: f for f in freezes}
    decisions = list({d.decision_id: d for d in outputs.decisions}.values())
    pledges = [
        (e.event_id, e.backer_id, e.project_id)
        for e in read_events(events_path)
        if isinstance(e, PledgeCreated)
    ]
    expected, frozen = exit_scam_freezes(unique_freezes.values(), labels)
    summary = DemoSummary(
        alerts_by_kind=dict(collections.Counter(str(a.kind) for a in alerts)),
        freezes=len(unique_freezes),
        frozen_milestones=len({f.milestone_id for f in unique_freezes.values()}),
        decisions_by_route=dict(collections.Counter(d.route for d in decisions)),
        dead_letters_by_reason=dict(
            collections.Counter(str(d.reason) for d in outputs.dead_letters)
        ),
        scores=score_alerts(alerts, labels, pledges),
        exit_pending=len(expected),
        exit_pending_frozen=len(frozen),
        double_freezes=len(double_freezes(unique_freezes.values())),
    )
    summary.model_versions_seen = {a.model_version for a in alerts} | {
        d.model_version for d in decisions
    }
    return summary


def send_raw(settings: Settings, messages: Sequence[tuple[str, bytes]]) -> None:
    """Produce raw bytes to input topics (topic suffix, value), bypassing every check."""
    producer = KafkaProducer(**client_options(settings.kafka, client_suffix="raw"), acks="all")
    try:
        for suffix, value in messages:
            producer.send(settings.topics.name(suffix), value=value, key=b"raw")
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=10)


def run_prefix(now: float | None = None) -> str:
    """A topic/key prefix unique to one run (``demo-<unix ms>``)."""
    return f"demo-{int((now or time.time()) * 1000)}"


@contextlib.contextmanager
def demo_servers(settings: Settings, prefix: str) -> Iterator[Settings]:
    """Servers for a run (embedded unless configured), with the run's own topics and keys."""
    with servers_for(settings) as (ready, _servers):
        scoped = ready.replace(
            topics={"prefix": f"{prefix}."},
            redis={"key_prefix": prefix},
            kafka={"consumer_group": f"{prefix}-scorer"},
        )
        create_topics(scoped)
        yield scoped


Echo = Callable[[str], None]


def train_bundle(
    history_dir: Path,
    out_dir: Path,
    settings: Settings,
    echo: Echo,
    **overrides: object,
) -> Path:
    """Train the five models on a generator output dir; the bundle's path.

    ``overrides`` change the training config (e.g. ``anomaly_budget=0.05``)."""
    history = load_training_data(None, history_dir, None)
    trained = train_models(
        history,
        TrainingConfig.from_settings(settings, **overrides),
        progress=lambda phase, text: echo(f"  trained {phase:<12} {text}"),
    )
    return save_trained(trained, out_dir, datetime.now(UTC))


def train_and_promote(history_dir: Path, out_dir: Path, settings: Settings, echo: Echo) -> Path:
    """Train the five models on ``history_dir`` and promote the bundle; its path."""
    path = train_bundle(history_dir, out_dir, settings, echo)
    promote(settings.models.registry_dir, path, SERVING_FEATURES)
    return path


def run_demo(
    settings: Settings,
    out_dir: Path,
    *,
    seed: int = 42,
    scale: float = 1.0,
    echo: Echo = print,
    progress: bool = True,
) -> DemoSummary:
    """The main job (module docstring); returns the summary it printed."""
    check_options(seed, scale)
    out_dir.mkdir(parents=True, exist_ok=True)
    phase_seconds: dict[str, float] = {}
    started = time.perf_counter()

    def done(phase: str) -> None:
        nonlocal started
        phase_seconds[phase] = time.perf_counter() - started
        started = time.perf_counter()

    history_dir = prepare_out_dir(out_dir / "history")
    history = generate_history(seed, scale)
    write_history(history, history_dir)
    events_path = history_dir / "events.jsonl"
    echo(f"generated  {len(history.events):,} events (seed {seed}, scale {scale}) in {history_dir}")
    done("generate")

    prefix = run_prefix()
    with demo_servers(settings, prefix) as scoped:
        run = scoped.replace(models={"registry_dir": str(out_dir / "registry"), "bundle_dir": ""})
        echo(f"servers    kafka={run.kafka.bootstrap_servers} redis={run.redis.url}")
        echo(f"namespace  topics {run.topics.prefix}*, Redis keys {run.redis.key_prefix}:*")
        done("servers")
        bundle = train_and_promote(history_dir, out_dir / "models", run, echo)
        echo(f"promoted   {bundle.name} into {run.models.registry_dir}")
        done("train")

        worker = WorkerProcess(run, out_dir / "worker.log")
        try:
            worker.start()
            worker.wait_serving()
            echo(f"worker     pid {worker.pid}, http {worker.url} (log: {worker.log_path})")
            done("worker start")
            decide_started = time.perf_counter()
            replayed = replay_file(run, events_path, progress=progress)
            for line in replayed.lines():
                echo(f"  {line}")
            if not replayed.ok:
                raise InfraError("the replay failed: see its summary above", "replay_failed")
            send_raw(run, [(suffix, value) for suffix, value, _ in HOSTILE_MESSAGES])
            echo(f"hostile    {len(HOSTILE_MESSAGES)} malformed messages sent with a raw producer")
            caught = _wait_with_progress(run, worker, echo, progress)
            decide_seconds = time.perf_counter() - decide_started
            done("replay + decide")
        finally:
            worker.stop()
        outputs = read_outputs(run)
        done("read outputs")

    summary = summarize(outputs, history.labels, events_path)
    summary.events_sent = replayed.total_sent
    summary.replay_seconds = replayed.elapsed_s
    summary.decide_seconds = decide_seconds
    summary.model_version = bundle.name
    summary.phase_seconds = phase_seconds
    echo(f"decided    {caught.committed:,} input messages committed by the group")
    echo("")
    for line in summary.lines():
        echo(line)
    echo("")
    echo("phases     " + ", ".join(f"{k} {v:.1f} s" for k, v in phase_seconds.items()))
    (out_dir / "summary.json").write_text(json.dumps(summary_json(summary), indent=2) + "\n")
    return summary


def summary_json(summary: DemoSummary) -> dict[str, object]:
    """The summary as JSON (``out/demo/summary.json``)."""
    return {
        "events_sent": summary.events_sent,
        "decide_seconds": round(summary.decide_seconds, 2),
        "events_per_s": round(summary.events_per_s, 1),
        "model_version": summary.model_version,
        "alerts_by_kind": summary.alerts_by_kind,
        "freezes": summary.freezes,
        "exit_pending_frozen": [summary.exit_pending_frozen, summary.exit_pending],
        "double_freezes": summary.double_freezes,
        "decisions_by_route": summary.decisions_by_route,
        "dead_letters_by_reason": summary.dead_letters_by_reason,
        "scores": {
            k: {
                "labelled": s.labelled,
                "flagged": s.flagged,
                "recall": round(s.recall, 3),
                "precision": round(s.precision, 3),
            }
            for k, s in summary.scores.items()
        },
        "phase_seconds": {k: round(v, 2) for k, v in summary.phase_seconds.items()},
    }


def _wait_with_progress(
    settings: Settings, worker: WorkerProcess, echo: Echo, progress: bool
) -> GroupProgress:
    if not progress:
        return wait_caught_up(settings, [worker])
    with Progress(
        "decide", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        task = bar.add_task("decide", total=None)

        def show(p: GroupProgress) -> None:
            bar.update(task, completed=p.committed, total=p.total)

        return wait_caught_up(settings, [worker], on_progress=show)
