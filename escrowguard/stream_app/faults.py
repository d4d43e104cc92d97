"""Fault injection for the crash tests: a worker that SIGKILLs itself at a named point.

Off unless the environment variable ``EG_FAULT_KILL_AT=<point>:<n>`` is set (read once, at
import); then the n-th pass through ``<point>`` kills the process with SIGKILL, which no
handler can catch: no clean-up, no commit, no goodbye to the consumer group. The name is
not an ``ESCROWGUARD_*`` setting on purpose: it is not configuration, and the settings
loader rejects unknown ``ESCROWGUARD_*`` variables. Points, in the order a batch passes them
(``worker.ScoringWorker._decide``):

- ``before_store``: the batch is decided; nothing is written to Redis, nothing sent;
- ``after_store``: Redis has the batch's effects and positions; no output is sent;
- ``after_emit``: the batch's outputs are acknowledged by the broker, the input offsets are
  not committed (only batches that emitted an alert or a freeze count).

Used by tests/faults/test_crash_recovery.py; docs/reliability.md lists the figures.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence

from escrowguard.logs import log_event
from escrowguard.outputs import Alert, AnyOutput, PayoutFreeze

log = logging.getLogger(__name__)

ENV_VAR = "EG_FAULT_KILL_AT"
POINTS = ("before_store", "after_store", "after_emit")


def _plan(text: str) -> tuple[str, int] | None:
    if not text:
        return None
    point, _, count = text.partition(":")
    if point not in POINTS or not count.isdigit() or int(count) < 1:
        raise ValueError(f"{ENV_VAR}={text!r}: expected <{'|'.join(POINTS)}>:<n >= 1>")
    return point, int(count)


_PLAN = _plan(os.environ.get(ENV_VAR, ""))
_passes = [0]  # passes through the planned point so far


def kill_point(point: str, outputs: Sequence[AnyOutput] = ()) -> None:
    """SIGKILL this process if the fault plan says so (a no-op when none is set)."""
    if _PLAN is None or _PLAN[0] != point:
        return
    if point == "after_emit" and not any(isinstance(o, Alert | PayoutFreeze) for o in outputs):
        return
    _passes[0] += 1
    if _passes[0] >= _PLAN[1]:
        log_event(log, "fault_kill", logging.WARNING, point=point, batch=_passes[0])
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
