"""Run the Faust app as a worker process (``escrowguard worker``)."""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from escrowguard.errors import ConfigError
from escrowguard.logs import configure_logging
from escrowguard.settings import Settings
from escrowguard.stream_app.app import create_app


def run_worker(settings: Settings, bundle: Path | None = None) -> None:
    """Build the app and run it until SIGINT/SIGTERM (mode handles both, stopping cleanly)."""
    if not settings.kafka.bootstrap_servers or not settings.redis.url:
        raise ConfigError(
            "the worker needs servers: set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL (for a local "
            "setup, run `escrowguard infra up --env-file .servers.env` and source that file)"
        )
    app = create_app(settings, bundle)
    worker = faust.Worker(
        app,
        loglevel=settings.logging.level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    configure_logging(settings.logging.level)
    logging.getLogger("faust").setLevel(logging.WARNING)
    worker.execute_from_commandline()
