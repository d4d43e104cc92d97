"""A loaded model bundle as the streaming pipeline uses it (``pipeline.ModelSet``).

The bundle (``models.bundle``) is written by ``models.train``. Its manifest carries, besides
the models: ``thresholds.anomaly`` (calibrated on the training history), the feature windows
the features were computed with (``training.windows``), the training history's end
(``training.end_us``) and reference statistics of every feature and score
(``training.references``: mean, std, median, spread), used for alert reasons and drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from escrowguard.errors import BundleError
from escrowguard.models.bundle import Bundle, current_bundle_path, current_version, load_bundle
from escrowguard.models.features import (
    ANOMALY_FEATURES,
    RISK_FEATURES,
    SUCCESS_FEATURES,
    FeatureWindows,
)

#: The models a serving bundle must hold, and the feature order each expects.
SERVING_FEATURES: Final[dict[str, tuple[str, ...]]] = {
    "anomaly": ANOMALY_FEATURES,
    "risk": RISK_FEATURES,
    "success": SUCCESS_FEATURES,
}


class ServingModels:
    """Fast scorers of a verified bundle plus its calibration and reference statistics."""

    def __init__(self, bundle: Bundle, registry_dir: Path | None = None) -> None:
        self.bundle = bundle
        self.version = bundle.version
        self.registry_dir = registry_dir
        scorers = bundle.scorers
        missing = [name for name in SERVING_FEATURES if name not in scorers]
        if missing:
            raise BundleError(
                f"bundle {self.version} lacks the models {missing}: retrain with "
                "`escrowguard train`",
                "missing_model",
            )
        self._anomaly = scorers["anomaly"]
        self._risk = scorers["risk"]
        self._success = scorers["success"]
        thresholds = bundle.thresholds
        if "anomaly" not in thresholds:
            raise BundleError(f"bundle {self.version} has no thresholds.anomaly", "invalid_bundle")
        self.anomaly_threshold = float(thresholds["anomaly"])
        training = bundle.manifest.get("training", {})
        self.training_end_us = int(training.get("end_us", 0))
        self._windows = dict(training.get("windows", {}))
        self._refs: Mapping[str, Mapping[str, float]] = training.get("references", {})
        self._current_mtime = self._registry_mtime()

    # --- pipeline.ModelSet ---

    def anomaly_scores(self, X: np.ndarray) -> np.ndarray:
        """Higher = more anomalous (the negated IsolationForest score_samples, in (0, 1])."""
        return -self._anomaly.score(X)

    def risk(self, X: np.ndarray) -> np.ndarray:
        """P(the milestone ends below the approval target)."""
        return self._risk.score(X)

    def success(self, X: np.ndarray) -> np.ndarray:
        """P(the project reaches its goal by the deadline)."""
        return self._success.score(X)

    def reference(self, feature: str) -> tuple[float, float]:
        """(median, spread) of a feature on the training history."""
        ref = self._refs.get(feature)
        if ref is None:
            return 0.0, 1.0
        return float(ref["median"]), float(ref["spread"])

    def reference_mean(self, name: str) -> tuple[float, float]:
        """(mean, std) of a feature or score on the training history."""
        ref = self._refs.get(name)
        if ref is None:
            return 0.0, 1.0
        return float(ref["mean"]), float(ref["std"])

    # --- compatibility and hot reload ---

    def check_windows(self, windows: FeatureWindows) -> None:
        """Refuse to serve a bundle trained with other feature windows than configured."""
        if not self._windows:
            return
        configured: dict[str, Any] = {
            k: getattr(windows, k) for k in FeatureWindows.__struct_fields__
        }
        if {k: self._windows.get(k) for k in configured} != configured:
            raise BundleError(
                f"bundle {self.version} was trained with feature windows {self._windows}, "
                f"the configuration says {configured}: retrain, or set [features] to match",
                "feature_mismatch",
            )

    def _registry_mtime(self) -> float | None:
        if self.registry_dir is None:
            return None
        try:
            return os.stat(self.registry_dir / "CURRENT").st_mtime
        except OSError:
            return None

    def reload_if_promoted(self, settings: Any) -> ServingModels | None:
        """The newly promoted bundle, if the registry's CURRENT changed; else None."""
        if self.registry_dir is None:
            return None
        mtime = self._registry_mtime()
        if mtime == self._current_mtime:
            return None
        self._current_mtime = mtime
        version = current_version(self.registry_dir)
        if version is None or version == self.version:
            return None
        return ServingModels(_load(self.registry_dir / version), self.registry_dir)


def _load(path: Path) -> Bundle:
    # compiled scorers only: the worker never imports scikit-learn (models.bundle)
    return load_bundle(path, SERVING_FEATURES, scorers_only=True)


def load_serving_models(settings: Any, bundle: Path | None = None) -> ServingModels:
    """The explicit bundle, else ``models.bundle_dir``, else the registry's CURRENT one."""
    explicit = bundle or (Path(settings.models.bundle_dir) if settings.models.bundle_dir else None)
    if explicit is not None:
        return ServingModels(_load(explicit))
    registry = Path(settings.models.registry_dir)
    return ServingModels(_load(current_bundle_path(registry)), registry)
