"""Observing the processes under test: workers' progress from their metrics, children's
from their status files, peak memory from /proc, Redis memory from INFO."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

from escrowguard.bench.status import Sample, child_env, read_status, samples_of
from escrowguard.errors import InfraError
from escrowguard.infra import redis_client
from escrowguard.infra.processes import ChildProcess
from escrowguard.settings import Settings, settings_env
from escrowguard.stream_app.supervisor import WorkerProcess

POLL_S = 0.2
_DECIDED = "escrowguard_events_scored_total"
_NOT_NEW = ("escrowguard_redeliveries_total", "escrowguard_duplicates_total")

Progress = Callable[[int], None]


class StalledError(InfraError):
    """A consumer stopped making progress (e.g. Faust lost its group membership)."""


def metric_sum(text: str, name: str) -> float:
    """The sum of every series of one metric in Prometheus text.

    >>> metric_sum('a_total{x="1"} 2\\na_total{x="2"} 3\\nab_total 9\\n', "a_total")
    5.0
    """
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def decided(worker: WorkerProcess) -> int:
    """Events a worker decided for the first time (redeliveries and duplicates left out)."""
    text = worker.metrics()
    return int(metric_sum(text, _DECIDED) - sum(metric_sum(text, n) for n in _NOT_NEW))


def follow_workers(
    workers: Sequence[WorkerProcess],
    target: int,
    timeout_s: float,
    on_progress: Progress | None = None,
    window_s: float | None = None,
) -> list[Sample]:
    """Poll the workers' metrics until together they decided ``target`` events (or, with
    ``window_s``, until that long after their first event); the samples (monotonic time,
    events decided). InfraError if one dies or ``timeout_s`` runs out first."""
    samples: list[Sample] = []
    deadline = time.monotonic() + timeout_s
    first_s: float | None = None
    while True:
        for w in workers:
            if not w.alive():
                raise InfraError(f"{w.name} exited: {w.log_tail()}")
        done = sum(decided(w) for w in workers)
        now = time.monotonic()
        samples.append((now, done))
        if done and first_s is None:
            first_s = now
        if on_progress is not None:
            on_progress(done)
        if done >= target:
            return samples
        if window_s is not None and first_s is not None and now - first_s >= window_s:
            return samples
        if time.monotonic() > deadline:
            raise InfraError(
                f"workers decided {done:,} of {target:,} events in {timeout_s:.0f} s: "
                f"{workers[0].log_tail(5)}"
            )
        time.sleep(POLL_S)


def start_child(
    name: str, module: str, args: Sequence[str], settings: Settings, log_path: Path
) -> ChildProcess:
    """``python -m module args...`` with ``settings`` in its environment."""
    child = ChildProcess(
        name,
        [sys.executable, "-m", module, *args],
        log_path,
        env=child_env(settings_env(settings)),
    )
    child.start()
    return child


def follow_child(
    child: ChildProcess,
    status_path: Path,
    target: int,
    timeout_s: float,
    on_progress: Progress | None = None,
    finished: Callable[[dict[str, object]], bool] = lambda _: False,
    stall_s: float = 60.0,
) -> dict[str, object]:
    """Poll a child's status file until it reports ``target`` events (or ``finished``
    says so); its last status. ``StalledError`` when it made no progress for ``stall_s`` after
    its first event, InfraError when it dies first or time runs out."""
    deadline = time.monotonic() + timeout_s
    last_change = (time.monotonic(), 0)
    while True:
        status = read_status(status_path)
        samples = samples_of(status)
        done = samples[-1][1] if samples else 0
        now = time.monotonic()
        if on_progress is not None:
            on_progress(done)
        if done >= target or finished(status):
            return status
        if child.exited():
            raise InfraError(f"{child.name} exited: {child.log_tail()}")
        if done != last_change[1]:
            last_change = (now, done)
        elif done and now - last_change[0] > stall_s:
            raise StalledError(
                f"{child.name} stalled at {done:,} of {target:,}: {child.log_tail(3)}"
            )
        if now > deadline:
            raise InfraError(f"{child.name} did {done:,} of {target:,} in {timeout_s:.0f} s")
        time.sleep(POLL_S)


def peak_rss_mb(pid: int | None) -> float:
    """VmHWM (peak resident set) of a live process, in MiB."""
    if pid is None:
        raise InfraError("no process to measure")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise InfraError(f"/proc/{pid}/status has no VmHWM")


def current_rss_mb(pid: int | None) -> float:
    """Resident set size of a live process now, in MiB."""
    return float(psutil.Process(pid).memory_info().rss) / 2**20 if pid else 0.0


def redis_used_memory(settings: Settings) -> int:
    """Redis ``used_memory`` in bytes."""
    client = redis_client(settings.redis)
    try:
        return int(client.info("memory")["used_memory"])
    finally:
        client.close()


class CpuMeter:
    """CPU seconds (user + system) that named processes spent between ``start`` and
    ``stop``: where a phase's cores went (consumer, broker, Redis)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self._start: dict[str, float] = {}
        self._started_s = 0.0

    def _now(self) -> dict[str, float]:
        out = {}
        for name, proc in self.procs.items():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            out[name] = times.user + times.system
        return out

    def start(self) -> None:
        self._start = self._now()
        self._started_s = time.monotonic()

    def stop(self) -> dict[str, float]:
        """CPU seconds per process since ``start``, and ``wall`` seconds."""
        now = self._now()
        out = {name: round(now[name] - t0, 2) for name, t0 in self._start.items() if name in now}
        out["wall"] = round(time.monotonic() - self._started_s, 2)
        return out


def server_pids(pids: Sequence[int]) -> dict[str, int | None]:
    """Embedded server pids by role (``broker``, ``redis``), from their process names."""
    out: dict[str, int | None] = {}
    for pid in pids:
        try:
            name = psutil.Process(pid).name()
        except psutil.Error:
            continue
        out["redis" if "valkey" in name or "redis" in name else "broker"] = pid
    return out
