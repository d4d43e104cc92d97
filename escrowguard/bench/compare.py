"""A/B of worker code, side by side: phase (b) of the bench with each variant in turn.

Each variant is a source tree (a directory holding ``escrowguard/`` and ``config/``, e.g.
``git archive <commit> escrowguard config | tar -x -C DIR``); its workers run with
``PYTHONPATH=DIR`` and ``PYTHONSAFEPATH=1`` (else ``python -m`` puts the caller's directory
first, and run from a checkout every variant would be that checkout). One set of events is
generated and replayed once; then for each round, each variant's worker drains all of it in a
consumer group and Redis namespace of its own, variants alternating so that the machine's
load drifts over all of them alike. Prints one
JSON line per drain (events/s, CPU seconds of worker, Redis and broker, worker CPU us per
event, peak RSS, load average) and a summary per variant.

    python -m escrowguard.bench.compare 100000 3 base=/tmp/base new=/tmp/new

Settings come from the environment as usual (``ESCROWGUARD_WORKER__CONSUMPTION=agent``...).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console

from escrowguard.bench.harness import Bench, BenchOptions
from escrowguard.bench.measure import CpuMeter, follow_workers, peak_rss_mb, server_pids
from escrowguard.bench.status import rate_from_samples
from escrowguard.infra import create_topics
from escrowguard.infra.embedded import servers_for
from escrowguard.logs import configure_logging
from escrowguard.producers.replay import replay_file
from escrowguard.settings import load_settings
from escrowguard.stream_app.supervisor import WorkerProcess


def compare(events: int, rounds: int, variants: list[tuple[str, str]], out: Path) -> list[dict]:
    """Drain ``events`` with each variant's worker, ``rounds`` times; one dict per drain."""
    settings = load_settings()
    configure_logging("WARNING")
    bench = Bench(settings, BenchOptions(events=events, out_dir=out, progress=False), Console())
    events_path, _ = bench.prepare()
    prefix = f"compare-{int(time.time() * 1000)}"
    rows: list[dict] = []
    with servers_for(settings) as (ready, embedded):
        servers = server_pids(embedded.pids()) if embedded is not None else {}
        base = ready.replace(topics={"prefix": f"{prefix}."}, redis={"key_prefix": prefix})
        create_topics(base)
        if not replay_file(base, events_path, progress=False).ok:
            raise SystemExit("the replay failed")
        for r in range(rounds):
            for name, tree in variants:
                tag = f"{prefix}-{name}-{r}"
                scoped = base.replace(kafka={"consumer_group": tag}, redis={"key_prefix": tag})
                worker = WorkerProcess(
                    scoped,
                    out / f"{tag}.log",
                    bundle=bench.bundle,
                    # PYTHONSAFEPATH: `python -m` would put the caller's directory first on
                    # sys.path, and from a checkout every variant would run that checkout
                    extra_env={"PYTHONPATH": tree, "PYTHONSAFEPATH": "1"} if tree else {},
                    name=tag,
                )
                try:
                    worker.start()
                    worker.wait_serving()
                    cpu = CpuMeter({"worker": worker.pid, **servers})
                    cpu.start()
                    load = os.getloadavg()[0]
                    samples = follow_workers([worker], events, 120 + events / 300)
                    cpu_s = cpu.stop()
                    rss = peak_rss_mb(worker.pid)
                finally:
                    worker.stop()
                rate = rate_from_samples(samples, events)
                row = {
                    "variant": name,
                    "round": r,
                    "eps": round(rate.eps),
                    "cpu_s": cpu_s,
                    "worker_us_per_event": round(1e6 * cpu_s.get("worker", 0.0) / events, 1),
                    "redis_us_per_event": round(1e6 * cpu_s.get("redis", 0.0) / events, 1),
                    "peak_rss_mb": round(rss),
                    "load_1m": round(load, 2),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main(argv: list[str]) -> None:
    """``EVENTS ROUNDS name=tree [name=tree ...]`` (an empty tree: the installed code)."""
    events, rounds = int(argv[0]), int(argv[1])
    variants = [(a.split("=", 1)[0], a.split("=", 1)[1]) for a in argv[2:]]
    rows = compare(events, rounds, variants, Path("out/bench-compare"))
    for name, _ in variants:
        mine = [x for x in rows if x["variant"] == name]
        print(
            f"{name:<12} worker us/event {[x['worker_us_per_event'] for x in mine]}  "
            f"redis us/event {[x['redis_us_per_event'] for x in mine]}  "
            f"events/s {[x['eps'] for x in mine]}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
