"""``escrowguard replay`` against the real broker: what a backtest operator relies on.

A small generated history (seed 5, scale 0.2: ~2k events) is written to a temporary
directory, replayed through the CLI (click's CliRunner) or the Python API, and read back
from the beginning of every input topic with a plain group-less kafka-python consumer.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kafka import KafkaConsumer, TopicPartition
from kafka.partitioner.default import murmur2

from escrowguard.cli import main
from escrowguard.events import decode
from escrowguard.infra import EmbeddedServers, create_topics, existing_topics, settings_for
from escrowguard.kafka_config import client_options
from escrowguard.producers.export import History
from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history
from escrowguard.producers.replay import default_rejects_path, replay_file, replay_lines
from escrowguard.producers.replay_plan import format_us
from escrowguard.settings import Settings
from escrowguard.topics import input_topics, topic_for_event

pytestmark = pytest.mark.integration

#: Invalid lines injected into the history: (line content, expected reason).
INVALID = [
    (b"this is not json", "not_json"),
    (b'{"event_type":"refund_issued","event_id":"x1","schema_version":1}', "unknown_event_type"),
    (
        b'{"event_type":"backer_registered","event_id":"bad-ts","schema_version":1,'
        b'"occurred_at":"2025-02-01T00:00:00","backer_id":"b9","wallet":"w9"}',
        "timestamp_without_timezone",
    ),
    (
        b'{"event_type":"backer_registered","event_id":"no-wallet","schema_version":1,'
        b'"occurred_at":"2025-02-01T00:00:00Z","backer_id":"b9"}',
        "missing_field",
    ),
]


@pytest.fixture(scope="module")
def history() -> History:
    """The replayed history (module-scoped: generated once)."""
    return generate_history(5, 0.2)


@pytest.fixture
def history_dir(history: History, tmp_path: Path) -> Path:
    """The history written as `escrowguard generate` writes it."""
    out = tmp_path / "history"
    write_history(history, out)
    return out


def cli_env(settings: Settings) -> dict[str, str]:
    """Environment pointing the CLI at the test's broker and topic namespace."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "ESCROWGUARD_TOPICS__PREFIX": settings.topics.prefix,
    }


def run_cli(settings: Settings, *args: str) -> Result:
    """Invoke ``escrowguard ARGS`` in-process."""
    return CliRunner().invoke(main, list(args), env=cli_env(settings), catch_exceptions=False)


def read_topics(settings: Settings, topics: list[str], timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topics`` from the beginning up to the high watermark of fetches,
    with a consumer that joins no group."""
    consumer = KafkaConsumer(**client_options(settings.kafka, "test"), enable_auto_commit=False)
    try:
        tps = [
            TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t))
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
            highs = {tp: consumer.highwater(tp) for tp in tps}
            if all(h is not None and consumer.position(tp) >= h for tp, h in highs.items()):
                return records
            assert time.monotonic() < deadline, f"did not reach the end of {topics}"
    finally:
        consumer.close()


def assert_delivered(settings: Settings, records: list[Any], expected: list[bytes]) -> None:
    """Every expected line arrived exactly once, on its topic, keyed right (and on the
    partition any Kafka client picks for that key), and each partition is in occurred_at
    order."""
    assert Counter(r.value for r in records) == Counter(expected)
    partitions = settings.topics.partitions
    by_partition: dict[tuple[str, int], list[int]] = defaultdict(list)
    for r in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        event = decode(r.value)
        assert r.topic == topic_for_event(event, settings.topics)
        assert r.key == event.key.encode()
        assert r.partition == (murmur2(r.key) & 0x7FFFFFFF) % partitions
        by_partition[(r.topic, r.partition)].append(event.occurred_us)
    for times in by_partition.values():
        assert times == sorted(times)


def with_invalid_lines(history: History, path: Path, seed: int = 1) -> list[int]:
    """Write the history's events with the INVALID lines inserted at random places and a
    blank line; return the 1-based line numbers of the invalid lines."""
    lines = list(history.events)
    rng = random.Random(seed)
    positions = sorted(rng.sample(range(1, len(lines)), len(INVALID)))
    for offset, (pos, (bad, _)) in enumerate(zip(positions, INVALID, strict=True)):
        lines.insert(pos + offset, bad)
    lines.insert(len(lines) // 2, b"")
    path.write_bytes(b"\n".join(lines) + b"\n")
    return [i + 1 for i, line in enumerate(lines) if line in {bad for bad, _ in INVALID}]


def test_every_valid_line_arrives_once_in_order_and_invalid_ones_only_in_rejects(
    topic_namespace: Settings, history: History, history_dir: Path
) -> None:
    events = history_dir / "events.jsonl"
    bad_lines = with_invalid_lines(history, events)

    result = run_cli(topic_namespace, "replay", str(history_dir), "--no-progress")

    assert result.exit_code == 0, result.output
    records = read_topics(topic_namespace, input_topics(topic_namespace.topics))
    assert_delivered(topic_namespace, records, history.events)
    rejects = [
        decode_reject(line) for line in default_rejects_path(events).read_bytes().splitlines()
    ]
    assert [r["line_number"] for r in rejects] == bad_lines
    assert [(r["reason"], r["original"]) for r in rejects] == [
        (reason, bad.decode()) for bad, reason in INVALID
    ]
    assert f"{len(history.events):,} of {len(history.events):,}" in result.output
    assert "rejected: " in result.output and "blank" in result.output


def decode_reject(line: bytes) -> dict[str, Any]:
    """One rejects-file record."""
    record: dict[str, Any] = json.loads(line)
    assert set(record) >= {"line_number", "reason", "detail", "original"}
    return record


def test_an_unsorted_file_is_sent_in_occurred_at_order(
    topic_namespace: Settings, history: History, tmp_path: Path
) -> None:
    shuffled = list(history.events)
    random.Random(2).shuffle(shuffled)
    path = tmp_path / "shuffled.jsonl"
    path.write_bytes(b"\n".join(shuffled) + b"\n")

    summary = replay_file(topic_namespace, path, progress=False)

    assert summary.ok and summary.out_of_order_lines > 0
    assert summary.total_sent == len(history.events)
    records = read_topics(topic_namespace, input_topics(topic_namespace.topics))
    assert_delivered(topic_namespace, records, history.events)


def test_a_missing_topic_refuses_to_start_and_sends_nothing(
    settings: Settings, history_dir: Path
) -> None:
    partial = settings.replace(topics={"prefix": f"partial{os.getpid()}{time.time_ns()}."})
    present = input_topics(partial.topics)[:3]  # the votes topic is missing
    create_topics(partial, present)

    result = run_cli(partial, "replay", str(history_dir), "--no-progress")

    assert result.exit_code == 2
    assert "topics_missing" in result.output and f"{partial.topics.prefix}votes" in result.output
    assert read_topics(partial, present) == []
    assert f"{partial.topics.prefix}votes" not in existing_topics(partial)


def test_topic_prefix_sends_to_the_other_namespace_only(
    topic_namespace: Settings, history: History, history_dir: Path
) -> None:
    backtest = topic_namespace.replace(topics={"prefix": topic_namespace.topics.prefix + "bt."})
    create_topics(backtest, input_topics(backtest.topics))

    result = run_cli(
        topic_namespace,
        "replay",
        str(history_dir),
        "--topic-prefix",
        backtest.topics.prefix,
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    assert_delivered(backtest, read_topics(backtest, input_topics(backtest.topics)), history.events)
    assert read_topics(topic_namespace, input_topics(topic_namespace.topics)) == []


def test_from_until_keep_exactly_the_half_open_event_time_range(
    topic_namespace: Settings, history: History, history_dir: Path
) -> None:
    times = sorted({decode(e).occurred_us for e in history.events})
    start_us, end_us = times[len(times) // 4], times[len(times) // 2]

    result = run_cli(
        topic_namespace,
        "replay",
        str(history_dir / "events.jsonl"),
        "--from",
        format_us(start_us),
        "--until",
        format_us(end_us),
        "--no-progress",
    )

    assert result.exit_code == 0, result.output
    expected = [e for e in history.events if start_us <= decode(e).occurred_us < end_us]
    records = read_topics(topic_namespace, input_topics(topic_namespace.topics))
    assert_delivered(topic_namespace, records, expected)
    assert any(decode(r.value).occurred_us == start_us for r in records)  # from: inclusive
    assert "outside" in result.output


def test_rate_and_speed_limited_replays_deliver_everything_in_order(
    topic_namespace: Settings, history: History
) -> None:
    first, second = history.events[:300], history.events[300:600]  # one after the other
    span_s = (decode(second[-1]).occurred_us - decode(second[0]).occurred_us) / 1e6

    by_rate = replay_lines(topic_namespace, first, rate=2000.0)
    by_speed = replay_lines(topic_namespace, second, speed=span_s / 0.5)  # ~0.5 s of sending

    assert by_rate.ok and by_rate.total_sent == len(first)
    assert by_speed.ok and by_speed.total_sent == len(second)
    records = read_topics(topic_namespace, input_topics(topic_namespace.topics))
    assert_delivered(topic_namespace, records, first + second)


def test_an_empty_range_sends_nothing_and_succeeds(
    topic_namespace: Settings, history_dir: Path
) -> None:
    result = run_cli(
        topic_namespace, "replay", str(history_dir), "--from", "2030-01-01", "--no-progress"
    )
    assert result.exit_code == 0, result.output
    assert "sent:     0 of 0" in result.output
    assert read_topics(topic_namespace, input_topics(topic_namespace.topics)) == []


def test_unacknowledged_sends_make_the_replay_exit_non_zero(
    settings: Settings, private_servers: EmbeddedServers, history: History, tmp_path: Path
) -> None:
    """A broker that stops answering mid-replay: the sends time out, the replay stops at the
    first failure, reports it and exits 1."""
    private = settings_for(settings, private_servers)
    create_topics(private, input_topics(private.topics))
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(history.events) + b"\n")
    env = {
        **os.environ,
        **cli_env(private),
        "ESCROWGUARD_KAFKA__REQUEST_TIMEOUT_MS": "1000",  # a send fails after 4 s
    }
    escrowguard = str(Path(sys.executable).parent / "escrowguard")
    args = [escrowguard, "replay", str(path), "--rate", "200", "--no-progress"]
    replay = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not read_topics(private, input_topics(private.topics)):  # sending has begun
            assert time.monotonic() < deadline and replay.poll() is None
        private_servers.pause_broker()
        try:
            out, err = replay.communicate(timeout=60)
        finally:
            private_servers.resume_broker()
    finally:
        if replay.poll() is None:
            replay.kill()
            replay.wait()
    assert replay.returncode == 1, err.decode()
    assert b"FAILED:" in out and b"not attempted" in out
