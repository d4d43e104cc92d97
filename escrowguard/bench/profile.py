"""Sampling a worker with py-spy during the benchmark, and summing up where its time went.

``Profiler`` attaches ``py-spy record --nonblocking`` to a running pid (no pauses of the
target; samples of idle threads are dropped, so the profile is CPU time) and writes py-spy's
raw collapsed stacks; ``summarize`` turns them into the top frames by self and by
inclusive samples, and self samples by area (Faust, aiokafka, escrowguard modules, ...).
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from escrowguard.errors import InfraError

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
_AREAS = (
    ("escrowguard/", None),
    ("faust/", "faust"),
    ("mode/", "mode"),
    ("aiokafka/", "aiokafka"),
    ("kafka/", "kafka-python"),
    ("redis/", "redis-py"),
    ("numpy/", "numpy"),
    ("msgspec/", "msgspec"),
    ("river/", "river"),
    ("asyncio/", "asyncio"),
    ("uvloop/", "uvloop"),
)


def py_spy() -> Path:
    """The py-spy executable next to this interpreter, else on PATH."""
    here = Path(sys.executable).with_name("py-spy")
    found = here if here.exists() else shutil.which("py-spy")
    if not found:
        raise InfraError("py-spy is not installed (pip install py-spy)", "missing_tool")
    return Path(found)


class Profiler:
    """py-spy recording one pid until ``stop``."""

    def __init__(self, pid: int, out: Path, rate_hz: int = 100) -> None:
        self.out = out
        self._log = out.with_suffix(".log").open("wb")
        self._proc = subprocess.Popen(
            [
                str(py_spy()),
                "record",
                "--pid",
                str(pid),
                "--rate",
                str(rate_hz),
                "--nonblocking",
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> Path:
        """Stop sampling (SIGINT: py-spy writes what it has) and return the raw file."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(5)
        self._log.close()
        return self.out


def _parse(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    frames = []
    for frame in stack.split(";"):
        m = _FRAME.match(frame)
        frames.append((m["func"], m["file"]) if m else (frame, ""))
    return frames, int(count)


def area(file: str) -> str:
    """A frame's area: its escrowguard module, or the library it belongs to.

    >>> area("escrowguard/stream_app/store.py"), area("aiokafka/consumer/fetcher.py")
    ('escrowguard.stream_app.store', 'aiokafka')
    """
    for marker, name in _AREAS:
        at = file.find(marker)
        if at >= 0:
            if name is None:
                return file[at:].removesuffix(".py").replace("/", ".")
            return name
    return "other (stdlib, C)" if file else "native"


def _owner(frames: list[tuple[str, str]]) -> str:
    """The area of the innermost frame that is not the standard library (the code that
    asked for the work), else 'other (stdlib, C)'."""
    for _, file in reversed(frames):
        name = area(file)
        if not name.startswith(("other", "native")):
            return name
    return area(frames[-1][1]) if frames else "native"


@dataclass(frozen=True)
class ProfileSummary:
    """Samples in total, and the top entries by self / inclusive samples and by area."""

    samples: int
    top_self: list[tuple[str, int]]
    top_inclusive: list[tuple[str, int]]
    by_area: list[tuple[str, int]]

    def lines(self, n: int = 15) -> list[str]:
        """A plain-text report (percent of samples)."""
        out = [f"{self.samples:,} samples"]
        for title, rows in (
            ("self", self.top_self),
            ("inclusive (escrowguard functions)", self.top_inclusive),
            ("by area (innermost non-stdlib frame)", self.by_area),
        ):
            out.append(f"-- top {title} --")
            out += [f"{100 * c / self.samples:5.1f}%  {name}" for name, c in rows[:n]]
        return out


def summarize(raw: Path, top: int = 25) -> ProfileSummary:
    """Top frames of py-spy raw output (``func (file)``, line numbers merged)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _parse(line)
        total += count
        names = [f"{func} ({file})" for func, file in frames]
        own[names[-1]] += count
        areas[_owner(frames)] += count
        for name in {
            n for n, (_, file) in zip(names, frames, strict=True) if "escrowguard/" in file
        }:
            inclusive[name] += count
    return ProfileSummary(
        total, own.most_common(top), inclusive.most_common(top), areas.most_common(top)
    )
