"""What the fault tests share: histories, a model bundle, runs of worker processes on a
fresh namespace, a comparable dump of the Redis state, and the output comparison.

The method is the one DESIGN.md ("Correctness") names: replay a seeded history, break
something (kill -9, rebalance, Redis restart, Redis loss), let the group catch up, and
compare with a clean run of the same history: the Redis feature state key by key, the sets
of alert, freeze and decision ids, and the count of outputs that reached the wire twice.
"""

from __future__ import annotations

import collections
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from escrowguard.demo import Outputs, read_outputs
from escrowguard.infra import create_topics, redis_client
from escrowguard.models.detection_scores import double_freezes
from escrowguard.outputs import DETERMINISTIC_KINDS, DeadLetter
from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history
from escrowguard.producers.replay import ReplaySummary, replay_file
from escrowguard.settings import Settings
from escrowguard.stream_app.store import key_prefix
from escrowguard.stream_app.supervisor import (
    WorkerProcess,
    high_watermarks,
    wait_caught_up,
)
from escrowguard.topics import input_topics

#: Keys of a namespace that are not feature state, and why each is left out of the
#: comparison (docs/reliability.md, "How the tests compare runs"):
EXCLUDED_KEYS: dict[str, str] = {
    "frontier": "per-partition event-time frontiers: when a partition counts as idle follows "
    "the wall clock, and the fields name partitions (layout-dependent)",
    "pos": "per-partition next offsets: compared with the high watermarks instead "
    "(assert_positions_at_end), and they name partitions",
    "rate:": "HTTP rate-limit buckets: wall clock and HTTP traffic, not the event history",
    "marker": "the state marker: a random id per state created (state_marker.py)",
}
#: TTLs are not dumped: every EXPIRE is relative to the wall clock of the write.


def fresh_namespace(settings: Settings, *, partitions: int | None = None) -> Settings:
    """Settings with a topic prefix, Redis key prefix and consumer group of their own;
    every topic created (with ``partitions`` partitions when given)."""
    tag = f"f{uuid.uuid4().hex[:10]}"
    topics: dict[str, Any] = {"prefix": f"{tag}."}
    if partitions is not None:
        topics["partitions"] = partitions
    scoped = settings.replace(
        topics=topics, redis={"key_prefix": tag}, kafka={"consumer_group": f"{tag}-scorer"}
    )
    create_topics(scoped)
    return scoped


@dataclass(frozen=True)
class HistoryFile:
    """A generated history on disk."""

    path: Path  # events.jsonl
    events: int
    seed: int
    scale: float


def make_history(out_dir: Path, seed: int, scale: float) -> HistoryFile:
    """Generate and write a history (tables, events.jsonl, labels)."""
    history = generate_history(seed, scale)
    write_history(history, out_dir)
    return HistoryFile(out_dir / "events.jsonl", len(history.events), seed, scale)


def time_cuts(history: HistoryFile, fractions: Sequence[float]) -> list[datetime]:
    """Event times that split the history at these fractions of its events (for replays
    in slices: ``[cut_i, cut_i+1)``)."""
    times = sorted(
        msgspec.json.decode(line)["occurred_at"]
        for line in history.path.read_bytes().splitlines()
        if line.strip()
    )
    return [datetime.fromisoformat(times[int(f * (len(times) - 1))]) for f in fractions]


# --- the Redis state ------------------------------------------------------------------


def _text(x: Any) -> Any:
    return x.decode() if isinstance(x, bytes) else x


def state_dump(settings: Settings) -> dict[str, Any]:
    """The namespace's Redis state, comparable across runs.

    SCAN the namespace, dump each key by type (strings, hashes, sorted sets with scores,
    sets, lists), with the namespace stripped from the names. Left out: ``EXCLUDED_KEYS``
    and TTLs. The de-duplication hashes (``seen:<generation>:<shard>``, event id -> the tag
    of the ``topic:partition:offset`` where it was first applied) show the position, its
    topic prefix stripped (``by_event_id`` drops it for runs on another partition layout).
    """
    namespace = key_prefix(settings) + ":"
    topic_prefix = settings.topics.prefix
    positions = _position_tags(settings)
    client = redis_client(settings.redis)
    readers = {
        "string": lambda p, k: p.get(k),
        "hash": lambda p, k: p.hgetall(k),
        "zset": lambda p, k: p.zrange(k, 0, -1, withscores=True),
        "set": lambda p, k: p.smembers(k),
        "list": lambda p, k: p.lrange(k, 0, -1),
    }
    state: dict[str, Any] = {}
    try:
        keys = [
            _text(raw)
            for raw in client.scan_iter(match=namespace + "*", count=1000)
            if not _excluded(_text(raw)[len(namespace) :])
        ]
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.type(key)
            kinds = [_text(k) for k in pipe.execute()]
            pipe = client.pipeline(transaction=False)
            present = []
            for key, kind in zip(chunk, kinds, strict=True):
                if kind == "none":  # expired between SCAN and TYPE
                    continue
                if kind not in readers:
                    raise AssertionError(f"unexpected Redis type {kind} for {key}")
                readers[kind](pipe, key)
                present.append((key, kind))
            for (key, kind), value in zip(present, pipe.execute(), strict=True):
                name = key[len(namespace) :]
                if kind == "string":
                    state[name] = _text(value)
                elif kind == "hash":
                    fields = {_text(k): _text(v) for k, v in value.items()}
                    if name.startswith("seen:"):
                        fields = {
                            k: positions.get(v, v).removeprefix(topic_prefix)
                            for k, v in fields.items()
                        }
                    state[name] = fields
                elif kind == "zset":
                    state[name] = [(_text(m), sc) for m, sc in value]
                elif kind == "set":
                    state[name] = sorted(_text(m) for m in value)
                else:
                    state[name] = [_text(v) for v in value]
    finally:
        client.close()
    return state


def _position_tags(settings: Settings) -> dict[str, str]:
    """Every input position's de-duplication tag (``Position.tag``, a CRC-32 of
    ``topic:partition:offset``) -> the position, so dumps of namespaces with other topic
    prefixes compare (the tag hashes the full topic name)."""
    marks = high_watermarks(settings, input_topics(settings.topics))
    return {
        str(zlib.crc32(f"{topic}:{p}:{o}".encode())): f"{topic}:{p}:{o}"
        for (topic, p), high in marks.items()
        for o in range(high)
    }


def _excluded(name: str) -> bool:
    return name in EXCLUDED_KEYS or any(
        name.startswith(p) for p in EXCLUDED_KEYS if p.endswith(":")
    )


def by_event_id(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the positions dropped from the de-duplication hashes (event ids
    only): the comparable part when two runs laid the topics out differently."""
    return {k: ({eid: "" for eid in v} if k.startswith("seen:") else v) for k, v in state.items()}


def state_diff(expected: dict[str, Any], actual: dict[str, Any], limit: int = 8) -> list[str]:
    """Human-readable differences between two dumps (empty when equal)."""
    problems = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing:
        problems.append(f"{len(missing)} keys missing, e.g. {missing[:limit]}")
    if extra:
        problems.append(f"{len(extra)} keys not in the clean run, e.g. {extra[:limit]}")
    differing = [k for k in sorted(set(expected) & set(actual)) if expected[k] != actual[k]]
    for k in differing[:limit]:
        e, a = expected[k], actual[k]
        if isinstance(e, dict) and isinstance(a, dict):
            diff = {f: (e.get(f), a.get(f)) for f in set(e) | set(a) if e.get(f) != a.get(f)}
            problems.append(f"{k}: {len(diff)} fields differ, e.g. {dict(list(diff.items())[:3])}")
        else:
            problems.append(f"{k}: clean {str(e)[:160]} != {str(a)[:160]}")
    if len(differing) > limit:
        problems.append(f"... {len(differing) - limit} more keys differ")
    return problems


def positions_at_end(settings: Settings) -> list[str]:
    """Partitions whose Redis position (next offset to apply) is not the high watermark."""
    marks = high_watermarks(settings, input_topics(settings.topics))
    client = redis_client(settings.redis)
    try:
        stored = {
            _text(k): int(v) for k, v in client.hgetall(f"{key_prefix(settings)}:pos").items()
        }
    finally:
        client.close()
    return [
        f"{topic}:{p} position {stored.get(f'{topic}:{p}')} != high watermark {high}"
        for (topic, p), high in sorted(marks.items())
        if high and stored.get(f"{topic}:{p}") != high
    ]


# --- the outputs ----------------------------------------------------------------------

_ENC = msgspec.json.Encoder()


def _content(output: Any) -> bytes:
    """An output without its wall-clock field: what a redelivery must reproduce exactly."""
    data = msgspec.to_builtins(output)
    data.pop("emitted_at", None)
    return _ENC.encode(data)


def _occurred(letter: DeadLetter) -> datetime:
    """A dead letter's event time, from the original message (the latest time when it has
    none: unparsable messages count as recent)."""
    try:
        return datetime.fromisoformat(msgspec.json.decode(letter.original)["occurred_at"])
    except (msgspec.DecodeError, KeyError, TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)


@dataclass
class OutputReport:
    """What a run put on the output topics, de-duplicated by id."""

    alert_ids: set[str]  # deterministic kinds (drift and retrain_needed are not: ordering.md)
    freeze_ids: set[str]
    decision_ids: set[str]
    dead_letters: set[tuple[str | None, str]]  # (event_id, reason)
    distinct: dict[str, set[bytes]]  # output id -> its distinct contents (emitted_at left out)
    wire: collections.Counter[str]  # messages on the wire per stream (deterministic outputs)
    duplicates: collections.Counter[str]  # copies beyond the first, per stream
    monitor_alerts: int  # drift + retrain_needed messages (not compared)
    double_freezes: dict[str, set[str]]
    unreadable: int

    @classmethod
    def of(cls, outputs: Outputs, since: datetime | None = None) -> OutputReport:
        """Summarise everything read back from the output topics (with ``since``, only the
        outputs of events that occurred at or after it)."""
        if since is not None:
            outputs = Outputs(
                alerts=[a for a in outputs.alerts if a.occurred_at >= since],
                freezes=[f for f in outputs.freezes if f.occurred_at >= since],
                decisions=[d for d in outputs.decisions if d.occurred_at >= since],
                dead_letters=[d for d in outputs.dead_letters if _occurred(d) >= since],
                unreadable=outputs.unreadable,
            )
        distinct: dict[str, set[bytes]] = collections.defaultdict(set)
        seen: set[tuple[str, bytes]] = set()
        wire: collections.Counter[str] = collections.Counter()
        dups: collections.Counter[str] = collections.Counter()
        alert_ids: set[str] = set()
        monitor = 0

        def take(stream: str, oid: str, output: Any) -> None:
            body = _content(output)
            wire[stream] += 1
            if (oid, body) in seen:
                dups[stream] += 1
            seen.add((oid, body))
            distinct[oid].add(body)

        for a in outputs.alerts:
            if a.kind in DETERMINISTIC_KINDS:
                alert_ids.add(a.alert_id)
                take("alerts", a.alert_id, a)
            else:
                monitor += 1
        for f in outputs.freezes:
            take("freezes", f.freeze_id, f)
        for d in outputs.decisions:
            take("decisions", d.decision_id, d)
        return cls(
            alert_ids=alert_ids,
            freeze_ids={f.freeze_id for f in outputs.freezes if f.action == "freeze"},
            decision_ids={d.decision_id for d in outputs.decisions},
            dead_letters={(d.event_id, d.reason) for d in outputs.dead_letters},
            distinct=dict(distinct),
            wire=wire,
            duplicates=dups,
            monitor_alerts=monitor,
            double_freezes=double_freezes(outputs.freezes),
            unreadable=outputs.unreadable,
        )

    def counts(self) -> str:
        """One line for logs and reports."""
        return (
            f"{len(self.alert_ids)} alert ids, {len(self.freeze_ids)} freeze ids, "
            f"{len(self.decision_ids)} decision ids, {len(self.dead_letters)} dead letters; "
            f"on the wire {dict(self.wire)}, duplicates {dict(self.duplicates)}, "
            f"{self.monitor_alerts} drift/retrain alerts"
        )


def _set_diff(what: str, expected: Iterable[Any], actual: Iterable[Any]) -> list[str]:
    e, a = set(expected), set(actual)
    out = []
    if e - a:
        out.append(f"{what}: {len(e - a)} of the clean run's missing, e.g. {sorted(e - a)[:3]}")
    if a - e:
        out.append(f"{what}: {len(a - e)} not in the clean run, e.g. {sorted(a - e)[:3]}")
    return out


def compare_outputs(clean: OutputReport, run: OutputReport, *, contents: bool = True) -> list[str]:
    """Problems with ``run``'s outputs against the clean run's (empty when none).

    Ids: alert (deterministic kinds), freeze and decision id sets equal; dead letters equal
    as (event_id, reason). With ``contents``, each id carries exactly the clean run's
    distinct messages (``emitted_at`` left out), so a redelivered copy is the same message:
    an id may legitimately carry several (a freeze id is per milestone, whatever triggered
    it; an entity alert such as ``milestone_risk`` is re-sent under its entity's id each
    time its rule starts to hold again), but then the clean run has the same ones. No
    milestone has two freeze ids; every message parses.
    """
    problems = _set_diff("alert ids", clean.alert_ids, run.alert_ids)
    problems += _set_diff("freeze ids", clean.freeze_ids, run.freeze_ids)
    problems += _set_diff("decision ids", clean.decision_ids, run.decision_ids)
    problems += _set_diff("dead letters", clean.dead_letters, run.dead_letters)
    if contents:
        changed = [
            oid
            for oid in set(clean.distinct) & set(run.distinct)
            if clean.distinct[oid] != run.distinct[oid]
        ]
        if changed:
            problems.append(
                f"{len(changed)} ids carry other contents than in the clean run, "
                f"e.g. {sorted(changed)[:3]}"
            )
    if run.double_freezes:
        problems.append(f"milestones with two freeze ids: {run.double_freezes}")
    if run.unreadable:
        problems.append(f"{run.unreadable} output messages do not parse")
    return problems


# --- worker runs ----------------------------------------------------------------------


def metric(worker: WorkerProcess, name: str) -> float:
    """Sum of a metric's samples on a worker's /metrics (0 when absent)."""
    total = 0.0
    for family in text_string_to_metric_families(worker.metrics()):
        for sample in family.samples:
            if sample.name == name:
                total += sample.value
    return total


class BackgroundReplay:
    """``replay_file`` in a thread, so faults can be injected while it produces."""

    def __init__(
        self,
        settings: Settings,
        history: HistoryFile,
        rate: float | None,
        *,
        time_from: datetime | None = None,
        time_until: datetime | None = None,
    ) -> None:
        self.summary: ReplaySummary | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self.finished: float | None = None

        def run() -> None:
            try:
                self.summary = replay_file(
                    settings,
                    history.path,
                    rate=rate,
                    time_from=time_from,
                    time_until=time_until,
                    progress=False,
                    rejects_path=history.path.with_suffix(f".{uuid.uuid4().hex[:6]}.rejects"),
                )
            except BaseException as exc:  # reported by join()
                self.error = exc
            finally:
                self.finished = time.monotonic()

        self._thread = threading.Thread(target=run, name="replay", daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout_s: float = 300.0) -> ReplaySummary:
        """Wait for the replay; its summary (the replay must have sent everything)."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"the replay did not finish within {timeout_s:.0f} s")
        if self.error is not None:
            raise self.error
        assert self.summary is not None and self.summary.ok, self.summary and self.summary.lines()
        return self.summary


@dataclass
class RunResult:
    """A finished run: its settings, outputs, state and figures."""

    settings: Settings
    outputs: OutputReport
    raw_outputs: Outputs
    state: dict[str, Any]
    position_problems: list[str]
    events: int
    catch_up_s: float  # replay start -> the group committed everything
    figures: dict[str, Any] = field(default_factory=dict)


def collect(settings: Settings, events: int, catch_up_s: float, **figures: Any) -> RunResult:
    """Read a caught-up run's outputs and state."""
    raw = read_outputs(settings)
    return RunResult(
        settings=settings,
        outputs=OutputReport.of(raw),
        raw_outputs=raw,
        state=state_dump(settings),
        position_problems=positions_at_end(settings),
        events=events,
        catch_up_s=catch_up_s,
        figures=dict(figures),
    )


def start_workers(
    settings: Settings,
    log_dir: Path,
    bundle: Path,
    names: Sequence[str] = ("worker",),
    extra_env: dict[str, str] | None = None,
) -> list[WorkerProcess]:
    """Start worker processes and wait until each serves HTTP."""
    workers = [
        WorkerProcess(settings, log_dir / f"{n}.log", bundle=bundle, name=n, extra_env=extra_env)
        for n in names
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.wait_serving()
    return workers


def clean_run(
    settings: Settings,
    history: HistoryFile,
    bundle: Path,
    log_dir: Path,
    *,
    workers: int = 1,
    rate: float | None = None,
    timeout_s: float = 600.0,
) -> RunResult:
    """Replay ``history`` into ``settings``' fresh namespace with ``workers`` workers and no
    fault; wait until the group committed everything; collect."""
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = start_workers(settings, log_dir, bundle, [f"worker{i}" for i in range(workers)])
    try:
        started = time.monotonic()
        replay = BackgroundReplay(settings, history, rate)
        summary = replay.join(timeout_s)
        wait_caught_up(settings, procs, timeout_s=timeout_s)
        catch_up = time.monotonic() - started
        redeliveries = sum(metric(w, "escrowguard_redeliveries_total") for w in procs)
    finally:
        for w in procs:
            w.stop()
    return collect(settings, summary.total_sent, catch_up, redeliveries=redeliveries)


def wait_for(
    condition: Callable[[], bool], what: str, timeout_s: float, poll_s: float = 0.2
) -> float:
    """Poll until ``condition()``; seconds waited; AssertionError on timeout."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started


def check_against_clean(
    clean: RunResult, run: RunResult, *, by_position: bool = True, contents: bool = True
) -> list[str]:
    """Everything a faulty (or differently laid out) run must share with the clean run."""
    problems = compare_outputs(clean.outputs, run.outputs, contents=contents)
    if by_position:
        problems += state_diff(clean.state, run.state)
    else:
        problems += state_diff(by_event_id(clean.state), by_event_id(run.state))
    problems += run.position_problems
    return problems
