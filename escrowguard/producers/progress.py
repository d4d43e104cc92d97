"""Phase progress for long producer runs: a protocol the pure code reports to, and a rich view.

The generator only calls ``start``/``advance`` on whatever it is given; the command line
passes ``RichPhases`` (one progress task per phase, on stderr), tests pass nothing.
"""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Phases(Protocol):
    """Receives progress: a named phase with a number of steps, then steps done."""

    def start(self, name: str, total: int) -> None:
        """Begin a new phase (the previous one is complete)."""

    def advance(self, steps: int = 1) -> None:
        """Mark ``steps`` more steps of the current phase done."""


class SilentPhases:
    """Progress that goes nowhere (library use, tests)."""

    def start(self, name: str, total: int) -> None:
        """Ignore the phase."""

    def advance(self, steps: int = 1) -> None:
        """Ignore the steps."""


class RichPhases:
    """A rich progress display on stderr with one task per phase; use as a context manager."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console or Console(stderr=True),
            transient=False,
        )
        self._task: TaskID | None = None

    def __enter__(self) -> RichPhases:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._complete()
        self._progress.stop()

    def start(self, name: str, total: int) -> None:
        """Complete the current task and add a new one."""
        self._complete()
        self._task = self._progress.add_task(name, total=max(total, 1))

    def advance(self, steps: int = 1) -> None:
        """Advance the current task."""
        if self._task is not None:
            self._progress.advance(self._task, steps)

    def _complete(self) -> None:
        if self._task is not None:
            task = self._progress.tasks[-1]
            self._progress.update(self._task, completed=task.total)
            self._task = None
