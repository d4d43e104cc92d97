"""Phase (c) of the benchmark: the scorer written the obvious way, as the baseline.

Per event: one scikit-learn call per model that applies (IsolationForest on every pledge,
RandomForest on a project's first pledge past its campaign checkpoint, GradientBoosting on
every vote), one Redis command per feature (each feature is a small function that asks Redis
for what it needs), and one send per output, waiting for its acknowledgement. A
kafka-python consumer in a group of its own, auto-commit, one message at a time.

It does the scorer's job in kind (the same models, the same feature names, the same output
kinds) but none of its guarantees: no event-time ordering, no as-of reads, no
de-duplication, no atomic state. The features follow the real definitions loosely; what is
measured is the cost of the shape, not the decisions.

Run as ``python -m escrowguard.bench.naive STATUS_PATH BUNDLE_DIR LIMIT SECONDS`` with the
settings in the environment; it stops after LIMIT events or SECONDS after its first event,
writing progress samples to STATUS_PATH (``status.StatusFile``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaConsumer, KafkaProducer

from escrowguard.bench.status import StatusFile
from escrowguard.infra import redis_client
from escrowguard.kafka_config import client_options
from escrowguard.models.bundle import load_bundle
from escrowguard.models.serving import SERVING_FEATURES
from escrowguard.settings import Settings, load_settings
from escrowguard.topics import input_topics, output_topic

HOUR_US = 3_600 * 1_000_000
DAY_US = 24 * HOUR_US


def parse_time_us(text: str) -> int:
    """RFC 3339 UTC ('...Z') to microseconds."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1_000_000)


def cents(amount: float) -> int:
    return round(amount * 100)


class NaiveScorer:
    """One event at a time: read features from Redis, call the models, send outputs."""

    def __init__(self, settings: Settings, bundle_dir: Path) -> None:
        self.settings = settings
        bundle = load_bundle(bundle_dir, SERVING_FEATURES)
        self.version = bundle.version
        self.anomaly_model = bundle.models["anomaly"]
        self.risk_model = bundle.models["risk"]
        self.success_model = bundle.models["success"]
        self.anomaly_threshold = float(bundle.thresholds["anomaly"])
        self.redis: Any = redis_client(settings.redis)  # replies are bytes
        self.prefix = f"{settings.redis.key_prefix}:naive"
        self.producer = KafkaProducer(
            **client_options(settings.kafka, client_suffix="naive-out"), acks="all"
        )
        self.sent = 0

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def send(self, suffix: str, output: dict[str, Any]) -> None:
        """One output, sent and acknowledged before going on."""
        output["model_version"] = self.version
        output["emitted_at"] = datetime.now(UTC).isoformat()
        topic = output_topic(self.settings.topics, suffix)
        self.producer.send(topic, json.dumps(output).encode()).get(timeout=30)
        self.sent += 1

    def handle(self, raw: bytes) -> None:
        """Score one message."""
        event = json.loads(raw)
        kind = event["event_type"]
        if kind == "backer_registered":
            self.redis.hset(
                self.key("backer", event["backer_id"]),
                mapping={"wallet": event["wallet"], "t": parse_time_us(event["occurred_at"])},
            )
        elif kind == "project_created":
            self.redis.hset(
                self.key("project", event["project_id"]),
                mapping={
                    "creator": event["creator_id"],
                    "wallet": event["creator_wallet"],
                    "reputation": event["creator_reputation"],
                    "goal": cents(event["funding_goal"]),
                    "t": parse_time_us(event["occurred_at"]),
                    "deadline": parse_time_us(event["deadline"]),
                },
            )
        elif kind == "milestone_created":
            self.redis.hset(
                self.key("milestone", event["milestone_id"]),
                mapping={
                    "project": event["project_id"],
                    "index": event["index"],
                    "funding": cents(event["funding_amount"]),
                    "opens": parse_time_us(event["voting_opens_at"]),
                    "closes": parse_time_us(event["voting_closes_at"]),
                },
            )
            self.redis.hincrby(self.key("project", event["project_id"]), "milestones", 1)
        elif kind == "pledge_created":
            self.pledge(event)
        elif kind == "vote_cast":
            self.vote(event)
        elif kind == "milestone_resolved":
            self.resolution(event)

    # --- pledges ---

    def pledge(self, ev: dict[str, Any]) -> None:
        t = parse_time_us(ev["occurred_at"])
        amount = cents(ev["amount"])
        backer, project = ev["backer_id"], ev["project_id"]
        pledges = self.key("backer-pledges", backer)
        month = t - 30 * DAY_US
        r = self.redis
        amounts = [int(m.split(b"|")[1]) for m in r.zrangebyscore(pledges, month, f"({t}")]
        amounts_again = [int(m.split(b"|")[1]) for m in r.zrangebyscore(pledges, month, f"({t}")]
        project_sum, project_count = r.hmget(self.key("project", project), "sum", "count")
        previous = r.zrevrangebyscore(pledges, f"({t}", "-inf", start=0, num=1, withscores=True)
        registered = r.hget(self.key("backer", backer), "t")
        row = [
            math.log1p(amount / 100),
            float(r.zcount(pledges, month, f"({t}")),
            math.log(amount * len(amounts) / sum(amounts)) if amounts else 0.0,
            math.log(amount / max(amounts_again)) if amounts_again else 0.0,
            math.log(amount * int(project_count) / int(project_sum)) if project_count else 0.0,
            float(r.zcount(pledges, t - HOUR_US, f"({t}")),
            float(r.zcount(pledges, t - DAY_US, f"({t}")),
            math.log1p((t - previous[0][1]) / 1e6) if previous else math.log1p(30 * 86_400),
            math.log1p(max(t - int(registered), 0) / 1e6) if registered else 0.0,
        ]
        score = -float(self.anomaly_model.score_samples(np.array([row]))[0])
        if score >= self.anomaly_threshold:
            self.send("alerts", self.alert("pledge_anomaly", score, ev, backer=backer))
        if ev["source_wallet"] == r.hget(self.key("project", project), "wallet"):
            self.send("alerts", self.alert("wash_trading", 1.0, ev, backer=backer))
        r.zadd(pledges, {f"{ev['event_id']}|{amount}": t})
        r.hincrby(self.key("project", project), "sum", amount)
        r.hincrby(self.key("project", project), "count", 1)
        r.sadd(self.key("project-backers", project), backer)
        r.sadd(self.key("wallet-backers", ev["source_wallet"]), backer)
        self.checkpoint(project, t, ev)

    def checkpoint(self, project: str, t: int, ev: dict[str, Any]) -> None:
        """Score the project's success once, on its first pledge past mid-campaign."""
        r, key = self.redis, self.key("project", project)
        created, deadline, done = r.hmget(key, "t", "deadline", "scored")
        if created is None or done is not None:
            return
        if t < int(created) + (int(deadline) - int(created)) // 2:
            return
        r.hset(key, "scored", 1)
        total = int(r.hget(key, "sum") or 0)
        count = int(r.hget(key, "count") or 0)
        row = [
            float(r.hget(key, "reputation") or 0),
            int(r.hget(key, "goal") or 0) / 100,
            max(int(r.hget(key, "deadline") or 0) - t, 0) / DAY_US,
            float(count),
            total / 100 / count if count else 0.0,
            float(r.scard(self.key("project-backers", project))),
            float(r.hget(key, "milestones") or 0),
        ]
        success = float(self.success_model.predict_proba(np.array([row]))[0, 1])
        if success < self.settings.thresholds.project_at_risk_below:
            self.send("alerts", self.alert("project_at_risk", success, ev))

    # --- votes ---

    def vote(self, ev: dict[str, Any]) -> None:
        t = parse_time_us(ev["occurred_at"])
        milestone, project = ev["milestone_id"], ev["project_id"]
        r = self.redis
        ballots_key = self.key("ballots", milestone)
        r.hset(ballots_key, ev["backer_id"], f"{int(ev['approve'])}|{ev['vote_weight']}")
        m_key, p_key = self.key("milestone", milestone), self.key("project", project)
        outcomes_key = self.key("outcomes", project)

        def ballots() -> list[tuple[bool, float]]:
            """The milestone's ballots (one HVALS: each feature below asks again)."""
            return [(a == b"1", float(w)) for a, w in (v.split(b"|") for v in r.hvals(ballots_key))]

        def weight_feature(of: Any) -> float:
            """A feature of the ballots' weights: one HVALS each."""
            cast = ballots()
            weights = sorted((w for _, w in cast), reverse=True)
            return of(cast, weights, sum(weights)) if sum(weights) > 0 else 0.0

        votes = r.hincrby(m_key, "votes", 1)
        opens, closes = r.hmget(m_key, "opens", "closes")
        span = int(closes or 1) - int(opens or 0)
        funded, goal = r.hmget(p_key, "sum", "goal")
        voter_wallets = self.key("wallet-backers", ev["backer_id"])
        hhi = weight_feature(lambda _, ws, total: sum((w / total) ** 2 for w in ws))
        row = [
            float(votes),
            weight_feature(lambda _, ws, total: math.log1p(total)),
            weight_feature(lambda cast, _, total: sum(w for a, w in cast if a) / total),
            sum(a for a, _ in ballots()) / max(votes, 1),
            float(r.hlen(ballots_key)),
            hhi,
            weight_feature(lambda _, ws, total: sum(ws[:3]) / total),
            float(r.scard(voter_wallets)) / max(votes, 1),
            float(r.scard(voter_wallets)),
            1.0,
            float(r.hget(m_key, "late") or 0.0),
            min(max((t - int(opens or 0)) / span, 0.0), 1.0) if span > 0 else 1.0,
            int(funded or 0) / int(goal) if goal else 0.0,
            float(r.hget(p_key, "reputation") or 0),
            float(r.hget(m_key, "index") or 0),
            int(r.hget(m_key, "funding") or 0) / int(goal) if goal else 0.0,
            float(r.llen(outcomes_key)),
            float(sum(1 for x in r.lrange(outcomes_key, 0, -1) if float(x) < 0.7)),
            _mean([float(x) for x in r.lrange(outcomes_key, 0, -1)], 1.0),
        ]
        risk = float(self.risk_model.predict_proba(np.array([row]))[0, 1])
        th = self.settings.thresholds
        route = "auto_approve" if risk < th.risk_auto_approve_below else "manual_review"
        if r.hget(m_key, "route") != route.encode():
            r.hset(m_key, "route", route)
            self.send(
                "milestone-decisions",
                {"milestone_id": milestone, "route": route, "risk_score": risk, **self.ids(ev)},
            )
        if risk >= th.risk_freeze_at and r.hsetnx(m_key, "frozen", 1):
            self.send("alerts", self.alert("milestone_risk", risk, ev))
            self.send("payout-freezes", {"milestone_id": milestone, "action": "freeze"})
        if hhi > th.sybil_max_hhi and votes >= th.sybil_min_votes and r.hsetnx(m_key, "sybil", 1):
            self.send("alerts", self.alert("sybil_vote", hhi, ev))

    # --- resolutions ---

    def resolution(self, ev: dict[str, Any]) -> None:
        r, project = self.redis, ev["project_id"]
        r.rpush(self.key("outcomes", project), ev["approval_rate"])
        th = self.settings.thresholds
        recent = [float(x) for x in r.lrange(self.key("outcomes", project), -2, -1)]
        low = [x for x in recent if x < th.exit_scam_low_approval]
        if len(low) >= th.exit_scam_min_low_milestones and r.hsetnx(
            self.key("project", project), "exit", 1
        ):
            self.send("alerts", self.alert("exit_scam", 1.0, ev))

    def alert(
        self, kind: str, score: float, ev: dict[str, Any], backer: str = ""
    ) -> dict[str, Any]:
        return {"kind": kind, "score": score, "backer_id": backer or None, **self.ids(ev)}

    @staticmethod
    def ids(ev: dict[str, Any]) -> dict[str, Any]:
        return {
            "project_id": ev.get("project_id"),
            "event_ids": [ev["event_id"]],
            "occurred_at": ev["occurred_at"],
        }


def _mean(values: list[float], empty: float) -> float:
    return sum(values) / len(values) if values else empty


def run(settings: Settings, status: StatusFile, bundle_dir: Path, seconds: float) -> None:
    """Consume and score until ``status.expected`` events or ``seconds`` after the first."""
    scorer = NaiveScorer(settings, bundle_dir)
    k = settings.kafka
    consumer = KafkaConsumer(
        *input_topics(settings.topics),
        **client_options(k, client_suffix="naive-in"),
        group_id=k.consumer_group,
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        session_timeout_ms=k.session_timeout_ms,
        heartbeat_interval_ms=k.heartbeat_interval_ms,
        max_poll_interval_ms=k.max_poll_interval_ms,
        fetch_max_wait_ms=k.fetch_max_wait_ms,
        consumer_timeout_ms=60_000,
    )
    first_s = None
    try:
        for message in consumer:
            first_s = first_s or time.monotonic()
            scorer.handle(message.value)
            status.add(1)
            if status.done >= status.expected or time.monotonic() - first_s >= seconds:
                break
        status.extra["outputs_sent"] = scorer.sent
        status.extra["finished"] = True
        status.write()
    finally:
        consumer.close()
        scorer.producer.close(timeout=10)
        scorer.redis.close()


if __name__ == "__main__":
    path, bundle, limit, secs = sys.argv[1:5]
    run(load_settings(), StatusFile(Path(path), int(limit)), Path(bundle), float(secs))
