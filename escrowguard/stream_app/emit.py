"""Sending outputs to Kafka: alerts, payout freezes, milestone decisions, dead letters.

A batch's outputs are sent together and flushed before the batch's input offsets are
committed (at-least-once: a crash in between re-sends the same ids). Send failures become
``PublishError`` so the worker retries the batch instead of committing past it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from escrowguard.errors import PublishError
from escrowguard.kafka_config import client_options
from escrowguard.outputs import (
    Alert,
    AnyOutput,
    DeadLetter,
    MilestoneDecision,
    PayoutFreeze,
    encode_output,
    make_id,
)
from escrowguard.settings import Settings
from escrowguard.stream_app.ordering import Position
from escrowguard.topics import output_topic

log = logging.getLogger(__name__)

#: How much of an undecodable message a dead letter keeps.
DEAD_LETTER_KEEP_BYTES: Final = 16 * 1024


def dead_letter(
    raw: bytes, pos: Position, reason: str, detail: str, event_id: str | None, now: datetime
) -> DeadLetter:
    """A dead letter keeping the original bytes (as text if UTF-8, else base64), bounded."""
    kept = raw[:DEAD_LETTER_KEEP_BYTES]
    try:
        text, encoding = kept.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
    return DeadLetter(
        dead_letter_id=make_id("dl", pos.topic, str(pos.partition), str(pos.offset)),
        reason=reason,
        detail=detail[:500],
        source_topic=pos.topic,
        source_partition=pos.partition,
        source_offset=pos.offset,
        event_id=event_id,
        original=text,
        encoding=encoding,  # type: ignore[arg-type]
        original_size=len(raw),
        truncated=len(raw) > len(kept),
        emitted_at=now,
    )


def route_output(output: AnyOutput) -> tuple[str, str | None]:
    """(topic suffix, key) of an output."""
    if isinstance(output, Alert):
        return "alerts", output.milestone_id or output.project_id or output.backer_id
    if isinstance(output, PayoutFreeze):
        return "payout-freezes", output.milestone_id
    if isinstance(output, MilestoneDecision):
        return "milestone-decisions", output.milestone_id
    return "deadletter", output.event_id


class Publisher:
    """An aiokafka producer sending outputs with acks=all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer (aiokafka clients are created inside the running loop)."""
        if self._producer is None:
            raise PublishError("the output producer is not started")
        return self._producer

    async def start(self) -> None:
        """Connect to the brokers."""
        self._producer = AIOKafkaProducer(
            **client_options(self.settings.kafka, client_suffix="out"),
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        try:
            await self._producer.start()
        except KafkaError as exc:
            raise PublishError(f"cannot connect the output producer: {exc}") from exc

    async def stop(self) -> None:
        """Flush and disconnect."""
        if self._producer is not None:
            await self._producer.stop()

    async def send_all(self, outputs: Sequence[AnyOutput]) -> None:
        """Send every output and wait until all are acknowledged."""
        if not outputs:
            return
        futures: list[Any] = []
        try:
            for output in outputs:
                suffix, key = route_output(output)
                futures.append(
                    await self.producer.send(
                        output_topic(self.settings.topics, suffix),
                        encode_output(output),
                        key=key.encode() if key else None,
                    )
                )
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise PublishError(f"sending {len(outputs)} outputs failed: {exc}") from exc
