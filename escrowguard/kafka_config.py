"""Client options for aiokafka and kafka-python, from ``settings.kafka``, in one place.

Security settings (SASL PLAIN/SCRAM, TLS) map onto both clients' keyword arguments; the
password is handed over with ``Secret.reveal()`` here and nowhere else.
"""

from __future__ import annotations

import ssl
from typing import Any

from escrowguard.errors import ConfigError
from escrowguard.settings import KafkaSettings


def _bootstrap(k: KafkaSettings) -> list[str]:
    servers = [s.strip() for s in k.bootstrap_servers.split(",") if s.strip()]
    if not servers:
        raise ConfigError(
            "config key 'kafka.bootstrap_servers' is empty: set KAFKA_BOOTSTRAP_SERVERS, or run "
            "`escrowguard infra up` and use the address it prints"
        )
    return servers


def _ssl_context(k: KafkaSettings) -> ssl.SSLContext | None:
    if "SSL" not in k.security_protocol:
        return None
    context = ssl.create_default_context(cafile=k.ssl_cafile or None)
    return context


def client_options(k: KafkaSettings, client_suffix: str = "") -> dict[str, Any]:
    """Keyword arguments every client takes, aiokafka and kafka-python alike (their names
    for servers, identity, TLS and SASL options are the same)."""
    opts: dict[str, Any] = {
        "bootstrap_servers": _bootstrap(k),
        "client_id": f"{k.client_id}-{client_suffix}" if client_suffix else k.client_id,
        "security_protocol": k.security_protocol,
        "request_timeout_ms": k.request_timeout_ms,
    }
    context = _ssl_context(k)
    if context is not None:
        opts["ssl_context"] = context
    if k.security_protocol.startswith("SASL"):
        opts.update(
            sasl_mechanism=k.sasl_mechanism,
            sasl_plain_username=k.sasl_username,
            sasl_plain_password=k.sasl_password.reveal(),
        )
    return opts


def aiokafka_consumer(k: KafkaSettings, group: str | None) -> dict[str, Any]:
    """aiokafka consumer options: manual commits, group timings tuned for the broker."""
    return {
        **client_options(k, client_suffix="in"),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": k.session_timeout_ms,
        "heartbeat_interval_ms": k.heartbeat_interval_ms,
        "max_poll_interval_ms": k.max_poll_interval_ms,
        "rebalance_timeout_ms": k.rebalance_timeout_ms,
        "fetch_max_wait_ms": k.fetch_max_wait_ms,
        "max_partition_fetch_bytes": k.max_partition_fetch_bytes,
        "isolation_level": "read_uncommitted",
    }


def faust_broker_url(k: KafkaSettings) -> str:
    """Faust's ``broker`` setting: ``kafka://host:port;kafka://host:port``."""
    return ";".join(f"kafka://{server}" for server in _bootstrap(k))
