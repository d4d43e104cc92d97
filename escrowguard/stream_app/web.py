"""HTTP views of a worker (Faust web, bound to loopback unless configured otherwise).

- ``GET /health``: 200 when the worker has decided a batch since its last failure, else 503;
  503 with ``redis_state_lost`` (the reason and the action to take) while Redis has lost the
  state and the worker decides nothing (``state_marker.py``).
- ``GET /metrics``: Prometheus text.
- ``POST /score/pledge``: score one pledge (wire-format JSON) on demand, without writing or
  emitting anything; rate limited per client with a token bucket in Redis.
- ``POST /freezes/release``: release a payout freeze (manual review done).

When ``http.api_key`` is set, both POST views require ``X-API-Key`` (401 otherwise,
compared in constant time) and the rate limit is kept per key; else per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import faust
import msgspec
from faust.web import Request, Response, View

from escrowguard.errors import DecodeError, EscrowguardError
from escrowguard.events import PledgeCreated, decode
from escrowguard.outputs import build_release, freeze_id
from escrowguard.stream_app.ordering import UNBOUNDED, Pending, Position
from escrowguard.stream_app.state_marker import ACTION

if TYPE_CHECKING:
    from escrowguard.stream_app.runtime import Runtime

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4"


class ReleaseRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Body of ``POST /freezes/release``."""

    freeze_id: str
    project_id: str
    milestone_id: str
    reason: str


def register_views(app: faust.App, runtime: Runtime) -> None:
    """Attach the views to the Faust app."""
    api_key = runtime.settings.http.api_key
    per_minute = runtime.settings.http.rate_limit_per_minute

    async def guard(view: View, request: Request) -> tuple[str, Response | None]:
        """Authenticate and rate-limit; returns (client id, error response or None)."""
        if api_key:
            # the header's own bytes (a non-UTF-8 value arrives as surrogate escapes: a
            # wrong key, never a 500)
            given = request.headers.get("X-API-Key", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(given, api_key.reveal().encode()):
                return "", view.json({"error": "missing or wrong X-API-Key"}, status=401)
            client = "key-" + hashlib.sha256(given).hexdigest()[:16]
        else:
            client = "ip-" + str(getattr(request, "remote", None) or "unknown")
        try:
            allowed, retry = await runtime.store.take_token(client, per_minute)
        except EscrowguardError as exc:
            return client, view.json({"error": str(exc)}, status=503)
        if not allowed:
            response = view.json(
                {"error": "rate limit exceeded", "retry_after_s": retry}, status=429
            )
            response.headers["Retry-After"] = str(retry)
            return client, response
        return client, None

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            status = runtime.worker.status(time.monotonic())
            body = {
                "status": "ok" if runtime.healthy else "degraded",
                "model_version": runtime.models.version,
                **status,
            }
            if runtime.state_lost is not None:
                body["status"] = "redis_state_lost"
                body["reason"] = runtime.state_lost
                body["action"] = ACTION
            healthy = runtime.healthy and runtime.state_lost is None
            return self.json(body, status=200 if healthy else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            monitor = runtime.processor.monitor
            if monitor is not None:
                for key, value in monitor.status().items():
                    _export_monitor(runtime, key, value)
            return self.text(runtime.metrics.render(), content_type=PROMETHEUS_CONTENT_TYPE)

    @app.page("/score/pledge")
    class ScorePledge(View):
        async def post(self, request: Request) -> Response:
            _, denied = await guard(self, request)
            if denied is not None:
                return denied
            body = await request.read()
            try:
                event = decode(body, max_bytes=runtime.settings.worker.max_message_bytes)
            except DecodeError as exc:
                return self.json({"error": str(exc), "reason": exc.reason}, status=400)
            if not isinstance(event, PledgeCreated):
                return self.json(
                    {"error": "expected a pledge_created event", "reason": "wrong_event_type"},
                    status=400,
                )
            pending = Pending(
                event, Position("http", 0, 0), event.occurred_us, time.monotonic(), body
            )
            try:
                reads = await runtime.store.read([pending], [], UNBOUNDED, (), gate=False)
            except EscrowguardError as exc:  # Redis down, or its state lost: no score
                return self.json({"error": str(exc), "reason": exc.reason}, status=503)
            result = runtime.processor.score_pledge_now(pending, reads.events[0].context)
            return self.json(result)

    @app.page("/freezes/release")
    class ReleaseFreeze(View):
        async def post(self, request: Request) -> Response:
            _, denied = await guard(self, request)
            if denied is not None:
                return denied
            try:
                req = msgspec.json.decode(await request.read(), type=ReleaseRequest)
            except msgspec.DecodeError as exc:
                return self.json({"error": str(exc)}, status=400)
            if freeze_id(req.milestone_id) != req.freeze_id or not req.reason.strip():
                return self.json(
                    {
                        "error": f"{req.freeze_id} is not the freeze of milestone "
                        f"{req.milestone_id}, or the reason is empty",
                        "reason": "invalid_release",
                    },
                    status=400,
                )
            release = build_release(
                req.freeze_id,
                req.project_id,
                req.milestone_id,
                req.reason.strip(),
                datetime.now(UTC),
            )
            await runtime.publisher.send_all([release])
            return self.json({"released": req.freeze_id})


def _export_monitor(runtime: Runtime, key: str, value: float) -> None:
    m = runtime.metrics
    kind, _, name = key.partition(":")
    if kind == "shift":
        m.set("escrowguard_drift_shift", value, feature=name)
    elif kind == "detected":
        m.set("escrowguard_drift_detected", value, monitor=name)
    elif key == "accuracy" and not math.isnan(value):
        m.set("escrowguard_online_accuracy", value)
    elif key == "auc" and not math.isnan(value):
        m.set("escrowguard_online_auc", value)
