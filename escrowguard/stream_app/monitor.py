"""Per-worker model monitoring with River: drift detectors and online evaluation.

Operational signals over the events *this worker* sees, not money decisions: a worker that
restarts starts its detectors afresh, and two workers each watch their own partitions. Their
alerts (``drift``, ``retrain_needed``) have ids keyed by what they are about (feature,
detector, model version, event-time day) so repeats de-duplicate downstream.

- Reference comparison: a rolling mean of each monitored value over the last
  ``drift_min_samples`` events vs the training history's mean; "shift" is
  ``|mean - ref_mean| / max(|ref_mean|, ref_std)``. A pledge feature whose shift crosses
  ``drift_max_shift`` (20%) raises one drift alert; it re-arms once the shift is back under
  half of that, so a lasting shift is one alert, not one a day. The risk score's shift is
  exported to /metrics but raises no alert: votes arrive clustered by milestone, so a
  500-vote mean swings with which milestones are voting (measured: 20 alerts in a year of
  a history with no drift), not with the model's inputs.
- Change detectors: ADWIN on the anomaly score, PageHinkley on the pledge log-amount.
- Online evaluation: milestone outcomes joined to the risk predicted at the last vote;
  rolling accuracy and ROC AUC (River metrics); accuracy below ``retrain_min_accuracy``
  raises ``retrain_needed``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, Protocol

import msgspec
import numpy as np

from escrowguard.events import from_us
from escrowguard.models.features import PLEDGE_FEATURES
from escrowguard.outputs import Alert, AlertKind, AlertReason, make_id
from escrowguard.settings import ThresholdSettings
from escrowguard.stream_app.river_lite import drift, metrics, stats, utils

DAY_US: Final = 86_400 * 1_000_000
MONITORED_PLEDGE_FEATURES: Final = ("log_amount", "log_account_age_s", "log_since_prev_pledge_s")
#: Page-Hinkley on standardised log amounts: tolerated drift per pledge, and the cumulative
#: excess (in standard deviations) that signals a change. Measured on N(0, 1) streams
#: (river 0.26): 0.25/100 gives one false alarm per ~50k pledges and catches a lasting
#: +0.5 sd shift after ~300; river's defaults (0.005/50) gave 19 alerts over the 57k-event
#: synthetic history, which has no drift.
PH_DELTA: Final = 0.25
PH_THRESHOLD: Final = 100.0
#: Monitored values whose reference shift raises an alert (the rest are exported only).
SHIFT_ALERTS: Final = frozenset({*MONITORED_PLEDGE_FEATURES, "anomaly_score"})
_INDEX: Final = {name: i for i, name in enumerate(PLEDGE_FEATURES)}
EVAL_WINDOW: Final = 200


class _Reference(Protocol):
    version: str

    def reference_mean(self, name: str) -> tuple[float, float]: ...


class Monitor:
    """Drift detectors and online evaluation for one worker."""

    def __init__(self, models: _Reference, th: ThresholdSettings) -> None:
        self.models = models
        self.th = th
        names = (*MONITORED_PLEDGE_FEATURES, "anomaly_score", "risk_score")
        # river's Rolling wrapper is dynamically typed: annotate what we use of it
        self.means: dict[str, Any] = {
            n: utils.Rolling(stats.Mean, window_size=th.drift_min_samples) for n in names
        }
        self.counts = dict.fromkeys(names, 0)
        self.shift = dict.fromkeys(names, 0.0)
        self.shifted = dict.fromkeys(names, False)  # inside a shift episode (alert sent)
        self.adwin = drift.ADWIN()
        self.page_hinkley = drift.PageHinkley(delta=PH_DELTA, threshold=PH_THRESHOLD)
        self.detected: dict[str, bool] = {
            "adwin_anomaly_score": False,
            "page_hinkley_log_amount": False,
        }
        self.accuracy: Any = utils.Rolling(metrics.Accuracy, window_size=EVAL_WINDOW)
        self.auc = metrics.ROCAUC()
        self.labels = 0
        self._alerts: dict[str, Alert] = {}
        self._last_t_us = 0

    # --- observations (called by the batch processor, never for redeliveries) ---

    def observe_pledges(self, jobs: Sequence[Any], X: np.ndarray, scores: np.ndarray) -> None:
        """Pledge features and anomaly scores of newly decided pledges."""
        if not jobs:
            return
        self._last_t_us = max(self._last_t_us, *(j[0].t_us for j in jobs))
        rows = X[: len(jobs)]
        for name in MONITORED_PLEDGE_FEATURES:
            self._observe(name, rows[:, _INDEX[name]], jobs[-1][1].event_id)
        self._observe("anomaly_score", scores[: len(jobs)], jobs[-1][1].event_id)
        for value in scores[: len(jobs)]:
            self.adwin.update(float(value))
            if self.adwin.drift_detected:
                self._drift_alert(
                    "anomaly_score",
                    "adwin",
                    float(value),
                    None,
                    "ADWIN detected a change in the anomaly-score distribution",
                    jobs[-1][1].event_id,
                )
        ref_mean, ref_std = self.models.reference_mean("log_amount")
        for value in rows[:, _INDEX["log_amount"]]:
            # in training standard deviations: the threshold then means the same for any
            # platform's currency and amount scale
            self.page_hinkley.update((float(value) - ref_mean) / max(ref_std, 1e-9))
            if self.page_hinkley.drift_detected:
                self._drift_alert(
                    "log_amount",
                    "page_hinkley",
                    float(value),
                    None,
                    "Page-Hinkley detected a shift in pledge amounts",
                    jobs[-1][1].event_id,
                )

    def observe_votes(self, jobs: Sequence[Any], risks: np.ndarray) -> None:
        """Risk scores of newly decided votes."""
        if jobs:
            self._last_t_us = max(self._last_t_us, *(j.pending.t_us for j in jobs))
            self._observe("risk_score", risks[: len(jobs)], jobs[-1].event.event_id)

    def observe_outcomes(self, labels: Sequence[bool], probs: np.ndarray) -> None:
        """Milestone outcomes (True = ended below target) against the predicted risk."""
        for label, prob in zip(labels, probs, strict=True):
            p = float(prob)
            self.accuracy.update(bool(label), p >= 0.5)
            self.auc.update(bool(label), {True: p, False: 1 - p})
            self.labels += 1
        accuracy = self.accuracy.get()
        if self.labels >= EVAL_WINDOW and accuracy < self.th.retrain_min_accuracy:
            alert_id = make_id("al", AlertKind.RETRAIN_NEEDED, self.models.version, "accuracy")
            self._alerts.setdefault(
                alert_id,
                Alert(
                    alert_id=alert_id,
                    kind=AlertKind.RETRAIN_NEEDED,
                    severity="medium",
                    score=round(accuracy, 4),
                    threshold=self.th.retrain_min_accuracy,
                    project_id=None,
                    milestone_id=None,
                    backer_id=None,
                    event_ids=[],
                    reasons=[
                        AlertReason(
                            "online_accuracy",
                            round(accuracy, 4),
                            self.th.retrain_min_accuracy,
                            f"milestone-risk accuracy over the last {EVAL_WINDOW} "
                            f"outcomes is {accuracy:.0%}",
                        )
                    ],
                    occurred_at=from_us(self._last_t_us),
                    emitted_at=from_us(self._last_t_us),
                    model_version=self.models.version,
                ),
            )

    def _observe(self, name: str, values: np.ndarray, event_id: str) -> None:
        mean = self.means[name]
        for v in values:
            mean.update(float(v))
        self.counts[name] += len(values)
        ref_mean, ref_std = self.models.reference_mean(name)
        shift = abs(mean.get() - ref_mean) / max(abs(ref_mean), ref_std, 1e-9)
        self.shift[name] = shift
        if self.shifted[name]:
            self.shifted[name] = shift >= self.th.drift_max_shift / 2
            return
        if (
            name in SHIFT_ALERTS
            and self.counts[name] >= self.th.drift_min_samples
            and shift > self.th.drift_max_shift
        ):
            self.shifted[name] = True
            self._drift_alert(
                name,
                "reference_shift",
                mean.get(),
                ref_mean,
                f"rolling mean of {name} over {self.th.drift_min_samples} events "
                f"moved {shift:.0%} from the training reference",
                event_id,
            )

    def _drift_alert(
        self, name: str, detector: str, value: float, ref: float | None, detail: str, event_id: str
    ) -> None:
        self.detected[f"{detector}_{name}"] = True
        day = self._last_t_us // DAY_US
        alert_id = make_id("al", AlertKind.DRIFT, name, detector, self.models.version, str(day))
        if alert_id in self._alerts:
            return
        self._alerts[alert_id] = Alert(
            alert_id=alert_id,
            kind=AlertKind.DRIFT,
            severity="low",
            score=round(self.shift.get(name, 0.0), 4),
            threshold=self.th.drift_max_shift,
            project_id=None,
            milestone_id=None,
            backer_id=None,
            event_ids=[event_id],
            reasons=[
                AlertReason(name, round(value, 4), None if ref is None else round(ref, 4), detail)
            ],
            occurred_at=from_us(self._last_t_us),
            emitted_at=from_us(self._last_t_us),
            model_version=self.models.version,
        )

    # --- out ---

    def take_alerts(self, wall: datetime) -> list[Alert]:
        """Alerts raised since the last call (each id once per worker lifetime)."""
        out = []
        for alert_id, alert in list(self._alerts.items()):
            if alert is None:
                continue
            out.append(_with_emitted(alert, wall))
            self._alerts[alert_id] = None  # type: ignore[assignment]
        return out

    def status(self) -> dict[str, float]:
        """Gauges for /metrics."""
        out = {f"shift:{k}": v for k, v in self.shift.items()}
        out.update({f"detected:{k}": float(v) for k, v in self.detected.items()})
        out["accuracy"] = self.accuracy.get() if self.labels else float("nan")
        out["auc"] = self.auc.get() if self.labels else float("nan")
        out["labels"] = float(self.labels)
        return out


def _with_emitted(alert: Alert, wall: datetime) -> Alert:
    return msgspec.structs.replace(alert, emitted_at=wall)
