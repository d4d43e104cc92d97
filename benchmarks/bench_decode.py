"""Wire-contract throughput: events/s of ``events.decode`` (parse + validate) on one core.

The input is the generator's own wire events (``generate_history``: the realistic mix of
small events, in stream order), held in memory as bytes, so only decoding is timed: no I/O,
no Kafka. Decoding runs in one thread, so on one core at a time (``--pin`` also keeps it on
one CPU). Each figure is the best of ``--repeat`` passes, twice: by wall time, and by this
thread's CPU time, which other processes on a busy machine do not inflate:

    python benchmarks/bench_decode.py                  # scale 5 (~58k events), 5 passes
    python benchmarks/bench_decode.py --scale 20 --repeat 3 --unknown-fields ignore
    python benchmarks/bench_decode.py --events OUT/events.jsonl   # a written history

Prints figures only; the target (>= 200k small events/s decoded and validated on one
core) is for a reader to compare, not asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import msgspec

from escrowguard.events import DEFAULT_MAX_MESSAGE_BYTES, decode
from escrowguard.producers.generator import generate_history

TARGET_PER_S = 200_000


class Rate(NamedTuple):
    """Events per second of wall time and of this thread's CPU time (best passes)."""

    wall: float
    cpu: float


def pin_to_one_cpu() -> str:
    """Pin this process to one CPU where the OS supports it; say which."""
    if not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return f"pinned to cpu {cpu}"


def best_rate(messages: list[bytes], run: Callable[[bytes], object], repeat: int) -> Rate:
    """Best events/s of ``repeat`` passes of ``run`` over ``messages``."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        wall_0, cpu_0 = time.perf_counter(), time.thread_time()
        for message in messages:
            run(message)
        cpu = min(cpu, time.thread_time() - cpu_0)
        wall = min(wall, time.perf_counter() - wall_0)
    return Rate(len(messages) / wall, len(messages) / cpu)


def by_type(messages: list[bytes]) -> dict[str, list[bytes]]:
    """The messages grouped by event_type, in stream order within each type."""
    groups: dict[str, list[bytes]] = defaultdict(list)
    for message in messages:
        groups[msgspec.json.decode(message)["event_type"]].append(message)
    return dict(sorted(groups.items()))


def main() -> None:
    """Parse options, generate the events, time decoding per type and for the mix."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=5.0, help="Generator scale.")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=5, help="Passes (best is shown).")
    parser.add_argument("--unknown-fields", choices=("reject", "ignore"), default="reject")
    parser.add_argument(
        "--events", type=Path, help="Decode this events.jsonl instead of generating events."
    )
    parser.add_argument("--pin", action="store_true", help="Pin the process to one CPU.")
    args = parser.parse_args()
    pinned = pin_to_one_cpu() if args.pin else "not pinned"
    if args.events:
        messages = args.events.read_bytes().splitlines()
        source = f"{args.events}"
    else:
        messages = generate_history(args.seed, args.scale).events
        source = f"generated: scale {args.scale:g}, seed {args.seed}"
    mean_bytes = sum(map(len, messages)) / len(messages)
    print(
        f"python {platform.python_version()}, msgspec {msgspec.__version__}, {pinned}, "
        f"{source}, unknown_fields={args.unknown_fields}, best of {args.repeat}"
    )
    print(f"{len(messages):,} events, mean {mean_bytes:.0f} bytes")
    print(f"  {'event_type':<20} {'events':>9}  {'wall events/s':>14}  {'cpu events/s':>14}")

    def run(message: bytes) -> object:
        return decode(
            message, max_bytes=DEFAULT_MAX_MESSAGE_BYTES, unknown_fields=args.unknown_fields
        )

    for event_type, group in by_type(messages).items():
        rate = best_rate(group, run, args.repeat)
        print(f"  {event_type:<20} {len(group):>9,}  {rate.wall:>14,.0f}  {rate.cpu:>14,.0f}")
    mix = best_rate(messages, run, args.repeat)
    print(
        f"  {'mix (stream order)':<20} {len(messages):>9,}  {mix.wall:>14,.0f}  {mix.cpu:>14,.0f}"
    )
    print(f"target: >= {TARGET_PER_S:,} events/s on one core")


if __name__ == "__main__":
    main()
