"""``escrowguard tail`` and ``escrowguard freezes release`` against the real broker.

Outputs are produced here with kafka-python and ``outputs.encode_output``, keyed as the
worker keys them (``emit.route_output``), into the test's own topic namespace.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner, Result
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from escrowguard.cli import main
from escrowguard.kafka_config import client_options
from escrowguard.outputs import (
    Alert,
    AlertKind,
    AlertReason,
    AnyOutput,
    DeadLetter,
    MilestoneDecision,
    PayoutFreeze,
    decode_output,
    encode_output,
    freeze_id,
)
from escrowguard.settings import Settings
from escrowguard.stream_app.emit import route_output
from escrowguard.stream_app.tail import OutputReader
from escrowguard.topics import output_topic

pytestmark = pytest.mark.integration

AT = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def alert(i: int, kind: AlertKind) -> Alert:
    """An alert about project p<i>."""
    return Alert(
        alert_id=f"al-{kind}-{i}",
        kind=kind,
        severity="high",
        score=0.91,
        threshold=0.5,
        project_id=f"p{i}",
        milestone_id=None,
        backer_id=f"b{i}",
        event_ids=[f"pledge:pl{i}"],
        reasons=[AlertReason("source_wallet", "w1", "w1", "pledge paid from the creator's wallet")],
        occurred_at=AT + timedelta(minutes=i),
        emitted_at=AT,
        model_version="v1",
    )


def freeze(milestone_id: str, project_id: str = "p1") -> PayoutFreeze:
    """The freeze of a milestone (its one freeze id)."""
    return PayoutFreeze(
        freeze_id=freeze_id(milestone_id),
        action="freeze",
        project_id=project_id,
        milestone_id=milestone_id,
        reason="milestone_risk",
        risk_score=0.93,
        alert_ids=["al-x"],
        occurred_at=AT,
        emitted_at=AT,
        model_version="v1",
    )


def decision(i: int) -> MilestoneDecision:
    """An auto-approved milestone decision."""
    return MilestoneDecision(
        decision_id=f"dc-{i}",
        milestone_id=f"m{i}",
        project_id="p1",
        route="auto_approve",
        release_arm="immediate",
        risk_score=0.05,
        event_id=f"vote:v{i}",
        occurred_at=AT,
        emitted_at=AT,
        model_version="v1",
    )


def dead_letter(i: int, reason: str) -> DeadLetter:
    """A dead letter from the pledges topic."""
    return DeadLetter(
        dead_letter_id=f"dl-{i}",
        reason=reason,
        detail="message is not JSON",
        source_topic="escrow.pledges",
        source_partition=1,
        source_offset=i,
        event_id=None,
        original="{oops",
        encoding="utf-8",
        original_size=5,
        truncated=False,
        emitted_at=AT,
    )


def produce(settings: Settings, outputs: list[AnyOutput]) -> list[bytes]:
    """Send outputs to their topics (keyed like the worker); the values sent, in order."""
    producer = KafkaProducer(**client_options(settings.kafka, "test"), acks="all", linger_ms=20)
    values = []
    try:
        futures = []
        for out in outputs:
            suffix, key = route_output(out)
            value = encode_output(out)
            values.append(value)
            futures.append(
                producer.send(
                    settings.topics.name(suffix), value=value, key=key.encode() if key else None
                )
            )
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()
    return values


def produce_raw(settings: Settings, suffix: str, value: bytes) -> None:
    """Send raw bytes to an output topic."""
    producer = KafkaProducer(**client_options(settings.kafka, "test"), acks="all")
    try:
        producer.send(settings.topics.name(suffix), value=value).get(timeout=30)
    finally:
        producer.close()


def run_cli(settings: Settings, *args: str) -> Result:
    """``escrowguard ARGS`` in-process, pointed at the test's broker and namespace."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "ESCROWGUARD_TOPICS__PREFIX": settings.topics.prefix,
    }
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def read_freezes(settings: Settings) -> list[Any]:
    """Every record of the payout-freezes topic (group-less, up to the high watermark)."""
    topic = output_topic(settings.topics, "payout-freezes")
    consumer = KafkaConsumer(**client_options(settings.kafka, "test"), enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while True:
            for batch in consumer.poll(timeout_ms=200).values():
                records += batch
            highs = [(tp, consumer.highwater(tp)) for tp in tps]
            if all(h is not None and consumer.position(tp) >= h for tp, h in highs):
                return records
            assert time.monotonic() < deadline
    finally:
        consumer.close()


# --- tail --------------------------------------------------------------------------------


def test_tail_json_from_beginning_prints_every_message_as_received(
    topic_namespace: Settings,
) -> None:
    kinds = [AlertKind.WASH_TRADING, AlertKind.SYBIL_VOTE, AlertKind.PLEDGE_ANOMALY]
    alerts = produce(topic_namespace, [alert(i, kinds[i % 3]) for i in range(9)])
    produce(topic_namespace, [freeze("m1")])  # another topic: never printed here

    result = run_cli(
        topic_namespace, "tail", "alerts", "--json", "--from-beginning", "--idle-timeout", "1"
    )

    assert result.exit_code == 0, result.output
    printed = [line.encode() for line in result.stdout.splitlines()]
    assert sorted(printed) == sorted(alerts)
    by_project = [json.loads(v)["project_id"] for v in printed]
    assert len(set(by_project)) == 9


@pytest.mark.parametrize(
    ("stream", "kind", "expected"),
    [
        ("alerts", "sybil_vote", {"al-sybil_vote-1", "al-sybil_vote-3", "al-sybil_vote-5"}),
        ("freezes", "release", set()),
        ("freezes", "freeze", {freeze_id("m1"), freeze_id("m2")}),
        ("decisions", "auto_approve", {"dc-1", "dc-2"}),
        ("deadletter", "not_json", {"dl-1"}),
    ],
)
def test_kind_keeps_only_that_kind_action_route_or_reason(
    topic_namespace: Settings, stream: str, kind: str, expected: set[str]
) -> None:
    produce(
        topic_namespace,
        [alert(i, [AlertKind.WASH_TRADING, AlertKind.SYBIL_VOTE][i % 2]) for i in range(6)]
        + [freeze("m1"), freeze("m2"), decision(1), decision(2)]
        + [dead_letter(1, "not_json"), dead_letter(2, "too_large")],
    )

    result = run_cli(
        topic_namespace, "tail", stream, "--kind", kind, "--json", "--from-beginning",
        "--idle-timeout", "1",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    ids = {
        r.get("alert_id") or r.get("freeze_id") or r.get("decision_id") or r["dead_letter_id"]
        for r in records
    }
    assert ids == expected


def test_the_table_shows_one_readable_row_per_message(topic_namespace: Settings) -> None:
    produce(topic_namespace, [freeze("m1"), freeze("m2", project_id="p2")])
    produce_raw(topic_namespace, "payout-freezes", b"{not an output")

    result = run_cli(topic_namespace, "tail", "freezes", "--from-beginning", "--idle-timeout", "1")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:2] == ["time", "what"]
    rows = lines[1:]
    assert len(rows) == 3
    for milestone, project in (("m1", "p1"), ("m2", "p2")):
        (row,) = [r for r in rows if freeze_id(milestone) in r]
        assert "freeze" in row and f"milestone={milestone}" in row and f"project={project}" in row
        assert "0.930" in row and "milestone_risk" in row
    assert any("undecodable" in r for r in rows)
    assert "3 message(s)" in result.stderr


def test_an_unknown_kind_is_refused_with_the_choices(topic_namespace: Settings) -> None:
    result = run_cli(topic_namespace, "tail", "alerts", "--kind", "rug_pull", "--idle-timeout", "1")
    assert result.exit_code == 2
    assert "wash_trading" in result.output and "rug_pull" in result.output


def test_from_the_end_only_new_messages_are_read(topic_namespace: Settings) -> None:
    """Old messages sent as one batch per partition: the embedded broker's ListOffsets
    'latest' lands inside such a batch, so this checks the high-watermark floor too."""
    produce(topic_namespace, [alert(i, AlertKind.WASH_TRADING) for i in range(40)])
    topic = output_topic(topic_namespace.topics, "alerts")
    with OutputReader(topic_namespace, topic, from_beginning=False) as reader:
        deadline = time.monotonic() + 30
        old = reader.poll()
        while any(reader.highwater(tp) is None for tp in reader.partitions):
            old += reader.poll()
            assert time.monotonic() < deadline
        new = produce(topic_namespace, [alert(100 + i, AlertKind.SYBIL_VOTE) for i in range(5)])
        seen: list[bytes] = []
        while len(seen) < len(new):
            seen += [r.value for r in reader.poll()]
            assert time.monotonic() < deadline
        seen += [r.value for r in reader.poll(500)]
    assert old == []
    assert sorted(seen) == sorted(new)


# --- freezes release ---------------------------------------------------------------------


def test_release_finds_the_freeze_and_sends_the_release_with_its_id(
    topic_namespace: Settings,
) -> None:
    others = [freeze(f"m-other-{i}", project_id="p9") for i in range(1200)]  # > one poll
    produce(topic_namespace, [*others, freeze("m-target", project_id="p-target")])
    target = freeze_id("m-target")

    result = run_cli(
        topic_namespace, "freezes", "release", target, "--reason", "reviewed by the security team"
    )

    assert result.exit_code == 0, result.output
    assert target in result.stdout
    records = read_freezes(topic_namespace)
    assert len(records) == 1202
    releases = [r for r in records if json.loads(r.value)["action"] == "release"]
    assert len(releases) == 1
    (record,) = releases
    release = decode_output(record.value, PayoutFreeze)
    assert isinstance(release, PayoutFreeze)
    assert (release.freeze_id, release.project_id, release.milestone_id) == (
        target,
        "p-target",
        "m-target",
    )
    assert release.reason == "manual_release: reviewed by the security team"
    assert release.model_version == "manual" and release.risk_score is None
    assert record.key == b"m-target"
    (frozen,) = [r for r in records if r.key == b"m-target" and r is not record]
    assert record.partition == frozen.partition and record.offset > frozen.offset


def test_release_of_an_unknown_freeze_fails_clearly_and_sends_nothing(
    topic_namespace: Settings,
) -> None:
    produce(topic_namespace, [freeze("m1")])

    result = run_cli(topic_namespace, "freezes", "release", "fz-nope", "--reason", "ok")

    assert result.exit_code == 2
    assert "freeze_not_found" in result.output and "fz-nope" in result.output
    assert len(read_freezes(topic_namespace)) == 1


def test_release_with_ids_given_checks_them_and_needs_no_look_up(
    topic_namespace: Settings,
) -> None:
    wrong = run_cli(
        topic_namespace, "freezes", "release", freeze_id("m1"), "--reason", "ok",
        "--project-id", "p1", "--milestone-id", "m2",
    )  # fmt: skip
    half = run_cli(
        topic_namespace, "freezes", "release", freeze_id("m1"), "--reason", "ok",
        "--project-id", "p1",
    )  # fmt: skip
    right = run_cli(
        topic_namespace, "freezes", "release", freeze_id("m1"), "--reason", "ok",
        "--project-id", "p1", "--milestone-id", "m1",
    )  # fmt: skip

    assert wrong.exit_code == 2 and "not the freeze of milestone m2" in wrong.output
    assert half.exit_code == 2 and "--milestone-id" in half.output
    assert right.exit_code == 0, right.output
    (record,) = read_freezes(topic_namespace)
    sent = json.loads(record.value)
    assert (sent["action"], sent["freeze_id"], sent["milestone_id"]) == (
        "release",
        freeze_id("m1"),
        "m1",
    )
