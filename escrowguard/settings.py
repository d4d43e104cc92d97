"""One frozen, validated ``Settings`` object, built once at start-up (cli.py) and passed down.

Sources, later ones winning: ``config/default.toml``; a profile file (``--config`` or
``ESCROWGUARD_CONFIG``); environment variables ``ESCROWGUARD_<SECTION>__<KEY>``; and the
conventional ``KAFKA_BOOTSTRAP_SERVERS`` / ``REDIS_URL``. An unknown key or a wrong value
raises ``ConfigError`` naming the key. Secrets are ``Secret`` values: never printed, logged
or repr'd; each may come from the value itself, its ``*_file`` twin, or the environment.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from escrowguard.errors import ConfigError

ENV_PREFIX = "ESCROWGUARD_"
DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "default.toml"


class Secret:
    """A secret string that never shows itself in repr, str or logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for handing to a client library."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('***')" if self._value else "Secret('')"

    __str__ = __repr__


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    pass


class KafkaSettings(_Section, frozen=True):
    """How to reach Kafka and how consumers behave on it."""

    bootstrap_servers: str
    client_id: str
    consumer_group: str
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"]
    sasl_mechanism: Literal["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
    sasl_username: str
    sasl_password: Secret
    sasl_password_file: str
    ssl_cafile: str
    session_timeout_ms: int
    heartbeat_interval_ms: int
    max_poll_interval_ms: int
    rebalance_timeout_ms: int
    fetch_max_wait_ms: int
    max_partition_fetch_bytes: int
    request_timeout_ms: int


class TopicSettings(_Section, frozen=True):
    """Topic naming and layout; names are ``prefix + suffix``."""

    prefix: str
    partitions: int
    replication_factor: int

    def name(self, suffix: str) -> str:
        """Full topic name for a suffix such as ``pledges`` or ``alerts``."""
        return f"{self.prefix}{suffix}"


class RedisSettings(_Section, frozen=True):
    """How to reach Redis, and the key namespace escrowguard owns there."""

    url: str
    username: str
    password: Secret
    password_file: str
    key_prefix: str
    socket_timeout_s: float
    retry_backoff_initial_s: float
    retry_backoff_max_s: float


class WorkerSettings(_Section, frozen=True):
    """The stream worker: batching, ordering, input limits."""

    consumption: Literal["batch", "agent"]
    batch_max_events: int
    batch_max_wait_ms: int
    reorder_buffer_max_events: int
    prefix_cache_max_entries: int
    idle_partition_ms: int
    max_future_skew_s: int
    max_message_bytes: int
    unknown_fields: Literal["reject", "ignore"]
    dedupe_ttl_s: int
    stream_buffer_maxsize: int


class FeatureSettings(_Section, frozen=True):
    """Feature windows (event time) and state lifetimes."""

    backer_history_window_s: int
    backer_burst_window_s: int
    backer_day_window_s: int
    wallet_window_s: int
    late_pledge_window_s: int
    project_state_ttl_s: int
    max_members_per_read: int


class ThresholdSettings(_Section, frozen=True):
    """Decision thresholds of the rules and models (calibrated ones live in the bundle)."""

    risk_auto_approve_below: float
    risk_freeze_at: float
    approval_target: float
    project_at_risk_below: float
    project_checkpoint_fraction: float
    sybil_max_hhi: float
    sybil_min_votes: int
    sybil_min_late_weight_share: float
    sybil_max_shared_wallet_share: float
    sybil_min_shared_wallet_voters: int
    exit_scam_min_funding_ratio: float
    exit_scam_low_approval: float
    exit_scam_min_low_milestones: int
    drift_max_shift: float
    drift_min_samples: int
    retrain_min_accuracy: float
    retrain_after_labels: int


class BanditSettings(_Section, frozen=True):
    """Thompson sampling over the payout-release arms."""

    arms: tuple[str, ...]
    prior_alpha: float
    prior_beta: float
    window_days: int


class ModelSettings(_Section, frozen=True):
    """Where model bundles are found."""

    registry_dir: str
    bundle_dir: str


class HttpSettings(_Section, frozen=True):
    """The worker's HTTP views."""

    bind: str
    port: int
    api_key: Secret
    api_key_file: str
    rate_limit_per_minute: int


class LoggingSettings(_Section, frozen=True):
    """Log level; the format is always one key=value line per event."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]


class Settings(_Section, frozen=True):
    """Every setting escrowguard reads. Build it with ``load_settings``."""

    kafka: KafkaSettings
    topics: TopicSettings
    redis: RedisSettings
    worker: WorkerSettings
    features: FeatureSettings
    thresholds: ThresholdSettings
    bandit: BanditSettings
    models: ModelSettings
    http: HttpSettings
    logging: LoggingSettings

    def replace(self, **sections: Mapping[str, Any]) -> Settings:
        """A copy with some keys of some sections changed, validated like a load.

        >>> s = load_settings(env={})
        >>> s.replace(topics={"prefix": "bt."}).topics.name("alerts")
        'bt.alerts'
        """
        raw = _to_raw(self)
        for section, values in sections.items():
            raw.setdefault(section, {}).update(values)
        return _build(raw, env={})


def load_settings(
    profile: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Load defaults, then ``profile``, then environment overrides; validate everything."""
    env = os.environ if env is None else env
    raw = _read_toml(DEFAULT_CONFIG)
    profile = profile or env.get("ESCROWGUARD_CONFIG") or None
    if profile:
        _merge(raw, _read_toml(Path(profile)), where=str(profile))
    _merge(raw, _env_overrides(raw, env), where="environment")
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        raw["kafka"]["bootstrap_servers"] = env["KAFKA_BOOTSTRAP_SERVERS"]
    if env.get("REDIS_URL"):
        raw["redis"]["url"] = env["REDIS_URL"]
    return _build(raw, env)


def _build(raw: dict[str, Any], env: Mapping[str, str]) -> Settings:
    _resolve_secret_files(raw)
    try:
        settings = msgspec.convert(raw, Settings, dec_hook=_secret_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    _check(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _merge(base: dict[str, Any], over: Mapping[str, Any], where: str) -> None:
    for section, values in over.items():
        if section not in base or not isinstance(values, Mapping):
            raise ConfigError(f"unknown config section '{section}' (from {where})")
        for key, value in values.items():
            if key not in base[section]:
                raise ConfigError(f"unknown config key '{section}.{key}' (from {where})")
            base[section][key] = value


def _env_overrides(raw: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, dict[str, Any]] = {}
    for name, text in env.items():
        if not name.startswith(ENV_PREFIX) or name == "ESCROWGUARD_CONFIG":
            continue
        section, sep, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if not sep or section not in raw or key not in raw[section]:
            raise ConfigError(
                f"unknown setting in environment variable {name}: expected "
                f"{ENV_PREFIX}<SECTION>__<KEY> naming a key of config/default.toml"
            )
        out.setdefault(section, {})[key] = _parse_env_value(text, raw[section][key], name)
    return out


def _parse_env_value(text: str, default: Any, name: str) -> Any:
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={text!r} is not a boolean")
    if isinstance(default, int | float | list):
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"{name}={text!r} is not a valid {type(default).__name__}") from None
    return text


def _resolve_secret_files(raw: dict[str, Any]) -> None:
    for section, secret, file_key in (
        ("kafka", "sasl_password", "sasl_password_file"),
        ("redis", "password", "password_file"),
        ("http", "api_key", "api_key_file"),
    ):
        path = raw[section].get(file_key)
        if path:
            if raw[section].get(secret):
                raise ConfigError(
                    f"both {section}.{secret} and {section}.{file_key} are set: choose one"
                )
            try:
                value = Path(path).read_text().strip()
            except OSError as exc:
                raise ConfigError(
                    f"{section}.{file_key}: cannot read {path}: {exc.strerror}"
                ) from None
            if not value:
                # an empty file would silently turn the secret off (no API key: no auth)
                raise ConfigError(
                    f"{section}.{file_key}: {path} is empty (a half-configured secret)"
                )
            raw[section][secret] = value


def _secret_hook(kind: type, value: Any) -> Any:
    if kind is Secret:
        if isinstance(value, Secret):
            return value
        if isinstance(value, str):
            return Secret(value)
        raise ValueError("expected a string")
    raise NotImplementedError


def _describe(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if " - at `$." in text:
        message, path = text.rsplit(" - at `$.", 1)
        return f"config key '{path.rstrip('`')}': {message}"
    if "unknown field" in text or "missing required field" in text:
        return f"config: {text}"
    return f"invalid configuration: {text}"


def _check(s: Settings) -> None:
    """Cross-key rules that types alone cannot state."""

    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"config key '{key}': {why}")

    need(s.topics.partitions >= 1, "topics.partitions", "must be >= 1")
    need(bool(s.topics.prefix), "topics.prefix", "must not be empty")
    need(s.worker.batch_max_events >= 1, "worker.batch_max_events", "must be >= 1")
    need(s.worker.batch_max_wait_ms >= 0, "worker.batch_max_wait_ms", "must be >= 0")
    need(
        s.worker.reorder_buffer_max_events >= s.worker.batch_max_events,
        "worker.reorder_buffer_max_events",
        "must be >= worker.batch_max_events",
    )
    need(s.worker.prefix_cache_max_entries >= 0, "worker.prefix_cache_max_entries", "must be >= 0")
    need(s.worker.max_message_bytes >= 1024, "worker.max_message_bytes", "must be >= 1024")
    need(s.worker.dedupe_ttl_s >= 3600, "worker.dedupe_ttl_s", "must be >= 3600")
    need(1 <= s.http.port <= 65535, "http.port", "must be a TCP port (1-65535)")
    need(s.http.rate_limit_per_minute >= 1, "http.rate_limit_per_minute", "must be >= 1")
    need(len(s.bandit.arms) >= 2, "bandit.arms", "needs at least two arms")
    for key in (
        "risk_auto_approve_below",
        "risk_freeze_at",
        "approval_target",
        "project_at_risk_below",
        "project_checkpoint_fraction",
        "sybil_max_hhi",
        "sybil_min_late_weight_share",
        "sybil_max_shared_wallet_share",
        "exit_scam_low_approval",
        "drift_max_shift",
        "retrain_min_accuracy",
    ):
        value = getattr(s.thresholds, key)
        need(0.0 <= value <= 1.0, f"thresholds.{key}", f"must be within 0-1, got {value}")
    need(
        s.thresholds.risk_auto_approve_below <= s.thresholds.risk_freeze_at,
        "thresholds.risk_auto_approve_below",
        "must be <= thresholds.risk_freeze_at",
    )
    k = s.kafka
    if k.security_protocol.startswith("SASL"):
        need(bool(k.sasl_mechanism), "kafka.sasl_mechanism", f"required with {k.security_protocol}")
        need(bool(k.sasl_username), "kafka.sasl_username", f"required with {k.security_protocol}")
        need(
            bool(k.sasl_password),
            "kafka.sasl_password",
            f"required with {k.security_protocol} (or kafka.sasl_password_file)",
        )
    else:
        need(
            not (k.sasl_mechanism or k.sasl_username or k.sasl_password),
            "kafka.sasl_mechanism" if k.sasl_mechanism else "kafka.sasl_username",
            f"SASL settings are set but kafka.security_protocol is {k.security_protocol}: "
            "set it to SASL_PLAINTEXT or SASL_SSL, or remove them",
        )
    r = s.redis
    need(
        not (r.username and not r.password),
        "redis.password",
        "redis.username is set without a password (half-configured secret)",
    )


def _to_raw(settings: Settings) -> dict[str, Any]:
    raw: dict[str, Any] = msgspec.to_builtins(
        settings, enc_hook=lambda v: v.reveal() if isinstance(v, Secret) else v
    )
    # secrets were already resolved from their files
    for section, file_key in (
        ("kafka", "sasl_password_file"),
        ("redis", "password_file"),
        ("http", "api_key_file"),
    ):
        raw[section][file_key] = ""
    return raw


def settings_env(settings: Settings) -> dict[str, str]:
    """``ESCROWGUARD_<SECTION>__<KEY>`` variables that make a child process load ``settings``
    (only the keys that differ from the defaults; secrets included, so pass the result to a
    child's environment, never to a log)."""
    defaults = _to_raw(load_settings(env={}))
    env: dict[str, str] = {}
    for section, values in _to_raw(settings).items():
        for key, value in values.items():
            if value == defaults[section][key]:
                continue
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list | tuple):
                text = json.dumps(list(value))  # a JSON array of strings or numbers is TOML too
            else:
                text = str(value)
            env[f"{ENV_PREFIX}{section.upper()}__{key.upper()}"] = text
    return env
