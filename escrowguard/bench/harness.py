"""``escrowguard bench``: the scorer measured against bare Faust and a naive scorer, in one
run, side by side, on the same servers and the same events (docs/performance.md).

Phases, one after another, each with its own progress bar:

1. generate N events (``generate_history``, truncated to N) and train a bundle on a small
   history of the same seed (scale 1: the models are the worker's load, not the subject);
2. replay the N events at full speed into fresh topics (a prefix unique to the run),
   before any consumer starts, so the producer competes with nobody;
3. drain them with (a) a bare Faust agent that only decodes, (b) one escrowguard worker,
   (c) the naive scorer on an evenly spread sample (its own topics): each in a consumer
   group (and Redis namespace) of its own; rates exclude start-up and the group join
   (``status.rate_from_samples``);
4. offer load at 25/50/80% of (b)'s rate, ``load_seconds`` each, to a fresh worker on
   fresh topics, and measure produce-to-output latency (``latency``);
5. the worker's peak RSS (VmHWM) and Redis ``used_memory`` growth per active entity
   (distinct backers, projects and milestones among the N events), both from (b);
6. (b) again with two workers in one group on the same topics (four partitions each).

Everything started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from escrowguard.bench.latency import (
    LoadLevel,
    OutputReceipts,
    assign_latencies,
    event_ids,
    plan_levels,
    send_times_ms,
)
from escrowguard.bench.measure import (
    CpuMeter,
    StalledError,
    current_rss_mb,
    follow_child,
    follow_workers,
    peak_rss_mb,
    redis_used_memory,
    server_pids,
    start_child,
)
from escrowguard.bench.profile import Profiler, summarize
from escrowguard.bench.report import build_result, machine_info
from escrowguard.bench.status import rate_from_samples, samples_of
from escrowguard.demo import train_bundle
from escrowguard.errors import InfraError
from escrowguard.infra import create_topics
from escrowguard.infra.embedded import servers_for
from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history
from escrowguard.producers.replay import replay_file, replay_lines
from escrowguard.settings import Settings
from escrowguard.stream_app.supervisor import WorkerProcess, wait_caught_up
from escrowguard.topics import input_topics

#: Events per unit of generator scale (scale 17 gave 194,601 with seed 42).
EVENTS_PER_SCALE = 11_400


@dataclass(frozen=True)
class BenchOptions:
    """What to run (defaults: the issue's)."""

    events: int = 200_000
    out_dir: Path = Path("out/bench")
    json_path: Path | None = None
    seed: int = 42
    load_seconds: float = 30.0
    load_percents: tuple[int, ...] = (25, 50, 80)
    naive_events: int = 4_000
    naive_seconds: float = 60.0
    two_worker_seconds: float = 60.0
    consumption: str | None = None
    profile: bool = False
    progress: bool = True


class Phases:
    """Runs phases in order: a progress bar each, their duration and load average."""

    def __init__(self, console: Console, progress: bool) -> None:
        self.console = console
        self.enabled = progress
        self.seconds: dict[str, float] = {}
        self.load_avg: dict[str, tuple[float, ...]] = {"start": os.getloadavg()}

    @contextlib.contextmanager
    def run(self, name: str, total: float | None = None, bar: bool = True) -> Iterator[Bar]:
        """A phase: yields a ``Bar`` (a silent one without progress display)."""
        started = time.monotonic()
        if not (self.enabled and bar):
            yield Bar(None, None)
        else:
            with Progress(
                TextColumn(f"{name:<14}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[note]}"),
                TimeElapsedColumn(),
                console=self.console,
            ) as progress:
                yield Bar(progress, progress.add_task(name, total=total, note=""))
        self.seconds[name] = round(time.monotonic() - started, 2)
        self.load_avg[name] = os.getloadavg()


class Bar:
    """One phase's progress bar (no-op when progress display is off)."""

    def __init__(self, progress: Progress | None, task: Any) -> None:
        self.progress = progress
        self.task = task

    def update(self, completed: float, total: float | None = None, note: str = "") -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=completed, total=total, note=note)


def history_lines(seed: int, events: int) -> list[bytes]:
    """The first ``events`` events (wire format) of a generated history big enough."""
    scale = max(events / EVENTS_PER_SCALE * 1.05, 0.05)
    lines = generate_history(seed, scale).events
    while len(lines) < events:
        scale *= 1.1 * events / len(lines)
        lines = generate_history(seed, scale).events
    return list(lines[:events])


class _Ids(msgspec.Struct):
    backer_id: str | None = None
    project_id: str | None = None
    milestone_id: str | None = None


def active_entities(lines: list[bytes]) -> int:
    """Distinct backers, projects and milestones the events name."""
    decoder = msgspec.json.Decoder(_Ids)
    seen: set[tuple[str, str]] = set()
    for line in lines:
        ids = decoder.decode(line)
        for kind, value in (("b", ids.backer_id), ("p", ids.project_id), ("m", ids.milestone_id)):
            if value:
                seen.add((kind, value))
    return len(seen)


class Bench:
    """One run of the benchmark (``run_bench`` drives it)."""

    def __init__(self, settings: Settings, opts: BenchOptions, console: Console) -> None:
        self.settings = settings
        self.opts = opts
        self.console = console
        self.phases = Phases(console, opts.progress)
        self.run_dir = opts.out_dir / "run"
        self.details: dict[str, Any] = {"events": opts.events}
        self.bundle = Path()
        self.servers: dict[str, int | None] = {}  # embedded servers' pids, for CPU shares

    def meter(self, **consumers: int | None) -> CpuMeter:
        """A started CPU meter on the consumers and the embedded servers."""
        meter = CpuMeter({**consumers, **self.servers})
        meter.start()
        return meter

    def timeout_s(self, events: int, min_eps: float = 300.0) -> float:
        """A phase's deadline: generous, but a stall ends the run."""
        return 120.0 + events / min_eps

    # --- phases ---

    def prepare(self) -> tuple[Path, list[bytes]]:
        """Generate the events and train the bundle."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.phases.run("generate", total=2) as bar:
            lines = history_lines(self.opts.seed, self.opts.events)
            events_path = self.run_dir / "events.jsonl"
            events_path.write_bytes(b"\n".join(lines) + b"\n")
            bar.update(1, 2)
            train_dir = self.run_dir / "train-history"
            write_history(generate_history(self.opts.seed, 1.0), train_dir)
            bar.update(2, 2)
        with self.phases.run("train", total=1) as bar:
            self.bundle = train_bundle(
                train_dir, self.run_dir / "models", self.settings, echo=lambda _: None
            )
            bar.update(1, 1, note=self.bundle.name)
        self.details["bundle"] = self.bundle.name
        return events_path, lines

    def bare(self, s: Settings, attempts: int = 2) -> float:
        """(a) bare Faust: decode only. A Faust consumer that stalls (its consumer thread
        can lose the group on a loaded machine and not come back) is started again in a
        fresh group; the restarts are counted in the details."""
        n = self.opts.events
        status = self.run_dir / "bare.status.json"
        for attempt in range(1, attempts + 1):
            status.unlink(missing_ok=True)
            group = f"{s.redis.key_prefix}-bare-{attempt}"
            with self.phases.run("bare", total=n) as bar:
                child = start_child(
                    "bare-faust",
                    "escrowguard.bench.bare",
                    [str(status), str(n)],
                    s.replace(kafka={"consumer_group": group}),
                    self.run_dir / f"bare-{attempt}.log",
                )
                try:
                    _wait_for_file(status, child)  # Faust is up: CPU from here
                    cpu = self.meter(bare=child.pid)
                    last = follow_child(child, status, n, self.timeout_s(n), bar.update)
                    cpu_s = cpu.stop()
                    break
                except StalledError:
                    if attempt == attempts:
                        raise
                finally:
                    child.stop()
        rate = rate_from_samples(samples_of(last), n)
        self.details["bare"] = {
            "events": rate.events,
            "seconds": round(rate.seconds, 2),
            "restarts": attempt - 1,
            "cpu_s": cpu_s,
            "cpu_us_per_event": per_event_us(cpu_s, n),
        }
        return rate.eps

    def worker(self, s: Settings) -> tuple[float, float, float]:
        """(b) one worker: its rate, its peak RSS (MiB) and Redis growth (bytes)."""
        n = self.opts.events
        scoped = s.replace(
            kafka={"consumer_group": f"{s.redis.key_prefix}-scorer"},
            redis={"key_prefix": f"{s.redis.key_prefix}-b"},
        )
        redis_before = redis_used_memory(scoped)
        worker = WorkerProcess(scoped, self.run_dir / "worker.log", bundle=self.bundle)
        profiler = None
        with self.phases.run("worker", total=n) as bar:
            try:
                started = time.monotonic()
                worker.start()
                worker.wait_serving()
                serving_s = time.monotonic() - started
                rss_serving = current_rss_mb(worker.pid)
                cpu = self.meter(worker=worker.pid)
                if self.opts.profile:
                    profiler = Profiler(worker.pid or 0, self.opts.out_dir / "profile-worker.txt")
                samples = follow_workers([worker], n, self.timeout_s(n), bar.update)
                cpu_s = cpu.stop()
                if profiler is not None:
                    profiler.stop()
                wait_caught_up(scoped, [worker], timeout_s=60)
                rss = peak_rss_mb(worker.pid)
                redis_after = redis_used_memory(scoped)
            finally:
                if profiler is not None:
                    profiler.stop()
                worker.stop()
        rate = rate_from_samples(samples, n)
        self.details["worker"] = {
            "events": rate.events,
            "seconds": round(rate.seconds, 2),
            "start_to_serving_s": round(serving_s, 2),
            "rss_mb_when_serving": round(rss_serving, 1),
            "cpu_s": cpu_s,
            "cpu_us_per_event": per_event_us(cpu_s, n),
            "redis_used_memory_before": redis_before,
            "redis_used_memory_after": redis_after,
        }
        if profiler is not None:
            summary = summarize(profiler.out)
            report = self.opts.out_dir / "profile-worker-top.txt"
            report.write_text("\n".join(summary.lines(25)) + "\n")
            self.details["profile"] = str(report)
        return rate.eps, rss, float(redis_after - redis_before)

    def naive(self, s: Settings, sample: list[bytes]) -> float:
        """(c) the naive scorer on a sample of the events: every k-th one, so it has the
        same mix of event types as all N (a plain prefix would be mostly registrations:
        votes start weeks into the history), replayed to topics of its own first."""
        n = len(sample)
        status = self.run_dir / "naive.status.json"
        status.unlink(missing_ok=True)
        name = f"{s.redis.key_prefix}-naive"
        scoped = s.replace(
            topics={"prefix": f"{name}."},
            kafka={"consumer_group": name},
            redis={"key_prefix": name},
        )
        create_topics(scoped)
        replayed = replay_lines(scoped, sample)
        if not replayed.ok:
            raise InfraError("the naive sample's replay failed", "replay_failed")
        with self.phases.run("naive", total=n) as bar:
            child = start_child(
                "naive",
                "escrowguard.bench.naive",
                [str(status), str(self.bundle), str(n), str(self.opts.naive_seconds)],
                scoped,
                self.run_dir / "naive.log",
            )
            try:
                _wait_for_file(status, child)  # its first event: CPU from here
                cpu = self.meter(naive=child.pid)
                last = follow_child(
                    child,
                    status,
                    n + 1,  # it stops itself: at n events or after naive_seconds
                    self.opts.naive_seconds + 120,
                    bar.update,
                    finished=lambda st: bool(st.get("finished")),
                )
                cpu_s = cpu.stop()
            finally:
                child.stop()
        rate = rate_from_samples(samples_of(last), n)
        self.details["naive"] = {
            "events": rate.events,
            "seconds": round(rate.seconds, 2),
            "outputs_sent": last.get("outputs_sent"),
            "cpu_s": cpu_s,
            "cpu_us_per_event": per_event_us(cpu_s, samples_of(last)[-1][1]),
        }
        return rate.eps

    def two_workers(self, s: Settings) -> float:
        """(b) again, two workers in one group on the same topics; at most
        ``two_worker_seconds`` after their first event (they may not drain it all)."""
        n = self.opts.events
        scoped = s.replace(
            kafka={"consumer_group": f"{s.redis.key_prefix}-scorer-2w"},
            redis={"key_prefix": f"{s.redis.key_prefix}-2w"},
        )
        workers = [
            WorkerProcess(
                scoped, self.run_dir / f"worker-2w-{i}.log", bundle=self.bundle, name=f"2w-{i}"
            )
            for i in (1, 2)
        ]
        with self.phases.run("two workers", total=n) as bar:
            try:
                for w in workers:
                    w.start()
                for w in workers:
                    w.wait_serving()
                cpu = self.meter(worker1=workers[0].pid, worker2=workers[1].pid)
                samples = follow_workers(
                    workers, n, self.timeout_s(n), bar.update, window_s=self.opts.two_worker_seconds
                )
                cpu_s = cpu.stop()
            finally:
                for w in workers:
                    w.stop()
        rate = rate_from_samples(samples, n)
        self.details["two_workers"] = {
            "events": rate.events,
            "seconds": round(rate.seconds, 2),
            "cpu_s": cpu_s,
            "cpu_us_per_event": per_event_us(cpu_s, samples[-1][1]),
        }
        return rate.eps

    def latency(self, s: Settings, capacity_eps: float) -> dict[str, dict[str, float | None]]:
        """Offered load at each level against a fresh worker on fresh topics."""
        prefix = f"{s.redis.key_prefix}-lat"
        lat = s.replace(
            topics={"prefix": f"{prefix}."},
            redis={"key_prefix": prefix},
            kafka={"consumer_group": f"{prefix}-scorer"},
        )
        create_topics(lat)
        o = self.opts
        needed = sum(round(capacity_eps * p / 100 * o.load_seconds) for p in o.load_percents)
        lines = history_lines(o.seed + 1, max(needed, 1))
        levels = plan_levels(o.load_percents, capacity_eps, o.load_seconds, event_ids(lines))
        worker = WorkerProcess(
            lat, self.run_dir / "worker-latency.log", bundle=self.bundle, name="worker-latency"
        )
        reader = OutputReceipts(lat)
        partitions = len(input_topics(lat.topics)) * lat.topics.partitions
        try:
            with self.phases.run("latency start", bar=False):
                worker.start()
                worker.wait_serving()
                _wait_partitions(worker, partitions)
                reader.start()
                reader.wait_ready()
            start = 0
            for level in levels:
                n = len(level.event_ids)
                path = self.run_dir / f"load-{level.percent}.jsonl"
                path.write_bytes(b"\n".join(lines[start : start + n]) + b"\n")
                start += n
                with self.phases.run(f"load {level.percent}%", total=n) as bar:
                    began = time.monotonic()
                    self._send(lat, level, path, bar)
                    level.send_seconds = time.monotonic() - began
                    follow_workers([worker], start, 120 + 4 * o.load_seconds)
                    level.drain_seconds = time.monotonic() - began - level.send_seconds
            time.sleep(1.0)  # the last outputs' way to the reader
            receipts = reader.stop()
        finally:
            worker.stop()
            if reader.is_alive():
                reader.stop()
        with self.phases.run("latency read", bar=False):
            sent = send_times_ms(lat)
            counted = assign_latencies(levels, receipts, sent)
        self.details["latency"] = {
            "outputs_counted": counted,
            "levels": {
                str(lv.percent): {
                    "rate_eps": round(lv.rate_eps, 1),
                    "events": len(lv.event_ids),
                    "send_seconds": round(lv.send_seconds, 2),
                    "drain_seconds": round(lv.drain_seconds, 2),
                    "samples": len(lv.latencies_ms),
                    "max_ms": round(max(lv.latencies_ms), 1) if lv.latencies_ms else None,
                }
                for lv in levels
            },
        }
        return {str(lv.percent): lv.percentiles() for lv in levels}

    def _send(self, s: Settings, level: LoadLevel, path: Path, bar: Bar) -> None:
        """Replay one level's slice at its rate in a process of its own."""
        child = start_child(
            f"replay-{level.percent}",
            "escrowguard",
            ["replay", str(path), "--rate", f"{level.rate_eps:.3f}", "--no-progress"],
            s,
            self.run_dir / f"replay-{level.percent}.log",
        )
        n = len(level.event_ids)
        expected_s = n / level.rate_eps
        started = time.monotonic()
        try:
            while not child.exited():
                elapsed = time.monotonic() - started
                bar.update(
                    min(n, round(n * elapsed / expected_s)), n, note=f"{level.rate_eps:,.0f}/s"
                )
                if elapsed > expected_s + 120:
                    raise InfraError(f"replay at {level.percent}% did not finish")
                time.sleep(0.2)
            if child.proc is not None and child.proc.returncode != 0:
                raise InfraError(f"replay at {level.percent}% failed: {child.log_tail()}")
        finally:
            child.stop()


def per_event_us(cpu_s: dict[str, float], events: int) -> dict[str, float]:
    """CPU microseconds per event of each process, and of all of them (``total``).

    >>> per_event_us({"worker": 2.0, "redis": 1.0, "wall": 9.0}, 10_000)
    {'worker': 200.0, 'redis': 100.0, 'total': 300.0}
    """
    out = {k: round(1e6 * v / events, 1) for k, v in cpu_s.items() if k != "wall" and events}
    out["total"] = round(sum(out.values()), 1)
    return out


def _wait_for_file(path: Path, child: Any, timeout_s: float = 120.0) -> None:
    """Wait until a child wrote its first status (InfraError if it exits first)."""
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if child.exited() or time.monotonic() > deadline:
            raise InfraError(f"{child.name} wrote no status: {child.log_tail()}")
        time.sleep(0.05)


def _wait_partitions(worker: WorkerProcess, partitions: int, timeout_s: float = 60.0) -> None:
    """Wait until the worker owns every input partition (its group join is done)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, body = worker.get("/health")
        if int(json.loads(body).get("partitions", 0)) >= partitions:
            return
        time.sleep(0.2)
    raise InfraError(f"{worker.name} did not get its {partitions} partitions in {timeout_s:.0f} s")


def run_bench(settings: Settings, opts: BenchOptions, console: Console | None = None) -> dict:
    """Run every phase; returns the result (also written as JSON) and prints the table."""
    console = console or Console(stderr=True)
    bench = Bench(settings, opts, console)
    events_path, lines = bench.prepare()
    entities = active_entities(lines)
    k = min(opts.naive_events, len(lines))
    naive_sample = [lines[i * len(lines) // k] for i in range(k)]
    del lines
    prefix = f"bench-{int(time.time() * 1000)}"
    with servers_for(settings) as (ready, embedded):
        bench.servers = server_pids(embedded.pids()) if embedded is not None else {}
        base = ready.replace(
            topics={"prefix": f"{prefix}."},
            redis={"key_prefix": prefix},
            kafka={"consumer_group": f"{prefix}-scorer"},
            worker={"consumption": opts.consumption or ready.worker.consumption},
        )
        create_topics(base)
        with bench.phases.run("replay", bar=False):
            replayed = replay_file(base, events_path, progress=opts.progress)
        if not replayed.ok or replayed.total_sent != opts.events:
            raise InfraError("the replay failed: " + "; ".join(replayed.lines()), "replay_failed")
        bench.details["replay_eps"] = round(replayed.events_per_s, 1)
        bare_eps = bench.bare(base)
        scorer_eps, rss_mb, redis_growth = bench.worker(base)
        naive_eps = bench.naive(base, naive_sample)
        latency = bench.latency(base, scorer_eps)
        two_eps = bench.two_workers(base)
        servers = "embedded (Tansu + valkey)" if embedded is not None else "configured"
    bench.details.update(
        consumption=base.worker.consumption,
        load_seconds=opts.load_seconds,
        active_entities=entities,
        phase_seconds=bench.phases.seconds,
    )
    result = build_result(
        bare_eps=bare_eps,
        scorer_eps=scorer_eps,
        naive_eps=naive_eps,
        latency_ms=latency,
        worker_peak_rss_mb=rss_mb,
        redis_bytes_per_entity=redis_growth / entities if entities else 0.0,
        two_worker_eps=two_eps,
        machine=machine_info(servers, bench.phases.load_avg),
    )
    json_path = opts.json_path or opts.out_dir / "bench.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    details_path = json_path.with_name(json_path.stem + ".details.json")
    details_path.write_text(json.dumps(bench.details, indent=2) + "\n")
    return {"result": result, "details": bench.details, "json": json_path, "python": sys.version}
