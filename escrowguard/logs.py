"""Structured logging: one ``key=value`` line per notable event, configured once in cli.py.

Use ``log_event(logger, "event_name", key=value, ...)``; values are quoted when they hold
spaces. Never pass a secret or a whole event payload.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... logger=... event=... k=v`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields.update(getattr(record, "kv", {}))
        line = " ".join(f"{k}={_quote(v)}" for k, v in fields.items())
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info).replace("\n", " | "))
        return line


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **kv: Any) -> None:
    """Log one notable event with structured fields."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"kv": kv})


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Install the key=value handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_escrowguard", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler._escrowguard = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("kafka", "aiokafka", "faust", "mode", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
