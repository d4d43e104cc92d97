"""Reading the output topics for people: ``escrowguard tail`` and the freeze look-up.

Readers never join a consumer group (a join takes seconds on the embedded broker and
would commit offsets nobody needs): every partition of the topic is assigned. "Caught up"
and "the end" come from the high watermark of fetch responses (``consumer.highwater``),
never from ``end_offsets()``, which under-reports on the embedded broker (DESIGN.md,
"Broker caveats"). Starting from the end, ``seek_to_end`` may land inside the last record
batch there, so records below the first high watermark seen are skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final

import msgspec
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from rich.console import Console
from rich.table import Table

from escrowguard.errors import ConfigError, InfraError
from escrowguard.infra import require_topics
from escrowguard.kafka_config import client_options
from escrowguard.outputs import (
    Alert,
    AlertKind,
    AnyOutput,
    DeadLetter,
    MilestoneDecision,
    PayoutFreeze,
    decode_output,
)
from escrowguard.reasons import Reason
from escrowguard.settings import Settings
from escrowguard.topics import ALERTS, DEADLETTER, MILESTONE_DECISIONS, PAYOUT_FREEZES, output_topic

#: ``tail`` stream name -> (topic suffix, output type).
STREAMS: Final[dict[str, tuple[str, type[AnyOutput]]]] = {
    "alerts": (ALERTS, Alert),
    "freezes": (PAYOUT_FREEZES, PayoutFreeze),
    "decisions": (MILESTONE_DECISIONS, MilestoneDecision),
    "deadletter": (DEADLETTER, DeadLetter),
}
#: What ``--kind`` filters on, per stream: alert kind, freeze action, route, dead-letter reason.
KINDS: Final[dict[str, tuple[str, ...]]] = {
    "alerts": tuple(AlertKind),
    "freezes": ("freeze", "release"),
    "decisions": ("auto_approve", "manual_review"),
    "deadletter": tuple(Reason),
}
_POLL_MS: Final = 200


@dataclass(frozen=True)
class OutputMessage:
    """One message of an output topic: where it was, its bytes, and its decoded output."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    output: AnyOutput | None
    error: str | None

    @property
    def kind(self) -> str | None:
        """What ``--kind`` matches: alert kind, freeze action, route or dead-letter reason."""
        return kind_of(self.output) if self.output is not None else None


def kind_of(output: AnyOutput) -> str:
    """The filterable kind of an output (alert kind, freeze action, route, reason)."""
    if isinstance(output, Alert):
        return str(output.kind)
    if isinstance(output, PayoutFreeze):
        return output.action
    if isinstance(output, MilestoneDecision):
        return output.route
    return output.reason


def check_kind(stream: str, kind: str | None) -> None:
    """ConfigError naming the choices when ``kind`` means nothing for ``stream``."""
    if stream not in STREAMS:
        raise ConfigError(f"unknown output stream {stream!r}: choose from {', '.join(STREAMS)}")
    if kind is not None and kind not in KINDS[stream]:
        raise ConfigError(
            f"--kind {kind!r} never occurs on {stream}: choose from {', '.join(KINDS[stream])}",
            "invalid_option",
        )


class OutputReader:
    """A group-less kafka-python consumer over every partition of one topic.

    ``from_beginning`` False starts at the end: records below the first high watermark
    each partition reports are skipped (see the module docstring).
    """

    def __init__(
        self, settings: Settings, topic: str, *, from_beginning: bool, client_suffix: str = "tail"
    ) -> None:
        require_topics(settings, [topic])
        k = settings.kafka
        try:
            self.consumer = KafkaConsumer(
                **client_options(k, client_suffix=client_suffix),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                allow_auto_create_topics=False,
                fetch_max_wait_ms=k.fetch_max_wait_ms,
                max_partition_fetch_bytes=k.max_partition_fetch_bytes,
            )
            partitions = self.consumer.partitions_for_topic(topic) or set()
            self.partitions = [TopicPartition(topic, p) for p in sorted(partitions)]
            self.consumer.assign(self.partitions)
            if from_beginning:
                self.consumer.seek_to_beginning(*self.partitions)
            else:
                self.consumer.seek_to_end(*self.partitions)
        except KafkaError as exc:
            raise InfraError(f"cannot read {topic}: {exc}", "broker_unavailable") from exc
        self.topic = topic
        self._skip_below: dict[TopicPartition, int | None] = {
            tp: None if not from_beginning else 0 for tp in self.partitions
        }

    def __enter__(self) -> OutputReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect (nothing to commit: no group)."""
        self.consumer.close(autocommit=False)

    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's high watermark from the last fetch response (None before one)."""
        return self.consumer.highwater(tp)

    def poll(self, timeout_ms: int = _POLL_MS) -> list[Any]:
        """The next records (kafka-python ConsumerRecords), partition order kept."""
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            raise InfraError(f"reading {self.topic} failed: {exc}", "broker_unavailable") from exc
        for tp, floor in self._skip_below.items():
            if floor is None:
                self._skip_below[tp] = self.highwater(tp)
        records: list[Any] = []
        for tp, batch in batches.items():
            floor = self._skip_below.get(tp)
            if floor is None:  # no fetch answer yet: nothing of it can be new
                continue
            records += [r for r in batch if r.offset >= floor] if floor else batch
        return records

    def caught_up(self, bounds: dict[TopicPartition, int] | None = None) -> bool:
        """Whether every partition's position reached ``bounds`` (default: its high watermark)."""
        for tp in self.partitions:
            end = bounds[tp] if bounds is not None else self.highwater(tp)
            if end is None or self.consumer.position(tp) < end:
                return False
        return True


def to_message(record: Any, output_type: type[AnyOutput]) -> OutputMessage:
    """Decode one record's value as ``output_type`` (keeping the error when it is not one)."""
    value = bytes(record.value or b"")
    output: AnyOutput | None = None
    error: str | None = None
    try:
        output = decode_output(value, output_type)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        error = str(exc)
    return OutputMessage(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp_ms=record.timestamp,
        key=record.key,
        value=value,
        output=output,
        error=error,
    )


def tail_output(
    settings: Settings,
    stream: str,
    *,
    from_beginning: bool = False,
    kind: str | None = None,
    idle_timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[OutputMessage]:
    """Messages of an output stream as they arrive; ends after ``idle_timeout_s`` of silence.

    ``kind`` keeps alerts of that kind, freezes with that action, decisions with that route,
    dead letters with that reason. Without ``idle_timeout_s`` it runs until interrupted.
    """
    check_kind(stream, kind)
    suffix, output_type = STREAMS[stream]
    topic = output_topic(settings.topics, suffix)
    with OutputReader(settings, topic, from_beginning=from_beginning) as reader:
        last_seen = clock()
        while idle_timeout_s is None or clock() - last_seen < idle_timeout_s:
            records = reader.poll()
            if records:
                last_seen = clock()
            for record in records:
                message = to_message(record, output_type)
                if kind is None or message.kind == kind:
                    yield message


def scan_output(
    settings: Settings, stream: str, *, timeout_s: float = 60.0
) -> Iterator[OutputMessage]:
    """Every message of an output stream from the beginning up to the high watermark of
    each partition as first seen; InfraError when that end is not reached in ``timeout_s``."""
    suffix, output_type = STREAMS[stream]
    topic = output_topic(settings.topics, suffix)
    with OutputReader(settings, topic, from_beginning=True, client_suffix="scan") as reader:
        deadline = time.monotonic() + timeout_s
        bounds: dict[TopicPartition, int] = {}
        while len(bounds) < len(reader.partitions) or not reader.caught_up(bounds):
            if time.monotonic() > deadline:
                raise InfraError(
                    f"could not read {topic} to its end within {timeout_s:.0f} s",
                    "broker_unavailable",
                )
            records = reader.poll()
            for tp in reader.partitions:
                if tp not in bounds and (high := reader.highwater(tp)) is not None:
                    bounds[tp] = high
            for record in records:
                tp = TopicPartition(record.topic, record.partition)
                if tp in bounds and record.offset >= bounds[tp]:
                    continue
                yield to_message(record, output_type)


# --- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TailRow:
    """One table row: when, what, how bad, which ids, the score, and why in short."""

    time: str
    what: str
    level: str
    output_id: str
    entities: str
    score: str
    detail: str


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _entities(**ids: str | None) -> str:
    return " ".join(f"{name}={value}" for name, value in ids.items() if value)


def describe(message: OutputMessage) -> TailRow:
    """The table row of a message (an undecodable one says so, with the error)."""
    out = message.output
    if isinstance(out, Alert):
        reasons = "; ".join(
            r.detail or f"{r.feature}={r.value} (ref {r.reference})" for r in out.reasons[:2]
        )
        return TailRow(
            _when(out.occurred_at),
            str(out.kind),
            out.severity,
            out.alert_id,
            _entities(project=out.project_id, milestone=out.milestone_id, backer=out.backer_id),
            f"{out.score:.3f}/{out.threshold:.3f}",
            reasons,
        )
    if isinstance(out, PayoutFreeze):
        return TailRow(
            _when(out.occurred_at),
            out.action,
            f"by {out.model_version}",
            out.freeze_id,
            _entities(project=out.project_id, milestone=out.milestone_id),
            "" if out.risk_score is None else f"{out.risk_score:.3f}",
            out.reason,
        )
    if isinstance(out, MilestoneDecision):
        return TailRow(
            _when(out.occurred_at),
            out.route,
            out.release_arm,
            out.decision_id,
            _entities(project=out.project_id, milestone=out.milestone_id),
            f"{out.risk_score:.3f}",
            f"after {out.event_id}",
        )
    if isinstance(out, DeadLetter):
        return TailRow(
            _when(out.emitted_at),
            out.reason,
            f"{out.source_topic}[{out.source_partition}]@{out.source_offset}",
            out.dead_letter_id,
            _entities(event=out.event_id),
            "",
            out.detail,
        )
    return TailRow(
        "",
        "undecodable",
        f"[{message.partition}]@{message.offset}",
        "",
        "",
        "",
        message.error or "",
    )


class TailTable:
    """Prints rows as one aligned table, a header first, one row per message as it comes."""

    HEADERS: Final = ("time", "what", "severity/arm/by", "id", "entities", "score", "details")
    WIDTHS: Final = (19, 15, 16, 27, 34, 11, None)

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False, soft_wrap=False)
        if not self.console.is_terminal:
            self.console.width = max(self.console.width, 180)
        self._header_done = False

    def print(self, row: TailRow) -> None:
        """Print one row (with the header the first time)."""
        table = Table(box=None, show_header=not self._header_done, pad_edge=False)
        for header, width in zip(self.HEADERS, self.WIDTHS, strict=True):
            table.add_column(header, width=width, no_wrap=True, overflow="ellipsis")
        style = {"critical": "bold red", "high": "red", "medium": "yellow"}.get(row.level)
        table.add_row(
            row.time,
            row.what,
            row.level,
            row.output_id,
            row.entities,
            row.score,
            row.detail,
            style=style,
        )
        self.console.print(table)
        self._header_done = True
