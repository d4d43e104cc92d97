"""Phase (a) of the benchmark: a bare Faust agent that only decodes.

The yardstick the scorer is compared with: the same input topics, a consumer group of its
own, an agent over ``stream.take(batch_max_events, within=batch_max_wait_ms)`` that decodes
each message (``events.decode``: the worker's own decoder and validation) and does nothing
else: no features, no store, no scoring, no output. Faust's settings are the worker's
(group timings, buffer size, at-least-once) but for the max poll interval, left at Faust's
default (see ``create_bare_app``), so the difference to phase (b) is the scorer.

Run as ``python -m escrowguard.bench.bare STATUS_PATH EXPECTED`` with the settings in the
environment (``ESCROWGUARD_*``, as ``WorkerProcess`` passes them); it writes
``{"samples": [[monotonic_s, messages], ...], "rejected": {"n": k}}`` to STATUS_PATH every
0.2 s and as soon as EXPECTED messages are read (``status.StatusFile``), and runs until
stopped.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import faust

from escrowguard.bench.status import StatusFile
from escrowguard.errors import DecodeError
from escrowguard.events import decode
from escrowguard.kafka_config import faust_broker_url
from escrowguard.logs import configure_logging
from escrowguard.settings import Settings, load_settings
from escrowguard.topics import input_topics


def create_bare_app(settings: Settings, status: StatusFile) -> faust.App:
    """The bare Faust app: the worker's Faust settings, one decode-only agent."""
    s = settings
    app = faust.App(
        s.kafka.consumer_group,
        broker=faust_broker_url(s.kafka),
        processing_guarantee="at_least_once",
        topic_partitions=s.topics.partitions,
        topic_allow_declare=False,
        topic_disable_leader=True,
        store="memory://",
        datadir=str(Path(tempfile.gettempdir()) / f"escrowguard-faust-{os.getuid()}"),
        web_enabled=False,
        stream_buffer_maxsize=s.worker.stream_buffer_maxsize,
        broker_session_timeout=s.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=s.kafka.heartbeat_interval_ms / 1000,
        # Faust's own max poll interval (1000 s): with ours (30 s) a backlog that takes the
        # agent longer than 30 s gets the member dropped from the group (UnknownMemberId
        # at the next commit) and this Faust never resumes; measured here, every time
        broker_rebalance_timeout=s.kafka.rebalance_timeout_ms / 1000,
        consumer_auto_offset_reset="earliest",
        value_serializer="raw",
        key_serializer="raw",
        autodiscover=False,
        worker_redirect_stdouts=False,
    )
    topics = app.topic(
        *input_topics(s.topics),
        value_type=bytes,
        key_type=bytes,
        value_serializer="raw",
        key_serializer="raw",
    )
    w = s.worker
    rejected = status.extra.setdefault("rejected", {})
    assert isinstance(rejected, dict)

    @app.agent(topics, concurrency=1)
    async def decode_only(stream: Any) -> None:
        async for values in stream.take(w.batch_max_events, within=w.batch_max_wait_ms / 1000):
            for value in values:
                try:
                    decode(value, max_bytes=w.max_message_bytes, unknown_fields=w.unknown_fields)
                except DecodeError:
                    rejected["n"] = rejected.get("n", 0) + 1
            status.add(len(values))

    @app.timer(interval=status.every_s)
    async def _idle_status() -> None:
        status.write()

    return app


def main(argv: list[str]) -> None:
    """Run the bare app until SIGTERM (settings from the environment)."""
    settings = load_settings()
    app = create_bare_app(settings, StatusFile(Path(argv[0]), int(argv[1])))
    configure_logging(settings.logging.level)
    logging.getLogger("faust").setLevel(logging.WARNING)
    worker = faust.Worker(
        app,
        loglevel=settings.logging.level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
