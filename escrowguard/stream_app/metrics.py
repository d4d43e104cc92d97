"""The worker's metrics, rendered in the Prometheus text exposition format (version 0.0.4).

A handful of counters, gauges and histograms in plain dicts: cheap to update on the hot
path (once per batch, never per event) and trivially exported by ``GET /metrics``.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Final

LATENCY_BUCKETS_S: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS: Final = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000)

_HELP: Final = {
    "escrowguard_events_in_total": ("counter", "Input messages consumed, by topic."),
    "escrowguard_events_scored_total": ("counter", "Events decided, by event type."),
    "escrowguard_dead_letters_total": ("counter", "Messages dead-lettered, by reason."),
    "escrowguard_duplicates_total": ("counter", "Duplicate event ids dropped."),
    "escrowguard_stale_messages_total": (
        "counter",
        "Fetched messages ignored: partition not owned (yet) or already taken.",
    ),
    "escrowguard_redeliveries_total": ("counter", "Already-applied events redelivered."),
    "escrowguard_alerts_total": ("counter", "Alerts emitted, by kind."),
    "escrowguard_freezes_total": ("counter", "Payout freezes emitted."),
    "escrowguard_decisions_total": ("counter", "Milestone decisions emitted, by route."),
    "escrowguard_batch_size": ("histogram", "Events per decided batch."),
    "escrowguard_batch_seconds": ("histogram", "Wall time to decide, store and emit a batch."),
    "escrowguard_consumer_lag": ("gauge", "Messages behind the high watermark, by partition."),
    "escrowguard_reorder_buffer_events": ("gauge", "Events waiting for the event-time frontier."),
    "escrowguard_frontier_lag_seconds": ("gauge", "Newest event time seen minus the frontier."),
    "escrowguard_drift_detected": ("gauge", "1 when a drift detector fired, by monitor."),
    "escrowguard_drift_shift": ("gauge", "Relative shift of a feature mean vs training."),
    "escrowguard_online_accuracy": ("gauge", "Rolling accuracy of milestone-risk predictions."),
    "escrowguard_online_auc": ("gauge", "Rolling ROC AUC of milestone-risk predictions."),
    "escrowguard_labels_total": ("counter", "Milestone outcomes received since the bundle."),
    "escrowguard_model_info": ("gauge", "The model bundle version serving (label)."),
    "escrowguard_store_errors_total": ("counter", "Redis calls that failed and were retried."),
    "escrowguard_publish_errors_total": ("counter", "Kafka sends that failed and were retried."),
    "escrowguard_batch_failures_total": ("counter", "Batches that raised unexpectedly, retried."),
    "escrowguard_redis_state_lost": (
        "gauge",
        "1 while Redis has lost the state and nothing is decided (run rebuild-state), else 0.",
    ),
}


class Histogram:
    """Cumulative-bucket histogram."""

    def __init__(self, buckets: Iterable[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Record one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1


Labels = tuple[tuple[str, str], ...]


class Metrics:
    """All worker metrics; ``render()`` gives the Prometheus text."""

    def __init__(self) -> None:
        self.values: dict[str, dict[Labels, float]] = defaultdict(dict)
        self.histograms: dict[str, Histogram] = {
            "escrowguard_batch_size": Histogram(BATCH_BUCKETS),
            "escrowguard_batch_seconds": Histogram(LATENCY_BUCKETS_S),
        }

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter."""
        key = tuple(sorted(labels.items()))
        series = self.values[name]
        series[key] = series.get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        """Set a gauge."""
        self.values[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, value: float) -> None:
        """Observe a histogram value."""
        self.histograms[name].observe(value)

    def get(self, name: str, **labels: str) -> float:
        """Current value of a series (0 if absent)."""
        return self.values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """Prometheus text exposition of every metric."""
        lines: list[str] = []
        for name, (kind, text) in _HELP.items():
            if name in self.histograms:
                lines += [f"# HELP {name} {text}", f"# TYPE {name} histogram"]
                h = self.histograms[name]
                running = 0
                for bound, count in zip((*h.bounds, math.inf), h.counts, strict=True):
                    running += count
                    le = "+Inf" if bound == math.inf else _num(bound)
                    lines.append(f'{name}_bucket{{le="{le}"}} {running}')
                lines += [f"{name}_sum {_num(h.sum)}", f"{name}_count {h.count}"]
                continue
            series = self.values.get(name)
            if not series and kind != "counter":
                continue
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            for labels, value in sorted((series or {(): 0.0}).items()):
                lines.append(f"{name}{_labels(labels)} {_num(value)}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels | Mapping[str, str]) -> str:
    items = labels.items() if isinstance(labels, Mapping) else labels
    if not items:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in items)
    return "{" + body + "}"


def _escape(value: str) -> str:
    """Label value escaping of the text format: backslash, double quote, newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))
