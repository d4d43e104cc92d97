"""``escrowguard freezes release``: a reviewer ends a payout freeze.

The release is ``outputs.build_release`` (same ``freeze_id`` as the freeze, the wall clock
as its time, model version ``manual``), sent to the payout-freezes topic with
``acks="all"`` and keyed like the worker keys freezes (by milestone), so it lands on the
freeze's partition, after it. Sending it twice is harmless: consumers de-duplicate on
(freeze_id, action).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Final

from kafka import KafkaProducer
from kafka.errors import KafkaError

from escrowguard.errors import ConfigError, DataError, PublishError
from escrowguard.infra import require_topics
from escrowguard.kafka_config import client_options
from escrowguard.logs import log_event
from escrowguard.outputs import PayoutFreeze, build_release, encode_output, freeze_id
from escrowguard.settings import Settings
from escrowguard.stream_app.emit import route_output
from escrowguard.stream_app.tail import scan_output
from escrowguard.topics import PAYOUT_FREEZES, output_topic

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S: Final = 30.0


def find_freeze(
    settings: Settings, wanted_id: str, *, timeout_s: float = 60.0
) -> PayoutFreeze | None:
    """The latest ``freeze`` message with this id on the topic (else the latest message with
    it, e.g. a release), read from the beginning up to the high watermark; None if absent."""
    latest: PayoutFreeze | None = None
    latest_freeze: PayoutFreeze | None = None
    for message in scan_output(settings, "freezes", timeout_s=timeout_s):
        out = message.output
        if isinstance(out, PayoutFreeze) and out.freeze_id == wanted_id:
            latest = out
            if out.action == "freeze":
                latest_freeze = out
    return latest_freeze or latest


def release_freeze(
    settings: Settings,
    wanted_id: str,
    reason: str,
    *,
    project_id: str | None = None,
    milestone_id: str | None = None,
    now: datetime | None = None,
) -> PayoutFreeze:
    """Send the manual release of a freeze and return it.

    Without ``project_id``/``milestone_id`` the freeze is looked up on the topic (DataError
    ``freeze_not_found`` when it is not there). A given milestone must be the one the freeze
    id belongs to (ids are ``outputs.freeze_id(milestone_id)``).
    """
    if not reason.strip():
        raise ConfigError("--reason must say why the payout is released", "invalid_option")
    if (project_id is None) != (milestone_id is None):
        raise ConfigError(
            "give both --project-id and --milestone-id, or neither (then the freeze is looked "
            "up on the topic)",
            "invalid_option",
        )
    topic = output_topic(settings.topics, PAYOUT_FREEZES)
    require_topics(settings, [topic])
    if project_id is None or milestone_id is None:
        found = find_freeze(settings, wanted_id)
        if found is None:
            raise DataError(
                f"no freeze {wanted_id} on {topic} (read to its end); check the id with "
                "`escrowguard tail freezes --from-beginning --idle-timeout 5`, or give "
                "--project-id and --milestone-id",
                "freeze_not_found",
            )
        project_id, milestone_id = found.project_id, found.milestone_id
    elif freeze_id(milestone_id) != wanted_id:
        raise ConfigError(
            f"{wanted_id} is not the freeze of milestone {milestone_id} (that one is "
            f"{freeze_id(milestone_id)}): check --milestone-id",
            "invalid_option",
        )
    release = build_release(
        wanted_id,
        project_id,
        milestone_id,
        reason.strip(),
        now or datetime.now(UTC),
    )
    _send(settings, topic, release)
    log_event(logger, "freeze_released", freeze_id=wanted_id, milestone_id=milestone_id)
    return release


def _send(settings: Settings, topic: str, release: PayoutFreeze) -> None:
    _, key = route_output(release)
    try:
        producer = KafkaProducer(
            **client_options(settings.kafka, client_suffix="release"),
            acks="all",
            enable_idempotence=False,  # one message; a retried duplicate is de-duplicated
            allow_auto_create_topics=False,
        )
    except KafkaError as exc:
        raise PublishError(f"cannot connect a producer to Kafka: {exc}") from exc
    try:
        future = producer.send(
            topic, value=encode_output(release), key=key.encode() if key else None
        )
        producer.flush(timeout=SEND_TIMEOUT_S)
        future.get(timeout=SEND_TIMEOUT_S)
    except KafkaError as exc:
        raise PublishError(
            f"the release of {release.freeze_id} was not acknowledged: {exc}"
        ) from exc
    finally:
        producer.close(timeout=5)
