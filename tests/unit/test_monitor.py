"""Drift monitors and online evaluation (stream_app/monitor.py), fed plain arrays."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from escrowguard.models.features import PLEDGE_FEATURES
from escrowguard.outputs import AlertKind
from escrowguard.settings import load_settings
from escrowguard.stream_app.monitor import Monitor

LOG_AMOUNT = PLEDGE_FEATURES.index("log_amount")
DAY_US = 86_400 * 1_000_000
REFERENCE = {"log_amount": (4.0, 1.0), "anomaly_score": (0.4, 0.05), "risk_score": (0.3, 0.2)}


@dataclass
class _Models:
    version: str = "v1"

    def reference_mean(self, name: str) -> tuple[float, float]:
        return REFERENCE.get(name, (0.0, 1.0))


@dataclass
class _Pending:
    t_us: int


@dataclass
class _Event:
    event_id: str


def _feed_pledges(monitor: Monitor, log_amounts: np.ndarray, start_day: int = 0) -> None:
    """Batches of 100 pledges, one day apart; other features at their reference."""
    for i in range(0, len(log_amounts), 100):
        chunk = log_amounts[i : i + 100]
        X = np.zeros((len(chunk), len(PLEDGE_FEATURES)))
        X[:, LOG_AMOUNT] = chunk
        day = start_day + i // 100
        jobs = [(_Pending(day * DAY_US), _Event(f"e{i + j}")) for j in range(len(chunk))]
        monitor.observe_pledges(jobs, X, np.full(len(chunk), 0.4))


def _drift_alerts(monitor: Monitor, feature: str | None = None) -> list:
    return [
        a
        for a in monitor.take_alerts(datetime(2026, 1, 1, tzinfo=UTC))
        if a.kind == AlertKind.DRIFT and (feature is None or a.reasons[0].feature == feature)
    ]


def _monitor() -> Monitor:
    return Monitor(_Models(), load_settings(env={}).thresholds)


def test_a_stationary_stream_raises_no_drift_alert() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(1)
    _feed_pledges(monitor, rng.normal(4.0, 1.0, 10_000))
    assert _drift_alerts(monitor) == []


def test_a_lasting_shift_in_amounts_is_one_alert_per_detector_not_one_a_day() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(2)
    _feed_pledges(monitor, rng.normal(4.0, 1.0, 5_000))
    _feed_pledges(monitor, rng.normal(5.5, 1.0, 5_000), start_day=50)  # +1.5 sd, +37%
    alerts = _drift_alerts(monitor, "log_amount")
    detectors = sorted(a.reasons[0].detail.split()[0] for a in alerts)
    assert detectors == ["Page-Hinkley", "rolling"], detectors
    shift = next(a for a in alerts if a.reasons[0].detail.startswith("rolling"))
    assert shift.reasons[0].reference == 4.0 and shift.reasons[0].value > 4.8


def test_the_shift_alert_re_arms_once_the_feature_is_back() -> None:
    monitor = _monitor()
    rng = np.random.default_rng(3)
    _feed_pledges(monitor, rng.normal(5.5, 0.3, 2_000))
    _feed_pledges(monitor, rng.normal(4.0, 0.3, 2_000), start_day=20)
    _feed_pledges(monitor, rng.normal(5.5, 0.3, 2_000), start_day=40)
    rolling = [
        a for a in _drift_alerts(monitor, "log_amount") if a.reasons[0].detail.startswith("rolling")
    ]
    assert len(rolling) == 2


def test_a_shifted_risk_score_is_exported_but_raises_no_alert() -> None:
    monitor = _monitor()

    @dataclass
    class _Vote:
        pending: _Pending
        event: _Event

    jobs = [_Vote(_Pending(0), _Event(f"v{i}")) for i in range(1_000)]
    monitor.observe_votes(jobs, np.full(1_000, 0.6))
    assert monitor.status()["shift:risk_score"] > 0.2
    assert _drift_alerts(monitor) == []


def test_retrain_needed_when_online_accuracy_drops() -> None:
    monitor = _monitor()
    labels = [bool(i % 2) for i in range(300)]
    monitor.observe_outcomes(labels, np.array([0.9 if not y else 0.1 for y in labels]))
    alerts = monitor.take_alerts(datetime(2026, 1, 1, tzinfo=UTC))
    assert [a.kind for a in alerts] == [AlertKind.RETRAIN_NEEDED]
    assert alerts[0].score < 0.75
    good = _monitor()
    good.observe_outcomes(labels, np.array([0.9 if y else 0.1 for y in labels]))
    assert good.take_alerts(datetime(2026, 1, 1, tzinfo=UTC)) == []
