"""How a benchmarked consumer reports progress, and how a rate is read from the reports.

Every consumer (bare Faust, the worker, the naive scorer) is observed the same way: a series
of samples ``(monotonic_s, events done)``; the rate is the count between the first sample
that saw any event and the first that saw all of them, over the time between the two. So
start-up and the group join are not counted (they are one-off costs, reported apart), and no
clock is compared across processes (CLOCK_MONOTONIC is system-wide on Linux anyway).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Sample = tuple[float, int]


@dataclass(frozen=True)
class Rate:
    """Events per second over a measured window."""

    events: int
    seconds: float

    @property
    def eps(self) -> float:
        """Events per second (0 when nothing was measured)."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def rate_from_samples(samples: Sequence[Sample], target: int) -> Rate:
    """The rate between the first sample with events and the first with ``target`` of them
    (or the last sample, when the target was never reached).

    >>> rate_from_samples([(0.0, 0), (1.0, 100), (3.0, 500), (4.0, 500)], 500).eps
    200.0
    """
    started = next((s for s in samples if s[1] > 0), None)
    if started is None:
        return Rate(0, 0.0)
    ended = next((s for s in samples if s[1] >= target), samples[-1])
    return Rate(ended[1] - started[1], ended[0] - started[0])


class StatusFile:
    """Samples of a child's progress, rewritten atomically as JSON for the parent to poll."""

    def __init__(self, path: Path, expected: int, every_s: float = 0.2) -> None:
        self.path = path
        self.expected = expected
        self.every_s = every_s
        self.done = 0
        self.extra: dict[str, object] = {}
        self.samples: list[Sample] = []
        self._last_write_s = 0.0

    def add(self, count: int) -> None:
        """Count ``count`` more events; write if due (and at once when all are done)."""
        self.done += count
        now = time.monotonic()
        if self.done >= self.expected or now - self._last_write_s >= self.every_s:
            self.write(now)

    def write(self, now: float | None = None) -> None:
        """Append a sample and replace the file."""
        now = time.monotonic() if now is None else now
        self._last_write_s = now
        self.samples.append((now, self.done))
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps({"samples": self.samples, **self.extra}))
        os.replace(tmp, self.path)


def read_status(path: Path) -> dict[str, object]:
    """The last status a child wrote ({} before the first)."""
    try:
        data: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data


def samples_of(status: dict[str, object]) -> list[Sample]:
    """The samples of a status as tuples."""
    raw = status.get("samples", [])
    assert isinstance(raw, list)
    return [(float(t), int(n)) for t, n in raw]


def child_env(settings_env: dict[str, str]) -> dict[str, str]:
    """A child's environment: ours without ESCROWGUARD_* / server variables, plus
    ``settings_env`` (the settings the child must load)."""
    keep = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("ESCROWGUARD_") and k not in ("KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL")
    }
    return {**keep, **settings_env}
