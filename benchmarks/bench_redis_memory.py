"""Redis memory per backer: the feature state of N backers, written by the real pipeline.

Every backer registers and pledges once (to one of 200 projects, one source wallet each);
the events go through the worker's own code (decode -> reorder buffer -> BatchProcessor ->
RedisStore's Lua scripts) into an embedded valkey, with no Kafka (outputs are dropped).
Prints Redis ``used_memory`` growth per backer (state + de-duplication entries), and what
N = 1M backers takes:

    python benchmarks/bench_redis_memory.py --backers 100000
    python benchmarks/bench_redis_memory.py --backers 1000000   # ~5-10 min on 2 cores

A model bundle is needed for scoring: ``--bundle DIR`` (default: the demo's promoted one,
``out/demo/registry``; run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import time
import zlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import redis

from escrowguard.events import (
    AnyEvent,
    BackerRegistered,
    PledgeCreated,
    ProjectCreated,
    encode,
)
from escrowguard.infra.embedded import EmbeddedServers
from escrowguard.models.bundle import current_bundle_path
from escrowguard.models.features import FeatureWindows
from escrowguard.models.serving import ServingModels, load_serving_models
from escrowguard.settings import load_settings
from escrowguard.stream_app.pipeline import BatchProcessor
from escrowguard.stream_app.store import RedisStore
from escrowguard.stream_app.worker import RawMessage, ScoringWorker
from escrowguard.topics import topic_for_event

PROJECTS = 200
PARTITIONS = 4
CHUNK = 20_000  # backers per drain
T0 = datetime(2025, 1, 1, tzinfo=UTC)


class _Drop:
    async def send_all(self, outputs: object) -> None:
        """Outputs are not what is measured."""


def _projects() -> list[ProjectCreated]:
    return [
        ProjectCreated(
            event_id=f"pc{p}",
            schema_version=1,
            occurred_at=T0,
            project_id=f"p{p}",
            creator_id=f"c{p}",
            creator_wallet=f"cw{p}",
            creator_reputation=7.0,
            funding_goal=Decimal("100000.00"),
            deadline=T0 + timedelta(days=400),
        )
        for p in range(PROJECTS)
    ]


def _backer_events(start: int, stop: int) -> list[AnyEvent]:
    out: list[AnyEvent] = []
    for b in range(start, stop):
        at = T0 + timedelta(seconds=60 + b * 10)
        out.append(
            BackerRegistered(
                event_id=f"br{b}",
                schema_version=1,
                occurred_at=at,
                backer_id=f"b{b}",
                wallet=f"w{b}",
            )
        )
        out.append(
            PledgeCreated(
                event_id=f"pl{b}",
                schema_version=1,
                occurred_at=at + timedelta(seconds=5),
                project_id=f"p{b % PROJECTS}",
                pledge_id=f"pl{b}",
                backer_id=f"b{b}",
                amount=Decimal(f"{25 + b % 400}.00"),
                source_wallet=f"w{b}",
                voting_power=1.0,
            )
        )
    return out


async def _run(backers: int, bundle: Path) -> None:
    with EmbeddedServers(kafka=False) as servers:
        settings = load_settings(env={}).replace(
            redis={"url": servers.redis_url, "password": servers.redis_password},
            topics={"prefix": "mem.", "partitions": PARTITIONS},
            worker={"idle_partition_ms": 0},
        )
        client = redis.Redis.from_url(servers.redis_url, password=servers.redis_password or None)
        windows = FeatureWindows.from_settings(
            settings.features, settings.thresholds.approval_target
        )
        models: ServingModels = load_serving_models(settings, bundle)
        store = RedisStore(settings, windows)
        worker = ScoringWorker(
            settings,
            store,
            BatchProcessor(models, windows, settings.thresholds, settings.bandit),
            _Drop(),
        )
        offsets: dict[tuple[str, int], int] = {}
        tps = [
            (topic_for_event(t, settings.topics), p)
            for t in (BackerRegistered, ProjectCreated, PledgeCreated)
            for p in range(PARTITIONS)
        ]
        await store.register_partitions(f"{t}:{p}" for t, p in tps)
        worker.assign(dict.fromkeys(tps, 0), 0.0)
        baseline = int(client.info("memory")["used_memory"])
        started = time.perf_counter()
        decided = 0

        async def feed(events: list[AnyEvent]) -> int:
            raws = []
            for event in events:
                tp = (
                    topic_for_event(event, settings.topics),
                    zlib.crc32(event.key.encode()) % PARTITIONS,
                )
                offset = offsets.get(tp, 0)
                offsets[tp] = offset + 1
                raws.append(RawMessage(tp[0], tp[1], offset, encode(event)))
            for tp in tps:
                worker.buffer.note_fetch(tp, offsets.get(tp, 0), 0.0)
            worker.ingest(raws, 0.0, datetime.now(UTC))
            return await worker.drain(time.monotonic() + 3600, datetime.now(UTC))

        decided += await feed(list(_projects()))
        for start in range(0, backers, CHUNK):
            decided += await feed(_backer_events(start, min(backers, start + CHUNK)))
            used = int(client.info("memory")["used_memory"]) - baseline
            done = min(backers, start + CHUNK)
            rate = decided / (time.perf_counter() - started)
            print(
                f"\r{done:>9,} backers  {used / 2**20:8.1f} MiB  {used / done:6.0f} B/backer  "
                f"{rate:,.0f} events/s",
                end="",
                flush=True,
            )
        used = int(client.info("memory")["used_memory"]) - baseline
        keys = int(client.dbsize())
        await store.close()
        client.close()
    print()
    print(f"backers            {backers:,}")
    print(f"events decided     {decided:,} in {time.perf_counter() - started:.0f} s")
    print(f"redis keys         {keys:,}")
    print(f"used_memory growth {used / 2**20:,.1f} MiB = {used / backers:,.0f} bytes per backer")
    print(f"1M backers         {used / backers * 1e6 / 2**20:,.0f} MiB at this rate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backers", type=int, default=100_000)
    parser.add_argument("--bundle", type=Path, default=None)
    args = parser.parse_args()
    bundle = args.bundle or current_bundle_path(Path("out/demo/registry"))
    asyncio.run(_run(args.backers, bundle))


if __name__ == "__main__":
    main()
