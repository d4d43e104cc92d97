"""One root error for escrowguard, one subclass per boundary, each with a reason code.

Adapters translate library errors into these (``raise StoreError(...) from exc``) so a
caller never has to know which library sits behind a boundary.
"""

from __future__ import annotations


class EscrowguardError(Exception):
    """Root of every error escrowguard raises on purpose.

    ``reason`` is a short machine-readable code (snake_case); ``str(err)`` is a message a
    user can act on.
    """

    default_reason = "error"

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or self.default_reason

    @property
    def message(self) -> str:
        """The human message, without the reason code."""
        return str(self.args[0]) if self.args else ""


class ConfigError(EscrowguardError):
    """A setting is missing, unknown or has a wrong value; the message names the key."""

    default_reason = "invalid_config"


class DecodeError(EscrowguardError):
    """An input message breaks the wire contract; ``reason`` says which rule."""

    default_reason = "invalid_event"

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message, reason)
        self.field = field


class BundleError(EscrowguardError):
    """A model bundle is missing, tampered with, truncated or incompatible."""

    default_reason = "invalid_bundle"


class StoreError(EscrowguardError):
    """The feature store (Redis) failed or is unreachable."""

    default_reason = "store_unavailable"


class PublishError(EscrowguardError):
    """Sending to Kafka failed (topic missing, broker unreachable, send not acknowledged)."""

    default_reason = "publish_failed"


class InfraError(EscrowguardError):
    """The embedded broker or Redis could not be started or reached."""

    default_reason = "infra_failed"


class DataError(EscrowguardError):
    """A history or table given to a command is unusable (empty, inconsistent, unreadable)."""

    default_reason = "invalid_data"
