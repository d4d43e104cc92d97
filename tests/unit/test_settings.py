"""Settings: defaults, profile files, ESCROWGUARD_* overrides, cross-key checks, secrets.

Every failure must be a ``ConfigError`` whose message names the key (or the environment
variable) at fault. ``load_settings(env=...)`` never reads the real environment here.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from escrowguard import settings as settings_module
from escrowguard.errors import ConfigError
from escrowguard.events import DEFAULT_MAX_MESSAGE_BYTES
from escrowguard.settings import (
    DEFAULT_CONFIG,
    Secret,
    Settings,
    _parse_env_value,
    load_settings,
    settings_env,
)

PASSWORD = "hunter2-Sup3r-s3cret"
SASL = {
    "ESCROWGUARD_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "ESCROWGUARD_KAFKA__SASL_MECHANISM": "SCRAM-SHA-256",
    "ESCROWGUARD_KAFKA__SASL_USERNAME": "scorer",
}


def config_error(profile: Path | None = None, /, **env: str) -> ConfigError:
    """The ConfigError that loading with ``env`` (and ``profile``) raises."""
    with pytest.raises(ConfigError) as info:
        load_settings(profile, env=env)
    return info.value


def write_profile(tmp_path: Path, text: str) -> Path:
    """A profile TOML file merged over the defaults."""
    path = tmp_path / "profile.toml"
    path.write_text(text)
    return path


# --- defaults ------------------------------------------------------------------------------


def test_doctests() -> None:
    result = doctest.testmod(settings_module)
    assert result.attempted > 0
    assert result.failed == 0


def test_defaults_load() -> None:
    s = load_settings(env={})
    assert isinstance(s, Settings)
    assert s.topics.prefix == "escrow."
    assert s.topics.name("pledges") == "escrow.pledges"
    assert s.worker.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES == 64 * 1024
    assert s.worker.unknown_fields == "reject"
    assert s.thresholds.risk_auto_approve_below == 0.2  # DESIGN.md: auto_approve below 0.2
    assert s.bandit.arms == ("immediate", "review_48h", "tranches_50_50")
    assert s.kafka.security_protocol == "PLAINTEXT"
    assert s.kafka.sasl_password == Secret("") and not s.kafka.sasl_password
    assert not s.redis.password and not s.http.api_key
    assert s.kafka.bootstrap_servers == "" and s.redis.url == ""


def test_defaults_ignore_unrelated_environment_variables() -> None:
    env = {"PATH": "/bin", "ESCROWGUARDX": "1", "escrowguard_worker__batch_max_events": "x"}
    assert load_settings(env=env) == load_settings(env={})


def test_settings_are_frozen() -> None:
    s = load_settings(env={})
    with pytest.raises(AttributeError):
        s.worker.batch_max_events = 1  # type: ignore[misc]


def test_default_file_is_the_one_in_the_repository() -> None:
    repository = Path(__file__).resolve().parents[2]
    assert repository / "config" / "default.toml" == DEFAULT_CONFIG


# --- environment overrides -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "section", "key", "value"),
    [
        ("ESCROWGUARD_WORKER__BATCH_MAX_EVENTS", "1000", "worker", "batch_max_events", 1000),
        ("ESCROWGUARD_HTTP__PORT", "8080", "http", "port", 8080),
        ("ESCROWGUARD_THRESHOLDS__RISK_FREEZE_AT", "0.9", "thresholds", "risk_freeze_at", 0.9),
        ("ESCROWGUARD_REDIS__SOCKET_TIMEOUT_S", "2", "redis", "socket_timeout_s", 2.0),
        ("ESCROWGUARD_REDIS__SOCKET_TIMEOUT_S", "2.5e-1", "redis", "socket_timeout_s", 0.25),
        (
            "ESCROWGUARD_BANDIT__ARMS",
            '["fast", "slow"]',
            "bandit",
            "arms",
            ("fast", "slow"),
        ),
        ("ESCROWGUARD_TOPICS__PREFIX", "bt.2026.", "topics", "prefix", "bt.2026."),
        ("ESCROWGUARD_MODELS__BUNDLE_DIR", "/tmp/b 1", "models", "bundle_dir", "/tmp/b 1"),
        ("ESCROWGUARD_WORKER__UNKNOWN_FIELDS", "ignore", "worker", "unknown_fields", "ignore"),
        ("ESCROWGUARD_LOGGING__LEVEL", "DEBUG", "logging", "level", "DEBUG"),
    ],
    ids=[
        "int",
        "port",
        "float",
        "float-from-int",
        "float-exponent",
        "list",
        "str",
        "path",
        "choice",
        "level",
    ],
)
def test_env_override_of_each_type(
    name: str, text: str, section: str, key: str, value: Any
) -> None:
    s = load_settings(env={name: text})
    got = getattr(getattr(s, section), key)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["1", "true", "TRUE", " yes ", "on"])
def test_env_bool_true(text: str) -> None:
    # config/default.toml has no boolean key today; the parser is ready for one
    assert _parse_env_value(text, False, "ESCROWGUARD_X__FLAG") is True


@pytest.mark.parametrize("text", ["0", "false", "No", "off"])
def test_env_bool_false(text: str) -> None:
    assert _parse_env_value(text, True, "ESCROWGUARD_X__FLAG") is False


@pytest.mark.parametrize("text", ["", "2", "enabled", "t"])
def test_env_bool_invalid(text: str) -> None:
    with pytest.raises(ConfigError, match=r"ESCROWGUARD_X__FLAG=.* is not a boolean"):
        _parse_env_value(text, True, "ESCROWGUARD_X__FLAG")


def test_env_overrides_several_sections_at_once() -> None:
    s = load_settings(
        env={
            "ESCROWGUARD_TOPICS__PARTITIONS": "8",
            "ESCROWGUARD_FEATURES__WALLET_WINDOW_S": "3600",
            "ESCROWGUARD_HTTP__BIND": "0.0.0.0",
        }
    )
    assert (s.topics.partitions, s.features.wallet_window_s, s.http.bind) == (8, 3600, "0.0.0.0")


def test_conventional_server_variables_win() -> None:
    s = load_settings(
        env={
            "ESCROWGUARD_KAFKA__BOOTSTRAP_SERVERS": "a:1",
            "KAFKA_BOOTSTRAP_SERVERS": "k1:9092,k2:9092",
            "REDIS_URL": "redis://localhost:6380/2",
        }
    )
    assert s.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert s.redis.url == "redis://localhost:6380/2"


def test_profile_then_environment(tmp_path: Path) -> None:
    profile = write_profile(tmp_path, "[worker]\nbatch_max_events = 200\nbatch_max_wait_ms = 5\n")
    s = load_settings(profile, env={"ESCROWGUARD_WORKER__BATCH_MAX_EVENTS": "300"})
    assert (s.worker.batch_max_events, s.worker.batch_max_wait_ms) == (300, 5)
    via_env = load_settings(env={"ESCROWGUARD_CONFIG": str(profile)})
    assert via_env.worker.batch_max_events == 200


@pytest.mark.parametrize(
    "name",
    [
        "ESCROWGUARD_WORKER__NOPE",
        "ESCROWGUARD_NOPE__BATCH_MAX_EVENTS",
        "ESCROWGUARD_WORKER_BATCH_MAX_EVENTS",  # one underscore: no section separator
        "ESCROWGUARD_BATCH_MAX_EVENTS",
        "ESCROWGUARD_WORKER__BATCH_MAX_EVENTS__X",
    ],
)
def test_unknown_env_key_fails_naming_it(name: str) -> None:
    err = config_error(**{name: "1"})
    assert name in str(err)
    assert err.reason == "invalid_config"


@pytest.mark.parametrize(
    ("name", "text", "key"),
    [
        ("ESCROWGUARD_WORKER__BATCH_MAX_EVENTS", "abc", "ESCROWGUARD_WORKER__BATCH_MAX_EVENTS"),
        ("ESCROWGUARD_WORKER__BATCH_MAX_EVENTS", "", "ESCROWGUARD_WORKER__BATCH_MAX_EVENTS"),
        ("ESCROWGUARD_WORKER__BATCH_MAX_EVENTS", "1.5", "worker.batch_max_events"),
        ("ESCROWGUARD_WORKER__BATCH_MAX_EVENTS", "true", "worker.batch_max_events"),
        ("ESCROWGUARD_WORKER__BATCH_MAX_EVENTS", '"500"', "worker.batch_max_events"),
        (
            "ESCROWGUARD_THRESHOLDS__RISK_FREEZE_AT",
            "high",
            "ESCROWGUARD_THRESHOLDS__RISK_FREEZE_AT",
        ),
        ("ESCROWGUARD_THRESHOLDS__RISK_FREEZE_AT", '"0.5"', "thresholds.risk_freeze_at"),
        ("ESCROWGUARD_BANDIT__ARMS", "a,b", "ESCROWGUARD_BANDIT__ARMS"),
        ("ESCROWGUARD_BANDIT__ARMS", "[1, 2]", "bandit.arms"),
        ("ESCROWGUARD_WORKER__UNKNOWN_FIELDS", "drop", "worker.unknown_fields"),
        ("ESCROWGUARD_KAFKA__SECURITY_PROTOCOL", "TLS", "kafka.security_protocol"),
        ("ESCROWGUARD_LOGGING__LEVEL", "debug", "logging.level"),
    ],
)
def test_wrong_env_value_fails_naming_the_key(name: str, text: str, key: str) -> None:
    err = config_error(**{name: text})
    assert key in str(err), str(err)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker]\nnope = 1\n", "unknown config key 'worker.nope'"),
        ("[nope]\nx = 1\n", "unknown config section 'nope'"),
        ("worker = 1\n", "unknown config section 'worker'"),
        ('[worker]\nbatch_max_events = "many"\n', "config key 'worker.batch_max_events'"),
        ("[worker]\nbatch_max_events = true\n", "config key 'worker.batch_max_events'"),
        ("[worker]\nbatch_max_events = 1.0\n", "config key 'worker.batch_max_events'"),
        ("[http]\nport = [6066]\n", "config key 'http.port'"),
        ("[topics]\nprefix = 7\n", "config key 'topics.prefix'"),
        ('[bandit]\narms = "immediate"\n', "config key 'bandit.arms'"),
        ("[redis]\npassword = 5\n", "config key 'redis.password'"),
        ('[thresholds]\nsybil_max_hhi = "0.5"\n', "config key 'thresholds.sybil_max_hhi'"),
        ("[worker\n", "not valid TOML"),
    ],
)
def test_wrong_toml_key_or_value_fails_naming_it(tmp_path: Path, text: str, message: str) -> None:
    profile = write_profile(tmp_path, text)
    err = config_error(profile)
    assert message in str(err), str(err)
    if "TOML" in message:
        assert str(profile) in str(err)


def test_missing_profile_file(tmp_path: Path) -> None:
    err = config_error(tmp_path / "nope.toml")
    assert "nope.toml" in str(err) and "does not exist" in str(err)


# --- cross-key checks (_check) -------------------------------------------------------------

THRESHOLDS_0_1 = [
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
]


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"TOPICS__PARTITIONS": "0"}, "topics.partitions"),
        ({"TOPICS__PREFIX": ""}, "topics.prefix"),
        ({"WORKER__BATCH_MAX_EVENTS": "0"}, "worker.batch_max_events"),
        ({"WORKER__BATCH_MAX_WAIT_MS": "-1"}, "worker.batch_max_wait_ms"),
        (
            {"WORKER__BATCH_MAX_EVENTS": "2000", "WORKER__REORDER_BUFFER_MAX_EVENTS": "1999"},
            "worker.reorder_buffer_max_events",
        ),
        ({"WORKER__PREFIX_CACHE_MAX_ENTRIES": "-1"}, "worker.prefix_cache_max_entries"),
        ({"WORKER__MAX_MESSAGE_BYTES": "1023"}, "worker.max_message_bytes"),
        ({"WORKER__DEDUPE_TTL_S": "3599"}, "worker.dedupe_ttl_s"),
        ({"HTTP__PORT": "0"}, "http.port"),
        ({"HTTP__PORT": "65536"}, "http.port"),
        ({"HTTP__RATE_LIMIT_PER_MINUTE": "0"}, "http.rate_limit_per_minute"),
        ({"BANDIT__ARMS": '["only"]'}, "bandit.arms"),
        (
            {"THRESHOLDS__RISK_AUTO_APPROVE_BELOW": "0.9", "THRESHOLDS__RISK_FREEZE_AT": "0.8"},
            "thresholds.risk_auto_approve_below",
        ),
        ({"THRESHOLDS__RISK_FREEZE_AT": "nan"}, "thresholds.risk_freeze_at"),
    ],
)
def test_cross_key_checks(env: dict[str, str], key: str) -> None:
    err = config_error(**{f"ESCROWGUARD_{k}": v for k, v in env.items()})
    assert f"config key '{key}'" in str(err), str(err)


@pytest.mark.parametrize("key", THRESHOLDS_0_1)
@pytest.mark.parametrize("value", ["-0.01", "1.01"])
def test_thresholds_outside_0_to_1(key: str, value: str) -> None:
    err = config_error(**{f"ESCROWGUARD_THRESHOLDS__{key.upper()}": value})
    assert f"config key 'thresholds.{key}'" in str(err)
    assert "0-1" in str(err)


@pytest.mark.parametrize("key", THRESHOLDS_0_1)
def test_thresholds_at_their_bounds_are_accepted(key: str) -> None:
    value = "0" if key == "risk_auto_approve_below" else "1"
    load_settings(env={f"ESCROWGUARD_THRESHOLDS__{key.upper()}": value})


def test_cross_key_bounds_are_inclusive() -> None:
    s = load_settings(
        env={
            "ESCROWGUARD_WORKER__BATCH_MAX_EVENTS": "7",
            "ESCROWGUARD_WORKER__REORDER_BUFFER_MAX_EVENTS": "7",
            "ESCROWGUARD_WORKER__MAX_MESSAGE_BYTES": "1024",
            "ESCROWGUARD_WORKER__DEDUPE_TTL_S": "3600",
            "ESCROWGUARD_HTTP__PORT": "65535",
            "ESCROWGUARD_THRESHOLDS__RISK_AUTO_APPROVE_BELOW": "0.5",
            "ESCROWGUARD_THRESHOLDS__RISK_FREEZE_AT": "0.5",
        }
    )
    assert s.worker.reorder_buffer_max_events == s.worker.batch_max_events == 7


def test_replace_is_validated_like_a_load() -> None:
    s = load_settings(env={})
    assert s.replace(worker={"batch_max_events": 10}).worker.batch_max_events == 10
    with pytest.raises(ConfigError, match=r"'worker\.reorder_buffer_max_events'"):
        s.replace(worker={"batch_max_events": 10**9})
    with pytest.raises(ConfigError, match=r"'http\.port'"):
        s.replace(http={"port": "6066"})


# --- secrets -------------------------------------------------------------------------------


def test_secret_from_its_value() -> None:
    s = load_settings(env={"ESCROWGUARD_REDIS__PASSWORD": PASSWORD})
    assert isinstance(s.redis.password, Secret)
    assert s.redis.password.reveal() == PASSWORD


@pytest.mark.parametrize(
    ("section", "secret", "file_key"),
    [
        ("redis", "password", "password_file"),
        ("http", "api_key", "api_key_file"),
        ("kafka", "sasl_password", "sasl_password_file"),
    ],
)
def test_secret_from_its_file_twin(
    tmp_path: Path, section: str, secret: str, file_key: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(PASSWORD + "\n")  # the trailing newline of `echo` is not part of it
    env = {f"ESCROWGUARD_{section.upper()}__{file_key.upper()}": str(path)}
    if section == "kafka":
        env |= SASL
    s = load_settings(env=env)
    assert getattr(getattr(s, section), secret).reveal() == PASSWORD


@pytest.mark.parametrize(
    ("section", "secret", "file_key"),
    [
        ("redis", "password", "password_file"),
        ("http", "api_key", "api_key_file"),
        ("kafka", "sasl_password", "sasl_password_file"),
    ],
)
def test_secret_and_its_file_both_set_is_an_error(
    tmp_path: Path, section: str, secret: str, file_key: str
) -> None:
    path = tmp_path / "secret"
    path.write_text(PASSWORD)
    err = config_error(
        **{
            f"ESCROWGUARD_{section.upper()}__{secret.upper()}": "other",
            f"ESCROWGUARD_{section.upper()}__{file_key.upper()}": str(path),
        }
    )
    assert f"{section}.{secret}" in str(err) and f"{section}.{file_key}" in str(err)
    assert "other" not in str(err) and PASSWORD not in str(err)


def test_secret_file_and_value_both_set_across_profile_and_env(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(PASSWORD)
    profile = write_profile(tmp_path, f'[redis]\npassword_file = "{path}"\n')
    err = config_error(profile, ESCROWGUARD_REDIS__PASSWORD="x")
    assert "redis.password_file" in str(err)


def test_unreadable_secret_file_names_the_key(tmp_path: Path) -> None:
    err = config_error(ESCROWGUARD_REDIS__PASSWORD_FILE=str(tmp_path / "missing"))
    assert "redis.password_file" in str(err) and "missing" in str(err)


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"ESCROWGUARD_REDIS__USERNAME": "scorer"}, "redis.password"),
        (
            {
                "ESCROWGUARD_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
                "ESCROWGUARD_KAFKA__SASL_USERNAME": "u",
            },
            "kafka.sasl_mechanism",
        ),
        (SASL, "kafka.sasl_password"),  # mechanism and user, no password
        (
            {k: v for k, v in SASL.items() if "USERNAME" not in k}
            | {"ESCROWGUARD_KAFKA__SASL_PASSWORD": PASSWORD},
            "kafka.sasl_username",
        ),
        (
            {"ESCROWGUARD_KAFKA__SASL_MECHANISM": "PLAIN"},  # mechanism, no password, no SASL
            "kafka.sasl_mechanism",
        ),
        ({"ESCROWGUARD_KAFKA__SASL_USERNAME": "u"}, "kafka.sasl_username"),
        ({"ESCROWGUARD_KAFKA__SASL_PASSWORD": PASSWORD}, "kafka.sasl_username"),
        (
            {
                "ESCROWGUARD_KAFKA__SECURITY_PROTOCOL": "SSL",
                "ESCROWGUARD_KAFKA__SASL_USERNAME": "u",
                "ESCROWGUARD_KAFKA__SASL_PASSWORD": PASSWORD,
            },
            "kafka.sasl_username",
        ),
    ],
    ids=[
        "redis-user-no-password",
        "sasl-no-mechanism",
        "sasl-no-password",
        "sasl-no-user",
        "mechanism-without-sasl",
        "user-without-sasl",
        "password-without-sasl",
        "credentials-with-ssl",
    ],
)
def test_half_configured_secrets_are_refused(env: dict[str, str], key: str) -> None:
    err = config_error(**env)
    assert f"config key '{key}'" in str(err), str(err)
    assert PASSWORD not in str(err)


def test_complete_secrets_are_accepted(tmp_path: Path) -> None:
    s = load_settings(
        env=SASL
        | {
            "ESCROWGUARD_KAFKA__SASL_PASSWORD": PASSWORD,
            "ESCROWGUARD_REDIS__USERNAME": "scorer",
            "ESCROWGUARD_REDIS__PASSWORD": PASSWORD,
        }
    )
    assert s.kafka.sasl_password.reveal() == s.redis.password.reveal() == PASSWORD
    # a Redis password without a user name is the classic AUTH form
    assert load_settings(env={"ESCROWGUARD_REDIS__PASSWORD": PASSWORD}).redis.username == ""


def test_secret_never_shows_its_value() -> None:
    secret = Secret(PASSWORD)
    for text in (repr(secret), str(secret), f"{secret}", f"{secret!r}", "{}".format(secret)):  # noqa: UP032
        assert PASSWORD not in text
        assert "***" in text
    assert repr(Secret("")) == "Secret('')"
    assert secret == Secret(PASSWORD) and secret != Secret("other") and secret != PASSWORD
    assert bool(secret) and not Secret("")
    assert hash(secret) == hash(Secret(PASSWORD))
    with pytest.raises(AttributeError):
        secret.__dict__  # noqa: B018  (slots: no instance dict to dump)


def test_settings_repr_never_shows_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_text(PASSWORD + "-file")
    s = load_settings(
        env=SASL
        | {
            "ESCROWGUARD_KAFKA__SASL_PASSWORD": PASSWORD,
            "ESCROWGUARD_REDIS__PASSWORD": PASSWORD,
            "ESCROWGUARD_HTTP__API_KEY_FILE": str(path),
        }
    )
    for text in (repr(s), str(s), repr(s.kafka), repr(s.redis), repr(s.http)):
        assert PASSWORD not in text
    assert re.search(r"sasl_password=Secret\('\*\*\*'\)", repr(s))


def test_secret_type_is_kept_by_msgspec() -> None:
    s = load_settings(env={"ESCROWGUARD_HTTP__API_KEY": PASSWORD})
    assert msgspec.structs.replace(s.http, port=1).api_key == Secret(PASSWORD)


# --- handing settings to a child process ---------------------------------------------------


def test_settings_env_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_text(PASSWORD)
    s = load_settings(
        env=SASL
        | {
            "ESCROWGUARD_KAFKA__SASL_PASSWORD_FILE": str(path),
            "ESCROWGUARD_TOPICS__PREFIX": "t1.",
            "ESCROWGUARD_BANDIT__ARMS": '["a", "b"]',
            "ESCROWGUARD_THRESHOLDS__DRIFT_MAX_SHIFT": "0.35",
            "ESCROWGUARD_WORKER__UNKNOWN_FIELDS": "ignore",
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        }
    )
    env = settings_env(s)
    assert "ESCROWGUARD_KAFKA__SASL_PASSWORD_FILE" not in env  # the file was read once
    loaded = load_settings(env=env)
    assert loaded.kafka.sasl_password_file == ""  # the child gets the value, not the path
    assert loaded == s.replace(kafka={"sasl_password_file": ""})
    assert loaded.kafka.sasl_password.reveal() == PASSWORD
    assert settings_env(load_settings(env={})) == {}
