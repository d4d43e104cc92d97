"""``escrowguard replay``: send a recorded history (events.jsonl) to the input topics.

The plan (validation, rejects, time range, order, pacing) is pure (``replay_plan``); the
producer and send loop are ``replay_send``. This module joins them: it finds the input,
checks that every input topic exists (refusing to start otherwise: nothing is sent),
writes the rejects file, shows progress and sums up. Python API: ``replay_file`` and
``replay_lines``, both returning a ``ReplaySummary``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from escrowguard.errors import DataError, InfraError
from escrowguard.events import INPUT_TOPIC_SUFFIXES
from escrowguard.infra import require_topics
from escrowguard.logs import log_event
from escrowguard.producers.replay_plan import Reject, format_us, plan_replay, time_bounds_us
from escrowguard.producers.replay_send import send_plan
from escrowguard.settings import Settings

logger = logging.getLogger(__name__)


def resolve_input(path: Path) -> Path:
    """The events.jsonl to replay: ``path`` itself, or ``path/events.jsonl`` for a directory."""
    candidate = path / "events.jsonl" if path.is_dir() else path
    if not candidate.is_file():
        where = f"{path} has no events.jsonl" if path.is_dir() else f"{path} does not exist"
        raise DataError(
            f"cannot replay: {where} (give an events.jsonl or an `escrowguard generate` "
            "output directory)",
            "input_missing",
        )
    return candidate


def default_rejects_path(events_path: Path) -> Path:
    """Where rejected lines go unless told otherwise: ``<input>.rejects.jsonl``."""
    return events_path.with_name(events_path.name + ".rejects.jsonl")


# --- progress ----------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Items per second, as rich estimates it."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:>9,.0f}/s" if speed else "        -/s", style="progress.data.speed")


class ReplayProgress:
    """A rich progress display on stderr (one task per phase, with rate and ETA), or none."""

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description:<9}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                TimeElapsedColumn(),
                console=console or Console(stderr=True),
            )
        self._task: TaskID | None = None

    def __enter__(self) -> ReplayProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, name: str, total: int | None) -> None:
        """Begin a phase (``total`` None: unknown length)."""
        if self._progress is not None:
            self._task = self._progress.add_task(name, total=total)

    def advance(self, steps: int = 1) -> None:
        """Mark ``steps`` more steps of the current phase done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def set_completed(self, completed: int, total: int | None = None) -> None:
        """Set the current phase's count (and its total, once known)."""
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed, total=total)


# --- the summary -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay did: read, rejected, filtered, sent per topic, failed, how fast."""

    source: str
    topic_prefix: str
    lines_read: int
    blank_lines: int
    rejected: dict[str, int]
    rejects_path: str | None
    outside_range: int
    range_text: str | None
    out_of_order_lines: int
    planned: int
    sent: dict[str, int]
    failed: int
    unconfirmed: int
    errors: tuple[str, ...]
    not_attempted: int
    interrupted: bool
    idempotent: bool
    first_event_at: str | None
    last_event_at: str | None
    elapsed_s: float
    send_elapsed_s: float

    @property
    def total_sent(self) -> int:
        """Events the broker acknowledged."""
        return sum(self.sent.values())

    @property
    def total_rejected(self) -> int:
        """Lines that failed validation (never sent)."""
        return sum(self.rejected.values())

    @property
    def ok(self) -> bool:
        """True when every planned event was sent and acknowledged."""
        return (
            self.failed == 0
            and self.unconfirmed == 0
            and self.not_attempted == 0
            and not self.interrupted
        )

    @property
    def events_per_s(self) -> float:
        """Acknowledged events per second of sending (producer start to the end of flush)."""
        return self.total_sent / self.send_elapsed_s if self.send_elapsed_s > 0 else 0.0

    def lines(self) -> list[str]:
        """The summary ``escrowguard replay`` prints."""
        mode = "idempotent" if self.idempotent else "non-idempotent, max_in_flight=1"
        valid = self.lines_read - self.blank_lines - self.total_rejected
        out = [
            f"replay:   {self.source} -> {self.topic_prefix}* ({mode}, acks=all)",
            f"read:     {self.lines_read:,} lines, {valid:,} valid, "
            f"{self.total_rejected:,} rejected, {self.blank_lines:,} blank",
        ]
        if self.rejected:
            reasons = " ".join(f"{r}={n:,}" for r, n in self.rejected.items())
            out.append(
                f"rejected: {reasons}" + (f" -> {self.rejects_path}" if self.rejects_path else "")
            )
        if self.range_text:
            out.append(f"range:    {self.range_text}: {self.outside_range:,} valid events outside")
        if self.out_of_order_lines:
            out.append(
                f"order:    input not in occurred_at order ({self.out_of_order_lines:,} lines "
                "earlier than a line before them): sorted in memory before sending"
            )
        if self.first_event_at:
            out.append(f"events:   {self.first_event_at} .. {self.last_event_at}")
        per_topic = " ".join(f"{t}={n:,}" for t, n in self.sent.items())
        out.append(f"sent:     {self.total_sent:,} of {self.planned:,}  {per_topic}".rstrip())
        if not self.ok:
            out.append(
                f"FAILED:   {self.failed:,} send failures, {self.unconfirmed:,} unconfirmed, "
                f"{self.not_attempted:,} not attempted"
                + (" (interrupted)" if self.interrupted else "")
            )
            out += [f"  error: {e}" for e in self.errors]
        out.append(
            f"time:     {self.elapsed_s:.1f} s total, {self.send_elapsed_s:.1f} s sending, "
            f"{self.events_per_s:,.0f} events/s"
        )
        return out


# --- replaying ---------------------------------------------------------------------------


def replay_file(
    settings: Settings,
    path: Path,
    *,
    topic_prefix: str | None = None,
    speed: float | None = None,
    rate: float | None = None,
    time_from: datetime | None = None,
    time_until: datetime | None = None,
    rejects_path: Path | None = None,
    progress: bool = True,
) -> ReplaySummary:
    """Replay an events.jsonl (or a generator output directory) to the input topics.

    ``speed`` None is as fast as possible, N is N x real time by event time; ``rate`` caps
    events per second; ``[time_from, time_until)`` bounds event time; rejected lines go to
    ``rejects_path`` (default ``<input>.rejects.jsonl``, rewritten on every run).
    """
    events_path = resolve_input(path)
    rejects_to = rejects_path or default_rejects_path(events_path)
    with events_path.open("rb") as lines:
        return replay_lines(
            settings,
            lines,
            topic_prefix=topic_prefix,
            speed=speed,
            rate=rate,
            time_from=time_from,
            time_until=time_until,
            rejects_path=rejects_to,
            progress=progress,
            source=str(events_path),
        )


def replay_lines(
    settings: Settings,
    lines: Iterable[bytes],
    *,
    topic_prefix: str | None = None,
    speed: float | None = None,
    rate: float | None = None,
    time_from: datetime | None = None,
    time_until: datetime | None = None,
    rejects_path: Path | None = None,
    progress: bool = False,
    source: str = "<lines>",
) -> ReplaySummary:
    """Replay wire-contract lines (bytes, one event each) to the input topics.

    Same options as ``replay_file``; rejects are only counted unless ``rejects_path`` is
    given. Raises InfraError when an input topic is missing (nothing is sent then).
    """
    started = time.monotonic()
    if topic_prefix is not None:
        settings = settings.replace(topics={"prefix": topic_prefix})
    start_us, end_us = time_bounds_us(time_from, time_until)
    topic_names = [settings.topics.name(s) for s in INPUT_TOPIC_SUFFIXES]
    try:
        require_topics(settings, topic_names)
    except InfraError as exc:
        if exc.reason != "topics_missing" or topic_prefix is None:
            raise
        raise InfraError(
            f"{exc} (for this prefix: ESCROWGUARD_TOPICS__PREFIX={topic_prefix} "
            "escrowguard infra create-topics)",
            exc.reason,
        ) from None
    with ReplayProgress(progress) as view:
        view.start("validate", None)
        with _rejects_sink(rejects_path) as on_reject:  # complete before the first send
            plan = plan_replay(
                lines,
                start_us=start_us,
                end_us=end_us,
                max_bytes=settings.worker.max_message_bytes,
                unknown_fields=settings.worker.unknown_fields,
                on_reject=on_reject,
                on_line=view.set_completed,
            )
        view.set_completed(plan.lines_read, plan.lines_read)
        log_event(
            logger,
            "replay_planned",
            source=source,
            events=len(plan),
            rejected=sum(plan.rejected.values()),
            outside_range=plan.outside_range,
            sorted_in_memory=plan.sorted_in_memory,
        )
        view.start("send", len(plan))
        sent = send_plan(
            settings, plan, topic_names, speed=speed, rate=rate, on_progress=view.set_completed
        )
    ordered = [plan.occurred_us[plan.order[0]], plan.occurred_us[plan.order[-1]]] if plan else []
    summary = ReplaySummary(
        source=source,
        topic_prefix=settings.topics.prefix,
        lines_read=plan.lines_read,
        blank_lines=plan.blank_lines,
        rejected=plan.rejected,
        rejects_path=str(rejects_path) if rejects_path else None,
        outside_range=plan.outside_range,
        range_text=_range_text(start_us, end_us),
        out_of_order_lines=plan.out_of_order_lines,
        planned=len(plan),
        sent=sent.acked,
        failed=sent.failed,
        unconfirmed=sent.unconfirmed,
        errors=sent.errors,
        not_attempted=len(plan) - sent.attempted,
        interrupted=sent.interrupted,
        idempotent=sent.idempotent,
        first_event_at=format_us(ordered[0]) if ordered else None,
        last_event_at=format_us(ordered[1]) if ordered else None,
        elapsed_s=time.monotonic() - started,
        send_elapsed_s=sent.elapsed_s,
    )
    log_event(
        logger,
        "replay_done",
        level=logging.INFO if summary.ok else logging.ERROR,
        sent=summary.total_sent,
        failed=summary.failed,
        not_attempted=summary.not_attempted,
        events_per_s=round(summary.events_per_s),
    )
    return summary


@contextlib.contextmanager
def _rejects_sink(path: Path | None) -> Iterator[Callable[[Reject], None] | None]:
    """A callback writing each reject as one JSON line to ``path`` (None: no file)."""
    if path is None:
        yield None
        return
    try:
        fh: IO[bytes] = path.open("wb")
    except OSError as exc:
        raise DataError(
            f"cannot write the rejects file {path}: {exc.strerror or exc} (choose another "
            "with --rejects)",
            "not_writable",
        ) from None
    with fh:

        def write(reject: Reject) -> None:
            fh.write(reject.to_json() + b"\n")

        yield write


def _range_text(start_us: int | None, end_us: int | None) -> str | None:
    if start_us is None and end_us is None:
        return None
    start = format_us(start_us) if start_us is not None else "-inf"
    end = format_us(end_us) if end_us is not None else "+inf"
    return f"occurred_at in [{start}, {end})"
