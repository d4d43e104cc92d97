"""Synthetic history generation: wall time and events/s of ``escrowguard generate``.

Runs the real command in a subprocess (interpreter start, imports, generation, Parquet,
events.jsonl, labels.json: what a user waits for), then, in this process, the same work
phase by phase:

    python benchmarks/bench_generate.py                 # --scale 100, ~1.1M events
    python benchmarks/bench_generate.py --scale 10 --repeat 3

Prints figures only; the target (>= 1M events in under 60 s at scale 100 on 2 cores) is for
a reader to compare, not asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history


class PhaseTimer:
    """A ``Phases`` that records how long each phase took."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._name: str | None = None
        self._t = time.perf_counter()

    def start(self, name: str, total: int) -> None:
        """Close the running phase and start timing ``name``."""
        self.stop()
        self._name, self._t = name, time.perf_counter()

    def advance(self, steps: int = 1) -> None:
        """Steps are not timed."""

    def stop(self) -> None:
        """Close the running phase."""
        if self._name is not None:
            self.seconds[self._name] = time.perf_counter() - self._t
            self._name = None


def run_cli(out: Path, seed: int, scale: float) -> tuple[float, int]:
    """Wall seconds of the command, and the number of events it wrote."""
    command = [
        sys.executable,
        "-m",
        "escrowguard",
        "generate",
        "--out",
        str(out),
        "--seed",
        str(seed),
        "--scale",
        str(scale),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - started
    labels = json.loads((out / "labels.json").read_text())
    return elapsed, int(labels["counts"]["events"])


def main() -> None:
    """Parse options, time the command and the phases, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=1, help="Command runs (best is shown).")
    args = parser.parse_args()
    print(
        f"python {platform.python_version()}, {os.cpu_count()} cpus, "
        f"scale {args.scale:g}, seed {args.seed}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        runs = [run_cli(Path(tmp) / f"run{i}", args.seed, args.scale) for i in range(args.repeat)]
        best, events = min(runs)
        print(
            f"escrowguard generate: {best:7.2f} s  {events:,} events  "
            f"{events / best:,.0f} events/s  (best of {len(runs)})"
        )
        timer = PhaseTimer()
        started = time.perf_counter()
        history = generate_history(args.seed, args.scale, progress=timer)
        sizes = write_history(history, Path(tmp) / "phases", progress=timer)
        timer.stop()
        total = time.perf_counter() - started
    for name, seconds in timer.seconds.items():
        print(f"  {name:<20} {seconds:7.2f} s")
    print(
        f"  {'in-process total':<20} {total:7.2f} s  {len(history.events) / total:,.0f} "
        f"events/s  {sum(sizes.values()) / 1e6:,.0f} MB written"
    )


if __name__ == "__main__":
    main()
