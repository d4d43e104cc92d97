"""The ``escrowguard`` command line. Settings are built here once and passed down.

Each command is thin: it parses options, builds ``Settings``, calls into the package, and
turns ``EscrowguardError`` into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from escrowguard.errors import EscrowguardError
from escrowguard.logs import configure_logging
from escrowguard.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What every command gets: the profile path, and settings built on first use."""

    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """The validated settings (ConfigError, naming the key, when they are wrong)."""
        if self._settings is None:
            self._settings = load_settings(self.config)
            configure_logging(self._settings.logging.level)
        return self._settings


pass_ctx = click.make_pass_decorator(Context)


def friendly_errors(func: F) -> F:
    """Print an EscrowguardError as ``error [reason]: message`` and exit 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EscrowguardError as exc:
            click.echo(f"error [{exc.reason}]: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=str),
    envvar="ESCROWGUARD_CONFIG",
    help="Profile TOML merged over config/default.toml.",
)
@click.version_option(package_name="escrowguard")
@click.pass_context
def main(ctx: click.Context, config: str | None) -> None:
    """escrowguard: real-time fraud and risk scoring for escrow milestone funding."""
    ctx.obj = Context(config)


@main.command("schemas")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("schemas"))
@click.option("--check", is_flag=True, help="Exit 1 if the files on disk are stale.")
@friendly_errors
def schemas_cmd(out: Path, check: bool) -> None:
    """Write the JSON Schema of every event type (generated from events.py)."""
    from escrowguard.schemas import write_schemas

    stale = write_schemas(out, check=check)
    if check and stale:
        click.echo("stale schema files: " + ", ".join(stale), err=True)
        sys.exit(1)


# --- commands are added below, one per capability ---------------------------------------


if __name__ == "__main__":  # pragma: no cover
    main()
