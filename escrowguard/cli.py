"""The ``escrowguard`` command line. Settings are built here once and passed down.

Each command is thin: it parses options, builds ``Settings``, calls into the package, and
turns ``EscrowguardError`` into a one-line message and a non-zero exit code.
"""

from __future__ import annotations

import functools
import logging
import os
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


@main.group("infra")
def infra_group() -> None:
    """Embedded broker + Redis (no Docker needed), topics, and a smoke test of the servers."""


@infra_group.command("up")
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the KAFKA_BOOTSTRAP_SERVERS/REDIS_URL lines here (removed on exit).",
)
@click.option("--partitions", type=click.IntRange(min=1), help="Partitions per topic.")
@pass_ctx
@friendly_errors
def infra_up_cmd(ctx: Context, env_file: Path | None, partitions: int | None) -> None:
    """Start the embedded broker and Redis, create every topic, serve until Ctrl-C."""
    from escrowguard.infra import serve_embedded

    serve_embedded(ctx.settings, partitions, env_file, announce=click.echo)


@infra_group.command("check")
@click.option("--messages", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--compare-defaults",
    is_flag=True,
    help="Also join with the client libraries' default group settings (slow: ~30 s here).",
)
@pass_ctx
@friendly_errors
def infra_check_cmd(ctx: Context, messages: int, compare_defaults: bool) -> None:
    """Smoke-test the configured servers (or embedded ones): produce, consume, Redis."""
    from escrowguard.infra.check import check_servers

    report = check_servers(ctx.settings, messages, compare_defaults)
    kind = "embedded" if report.embedded else "configured"
    click.echo(f"servers: {kind} kafka={report.bootstrap_servers} redis={report.redis_url}")
    for step, ms in report.timings_ms.items():
        click.echo(f"  {step:<44} {ms:>9.1f} ms")
    click.echo("ok")


@infra_group.command("create-topics")
@click.option("--partitions", type=click.IntRange(min=1), help="Default: topics.partitions.")
@click.option(
    "--wait-s",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="How long to wait for the broker to answer first.",
)
@pass_ctx
@friendly_errors
def infra_create_topics_cmd(ctx: Context, partitions: int | None, wait_s: float) -> None:
    """Create every configured topic on KAFKA_BOOTSTRAP_SERVERS (idempotent)."""
    from escrowguard.errors import ConfigError
    from escrowguard.infra import create_topics, kafka_answers, wait_until
    from escrowguard.topics import all_topics

    s = ctx.settings
    if not s.kafka.bootstrap_servers:
        raise ConfigError(
            "config key 'kafka.bootstrap_servers' is empty: set KAFKA_BOOTSTRAP_SERVERS"
        )
    wait_until(
        lambda: kafka_answers(s.kafka.bootstrap_servers, api="api_versions"),
        f"Kafka at {s.kafka.bootstrap_servers}",
        wait_s,
    )
    created = create_topics(s, partitions=partitions)
    for name in all_topics(s.topics):
        click.echo(f"{name} {'created' if name in created else 'exists'}")


@main.command("generate")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the six Parquet tables, events.jsonl and labels.json.",
)
@click.option("--seed", type=int, default=42, show_default=True, help="Random seed (>= 0).")
@click.option(
    "--scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiplies entity counts: 1 is 200 projects and ~12k events; 100 is ~1.1M events.",
)
@friendly_errors
def generate_cmd(out_dir: Path, seed: int, scale: float) -> None:
    """Write a synthetic platform history with labelled attacks (same seed, same bytes)."""
    import time

    from escrowguard.producers.files import (
        prepare_out_dir,
        summary_lines,
        write_history,
    )
    from escrowguard.producers.generator import check_options, generate_history
    from escrowguard.producers.progress import RichPhases

    check_options(seed, scale)
    prepare_out_dir(out_dir)
    started = time.perf_counter()
    with RichPhases() as phases:
        history = generate_history(seed, scale, progress=phases)
        sizes = write_history(history, out_dir, progress=phases)
    click.echo(f"wrote {out_dir}")
    for line in summary_lines(history, sizes, time.perf_counter() - started):
        click.echo(line)


@main.command("worker")
@click.option(
    "--models",
    "bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model bundle directory (default: the registry's promoted bundle).",
)
@click.option(
    "--consumption",
    type=click.Choice(["batch", "agent"]),
    help="Override worker.consumption for this run.",
)
@pass_ctx
@friendly_errors
def worker_cmd(ctx: Context, bundle: Path | None, consumption: str | None) -> None:
    """Run the stream scorer (a Faust worker) on KAFKA_BOOTSTRAP_SERVERS and REDIS_URL."""
    from escrowguard.stream_app.runner import run_worker

    settings = ctx.settings
    if consumption:
        settings = settings.replace(worker={"consumption": consumption})
    run_worker(settings, bundle)


# --- models: train, report, registry, recommend, suggest-goal ---------------------------


@main.command("train")
@click.option(
    "--events",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A history in the wire format (events.jsonl).",
)
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    help="A generator output directory (its events.jsonl, and labels.json if present).",
)
@click.option(
    "--labels",
    type=click.Path(dir_okay=False, path_type=Path),
    help="labels.json to score the anomaly model against (--data finds its own).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the bundle (written as OUT/<version>/, report in OUT/<version>/report).",
)
@click.option(
    "--anomaly-budget",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Share of pledges the anomaly threshold flags (default 0.04).",
)
@click.option("--promote", "do_promote", is_flag=True, help="Promote into models.registry_dir.")
@pass_ctx
@friendly_errors
def train_cmd(
    ctx: Context,
    events: Path | None,
    data: Path | None,
    labels: Path | None,
    out_dir: Path,
    anomaly_budget: float | None,
    do_promote: bool,
) -> None:
    """Train the five models on a history; write a bundle and its report."""
    import time
    from datetime import UTC, datetime

    from rich.console import Console

    from escrowguard.models.bundle import promote
    from escrowguard.models.report import comparison_table, write_report
    from escrowguard.models.serving import SERVING_FEATURES
    from escrowguard.models.train import (
        TrainingConfig,
        load_training_data,
        open_bundle,
        save_trained,
        train_models,
    )

    console = Console()
    started = time.perf_counter()
    history = load_training_data(events, data, labels)
    console.print(f"[green]✓[/] {'read':<12} {len(history.events):,} events from {history.source}")
    overrides = {} if anomaly_budget is None else {"anomaly_budget": anomaly_budget}
    trained = train_models(
        history,
        TrainingConfig.from_settings(ctx.settings, **overrides),
        progress=lambda phase, summary: console.print(f"[green]✓[/] {phase:<12} {summary}"),
        clock=time.perf_counter,
    )
    path = save_trained(trained, out_dir, datetime.now(UTC))
    report = write_report(open_bundle(path), path / "report")
    elapsed = time.perf_counter() - started
    console.print(comparison_table(trained.metrics))
    console.print(f"bundle:  {path} (version {path.name})")
    console.print(f"report:  {report}")
    console.print(f"time:    {elapsed:.1f} s")
    if do_promote:
        registry = Path(ctx.settings.models.registry_dir)
        version = promote(registry, path, SERVING_FEATURES)
        console.print(f"promoted {version} in {registry}")


@main.group("report")
def report_group() -> None:
    """Reports on what escrowguard produced."""


@report_group.command("models")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where report.md and the PNGs go (default: BUNDLE_DIR/report).",
)
@friendly_errors
def report_models_cmd(bundle_dir: Path, out_dir: Path | None) -> None:
    """Print a bundle's metrics beside the seed report's; write report.md + plots."""
    from rich.console import Console

    from escrowguard.models.report import comparison_table, write_report
    from escrowguard.models.train import open_bundle

    bundle = open_bundle(bundle_dir)
    path = write_report(bundle, out_dir or bundle_dir / "report")
    console = Console()
    console.print(comparison_table(bundle.manifest["metrics"]))
    console.print(f"report: {path}")


@main.group("models")
def models_group() -> None:
    """The model registry: promote a bundle, show the current one."""


@models_group.command("promote")
@click.argument("bundle_dir", type=click.Path(file_okay=False, path_type=Path))
@pass_ctx
@friendly_errors
def models_promote_cmd(ctx: Context, bundle_dir: Path) -> None:
    """Verify a bundle, copy it into models.registry_dir and make it CURRENT."""
    from escrowguard.models.bundle import promote
    from escrowguard.models.serving import SERVING_FEATURES

    registry = Path(ctx.settings.models.registry_dir)
    version = promote(registry, bundle_dir, SERVING_FEATURES)
    click.echo(f"promoted {version} in {registry}")


@models_group.command("current")
@pass_ctx
@friendly_errors
def models_current_cmd(ctx: Context) -> None:
    """Print the promoted bundle's version and path (exit 1 when none is)."""
    from escrowguard.models.bundle import current_version

    registry = Path(ctx.settings.models.registry_dir)
    version = current_version(registry)
    if version is None:
        click.echo(f"no bundle promoted in {registry}", err=True)
        sys.exit(1)
    click.echo(f"{version} {registry / version}")


@main.command("recommend")
@click.argument("backer_id")
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), help="Bundle dir.")
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--popular-fallback", is_flag=True, help="Unknown backer: most-backed projects.")
@pass_ctx
@friendly_errors
def recommend_cmd(
    ctx: Context, backer_id: str, bundle: Path | None, k: int, popular_fallback: bool
) -> None:
    """Top-k projects for a backer, from the bundle's SVD recommender."""
    from escrowguard.errors import DataError
    from escrowguard.models.train import bundle_path, open_bundle

    model = open_bundle(bundle_path(ctx.settings, bundle)).models["recommender"]
    if not popular_fallback and model.backer_index(backer_id) is None:
        raise DataError(
            f"backer {backer_id!r} has no pledges in the bundle's training data; "
            "--popular-fallback lists the most-backed projects instead",
            "unknown_backer",
        )
    for rank, (project_id, score) in enumerate(
        model.recommend(backer_id, k, popular_fallback=popular_fallback), 1
    ):
        click.echo(f"{rank:>3}  {project_id}  {score:.4f}")


@main.command("suggest-goal")
@click.option("--reputation", type=click.FloatRange(0, 10), required=True, help="Creator, 0-10.")
@click.option("--days", type=click.FloatRange(min=1), required=True, help="Campaign length.")
@click.option("--target", type=click.FloatRange(0, 1), default=0.7, show_default=True)
@click.option("--min-goal", type=click.FloatRange(min=0.01), default=100.0, show_default=True)
@click.option("--max-goal", type=click.FloatRange(min=0.01), default=1e6, show_default=True)
@click.option("--bundle", type=click.Path(file_okay=False, path_type=Path), help="Bundle dir.")
@pass_ctx
@friendly_errors
def suggest_goal_cmd(
    ctx: Context,
    reputation: float,
    days: float,
    target: float,
    min_goal: float,
    max_goal: float,
    bundle: Path | None,
) -> None:
    """The largest funding goal whose predicted success stays >= target (success model;
    days to the deadline at its checkpoint, other features at their training medians)."""
    from escrowguard.models.analyses import suggest_goal_with_bundle
    from escrowguard.models.train import bundle_path, open_bundle

    loaded = open_bundle(bundle_path(ctx.settings, bundle))
    s = suggest_goal_with_bundle(loaded, reputation, days, target, min_goal, max_goal)
    goal = "none" if s.goal is None else f"${s.goal:,.2f}"
    click.echo(f"suggested goal: {goal} (predicted success {s.predicted_success:.2f}, {s.reason})")
    if not s.monotone:
        click.echo(
            "note: predicted success is not monotone in the goal here; this is the "
            "largest goal found, not proven largest"
        )
    click.echo(
        f"assumes: other success features at their training medians (bundle {loaded.version})"
    )


class _SpeedType(click.ParamType):
    """``max`` or a positive multiple of real time."""

    name = "max|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from escrowguard.producers.replay_plan import parse_speed

        if value is None or isinstance(value, float):
            return value
        try:
            return parse_speed(str(value))
        except EscrowguardError as exc:
            self.fail(str(exc), param, ctx)


@main.command("replay")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option(
    "--speed",
    type=_SpeedType(),
    default="max",
    show_default=True,
    help="'max', or N: N x real time by event time (event-time gaps / N are waited).",
)
@click.option("--from", "time_from", help="Send events with occurred_at >= this (RFC 3339).")
@click.option("--until", "time_until", help="Send events with occurred_at < this (RFC 3339).")
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="At most N events per second (smooth: bursts of ~10 ms worth at most).",
)
@click.option("--topic-prefix", help="Send to PREFIX<topic> instead of topics.prefix.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where invalid lines go (JSON lines). Default: <input>.rejects.jsonl.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar (the summary still prints).")
@pass_ctx
@friendly_errors
def replay_cmd(
    ctx: Context,
    input_path: Path,
    speed: float | None,
    time_from: str | None,
    time_until: str | None,
    rate: float | None,
    topic_prefix: str | None,
    rejects_path: Path | None,
    no_progress: bool,
) -> None:
    """Send an events.jsonl (or a `generate` output dir) to the input topics, in event-time
    order. Exit 1 when any send failed, 130 when interrupted."""
    from escrowguard.producers.replay import replay_file
    from escrowguard.producers.replay_plan import parse_event_time

    summary = replay_file(
        ctx.settings,
        input_path,
        topic_prefix=topic_prefix,
        speed=speed,
        rate=rate,
        time_from=parse_event_time(time_from, "--from") if time_from else None,
        time_until=parse_event_time(time_until, "--until") if time_until else None,
        rejects_path=rejects_path,
        progress=not no_progress,
    )
    for line in summary.lines():
        click.echo(line)
    if summary.interrupted:
        sys.exit(130)
    if not summary.ok:
        sys.exit(1)


@main.command("tail")
@click.argument("stream", type=click.Choice(["alerts", "freezes", "decisions", "deadletter"]))
@click.option("--json", "as_json", is_flag=True, help="JSON lines: each message as received.")
@click.option("--from-beginning", is_flag=True, help="Start at the oldest message, not the end.")
@click.option(
    "--kind",
    help="Only this alert kind / freeze action / decision route / dead-letter reason.",
)
@click.option(
    "--idle-timeout",
    "idle_timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Exit after S seconds without a new message (default: run until Ctrl-C).",
)
@click.option("--topic-prefix", help="Read PREFIX<topic> instead of topics.prefix.")
@pass_ctx
@friendly_errors
def tail_cmd(
    ctx: Context,
    stream: str,
    as_json: bool,
    from_beginning: bool,
    kind: str | None,
    idle_timeout_s: float | None,
    topic_prefix: str | None,
) -> None:
    """Print an output topic (alerts, freezes, decisions, deadletter) as it grows."""
    from escrowguard.stream_app.tail import TailTable, describe, tail_output

    settings = ctx.settings
    if topic_prefix:
        settings = settings.replace(topics={"prefix": topic_prefix})
    table = None if as_json else TailTable()
    shown = 0
    try:
        for message in tail_output(
            settings,
            stream,
            from_beginning=from_beginning,
            kind=kind,
            idle_timeout_s=idle_timeout_s,
        ):
            if table is None:
                click.echo(message.value.decode("utf-8", errors="replace"))
            else:
                table.print(describe(message))
            shown += 1
    except KeyboardInterrupt:
        pass
    click.echo(f"{shown} message(s)", err=True)


@main.group("freezes")
def freezes_group() -> None:
    """Payout freezes: manual review."""


@freezes_group.command("release")
@click.argument("freeze_id")
@click.option("--reason", required=True, help="Why the payout is released (kept in the message).")
@click.option("--project-id", help="The frozen milestone's project (else looked up on the topic).")
@click.option("--milestone-id", help="The frozen milestone (else looked up on the topic).")
@click.option("--topic-prefix", help="Use PREFIX<topic> instead of topics.prefix.")
@pass_ctx
@friendly_errors
def freezes_release_cmd(
    ctx: Context,
    freeze_id: str,
    reason: str,
    project_id: str | None,
    milestone_id: str | None,
    topic_prefix: str | None,
) -> None:
    """Release a payout freeze after manual review (sent with acks=all)."""
    from escrowguard.outputs import encode_output
    from escrowguard.stream_app.freeze_release import release_freeze

    settings = ctx.settings
    if topic_prefix:
        settings = settings.replace(topics={"prefix": topic_prefix})
    release = release_freeze(
        settings, freeze_id, reason, project_id=project_id, milestone_id=milestone_id
    )
    click.echo(f"released {release.freeze_id} (milestone {release.milestone_id}): sent")
    click.echo(encode_output(release).decode())


@main.command("rebuild-state")
@click.option(
    "--models",
    "bundle",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model bundle directory (default: the registry's promoted bundle).",
)
@pass_ctx
@friendly_errors
def rebuild_state_cmd(ctx: Context, bundle: Path | None) -> None:
    """Rebuild Redis feature state from the input topics (paused workers resume after it)."""
    from escrowguard.stream_app.runner import rebuild_state

    summary = rebuild_state(
        ctx.settings, bundle, progress=lambda n: click.echo(f"\rdecided {n:,} events", nl=False)
    )
    click.echo(
        f"\nrebuilt state from {summary.events_decided:,} events in {summary.seconds:.1f} s "
        f"({summary.outputs_suppressed:,} outputs not re-sent)"
    )


@main.command("demo")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Where the history, the bundle, the worker log and summary.json go.",
)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--scale", type=float, default=1.0, show_default=True, help="History size (1: ~12k).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@pass_ctx
@friendly_errors
def demo_cmd(ctx: Context, out_dir: Path, seed: int, scale: float, no_progress: bool) -> None:
    """Everything end to end: servers, history, training, a worker, replay, a scored summary.

    Uses the servers named by KAFKA_BOOTSTRAP_SERVERS / REDIS_URL, else starts embedded
    ones; exits 0 when the run completed, 130 on Ctrl-C (everything started is stopped).
    """
    from escrowguard.demo import run_demo

    settings = ctx.settings  # loads them and installs logging at their level ...
    # ... but the demo prints its own story: library INFO lines (the worker's go to its log)
    # would bury it. ESCROWGUARD_LOGGING__LEVEL=INFO still shows them.
    if "ESCROWGUARD_LOGGING__LEVEL" not in os.environ:
        configure_logging("WARNING")
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # close races log ERRORs
    try:
        run_demo(
            settings, out_dir, seed=seed, scale=scale, echo=click.echo, progress=not no_progress
        )
    except KeyboardInterrupt:
        click.echo("interrupted: servers and worker stopped", err=True)
        sys.exit(130)


@main.command("bench")
@click.option(
    "--events",
    type=click.IntRange(min=1000),
    default=200_000,
    show_default=True,
    help="Events generated, replayed and drained by each consumer.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the result JSON goes (default: OUT/bench.json; details beside it).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("out/bench"),
    show_default=True,
    help="Events, bundle, logs and profiles of the run.",
)
@click.option(
    "--bootstrap-servers", help="Kafka to use (else KAFKA_BOOTSTRAP_SERVERS, else embedded)."
)
@click.option("--redis-url", help="Redis to use (else REDIS_URL, else embedded).")
@click.option(
    "--load-seconds",
    type=click.FloatRange(min=1),
    default=30.0,
    show_default=True,
    help="Duration of each offered-load level (25/50/80% of the worker's rate).",
)
@click.option(
    "--naive-events",
    type=click.IntRange(min=1),
    default=4_000,
    show_default=True,
    help="Events the naive scorer gets (every k-th of the N: the same mix).",
)
@click.option(
    "--naive-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="At most this long for the naive scorer.",
)
@click.option(
    "--two-worker-seconds",
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="At most this long for the two-worker phase (measured over what it decided).",
)
@click.option(
    "--consumption",
    type=click.Choice(["batch", "agent"]),
    help="The worker's consumption path (default: worker.consumption).",
)
@click.option(
    "--profile", is_flag=True, help="Sample the single worker with py-spy (OUT/profile-*)."
)
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True)
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@pass_ctx
@friendly_errors
def bench_cmd(
    ctx: Context,
    events: int,
    json_path: Path | None,
    out_dir: Path,
    bootstrap_servers: str | None,
    redis_url: str | None,
    load_seconds: float,
    naive_events: int,
    naive_seconds: float,
    two_worker_seconds: float,
    consumption: str | None,
    profile: bool,
    seed: int,
    no_progress: bool,
) -> None:
    """Measure the scorer against a bare Faust agent and a naive scorer (docs/performance.md).

    Prints the table and writes the JSON; exits 1 when the result is incomplete."""
    from rich.console import Console

    from escrowguard.bench.harness import BenchOptions, run_bench
    from escrowguard.bench.report import cpu_lines, problems, result_table

    settings = ctx.settings  # loads them and installs logging at their level ...
    # ... but the bench prints its own table: library INFO lines (the workers' go to their
    # logs in OUT/run/) would bury it. ESCROWGUARD_LOGGING__LEVEL=INFO still shows them.
    if "ESCROWGUARD_LOGGING__LEVEL" not in os.environ:
        configure_logging("WARNING")
        logging.getLogger("kafka").setLevel(logging.CRITICAL)  # close races log ERRORs
    if bootstrap_servers:
        settings = settings.replace(kafka={"bootstrap_servers": bootstrap_servers})
    if redis_url:
        settings = settings.replace(redis={"url": redis_url})
    options = BenchOptions(
        events=events,
        out_dir=out_dir,
        json_path=json_path,
        seed=seed,
        load_seconds=load_seconds,
        naive_events=naive_events,
        naive_seconds=naive_seconds,
        two_worker_seconds=two_worker_seconds,
        consumption=consumption,
        profile=profile,
        progress=not no_progress,
    )
    try:
        run = run_bench(settings, options)
    except KeyboardInterrupt:
        click.echo("interrupted: servers and processes stopped", err=True)
        sys.exit(130)
    Console().print(result_table(run["result"], run["details"]))
    for line in cpu_lines(run["details"]):
        click.echo(line)
    click.echo(f"json: {run['json']}")
    found = problems(run["result"])
    for problem in found:
        click.echo(f"incomplete: {problem}", err=True)
    if found:
        sys.exit(1)
