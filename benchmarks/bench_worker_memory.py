"""Phase (b) of ``escrowguard bench`` alone, at any size: the worker's peak RSS and Redis
``used_memory`` growth per active entity (the issue's memory targets are set at 1M events,
where the whole bench would also run its naive, latency and two-worker phases).

    python benchmarks/bench_worker_memory.py --events 1000000   # ~8 min here

Generates the bench's history (seed 42), trains its small bundle, replays the events into
fresh topics on the embedded servers (or ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL``), then
one ``escrowguard worker`` drains them exactly as in the bench. ``ESCROWGUARD_*`` settings
reach the worker (e.g. ``ESCROWGUARD_WORKER__REORDER_BUFFER_MAX_EVENTS=100000``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from rich.console import Console

from escrowguard.bench.harness import Bench, BenchOptions, active_entities
from escrowguard.demo import demo_servers
from escrowguard.producers.replay import replay_file
from escrowguard.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("out/bench-memory"))
    args = parser.parse_args()
    settings = load_settings()
    bench = Bench(settings, BenchOptions(events=args.events, out_dir=args.out), Console())
    events_path, lines = bench.prepare()
    entities = active_entities(lines)
    del lines
    with demo_servers(settings, f"bench-{int(time.time() * 1000)}") as base:
        replayed = replay_file(base, events_path, progress=True)
        if not replayed.ok or replayed.total_sent != args.events:
            raise SystemExit("the replay failed: " + "; ".join(replayed.lines()))
        eps, rss_mb, redis_growth = bench.worker(base)
    print(f"events                  {args.events:,}")
    print(f"scorer_eps              {eps:,.0f}")
    print(f"worker_peak_rss_mb      {rss_mb:,.0f}")
    print(f"redis_bytes_per_entity  {redis_growth / entities:,.0f} ({entities:,} entities)")
    print(f"load average            {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
