"""How trained models are measured: classification metrics, ROC points, window buckets,
alert-budget calibration and reference statistics.

Pure functions over numpy arrays; every figure they return is a plain float, int, list or
dict (JSON-ready: it goes into the bundle manifest). A metric that is undefined on the data
(an AUC with one class only) is ``None``, never NaN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

#: Buckets of ``window_fraction`` (how much of the voting window had elapsed) for risk AUC.
WINDOW_BUCKETS: Final = ((0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0))
#: Alert budgets (share of pledges flagged) the anomaly report tabulates.
REPORT_BUDGETS: Final = (0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10)


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


def auc_or_none(y: np.ndarray, proba: np.ndarray) -> float | None:
    """ROC-AUC, or None when ``y`` holds a single class (the AUC is undefined).

    >>> auc_or_none(np.array([0, 1, 1]), np.array([0.1, 0.8, 0.7]))
    1.0
    >>> auc_or_none(np.array([1, 1]), np.array([0.1, 0.8])) is None
    True
    """
    if len(np.unique(y)) < 2:
        return None
    return _round(roc_auc_score(y, proba))


def classification_metrics(y: np.ndarray, proba: np.ndarray, cut: float = 0.5) -> dict[str, Any]:
    """Accuracy, F1 (positive class 1) and ROC-AUC of probabilities ``proba``, with counts.

    >>> m = classification_metrics(np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.4, 0.1]))
    >>> m["accuracy"], m["f1"], m["roc_auc"], m["n"], m["positives"]
    (0.75, 0.666667, 1.0, 4, 2)
    """
    y = np.asarray(y, dtype=np.int64)
    predicted = (np.asarray(proba) >= cut).astype(np.int64)
    return {
        "accuracy": _round(accuracy_score(y, predicted)) if y.size else None,
        "f1": _round(f1_score(y, predicted, zero_division=0)) if y.size else None,
        "roc_auc": auc_or_none(y, proba),
        "n": int(y.size),
        "positives": int(y.sum()),
    }


def roc_points(y: np.ndarray, proba: np.ndarray, max_points: int = 101) -> dict[str, list[float]]:
    """The ROC curve as at most ``max_points`` (fpr, tpr) pairs, for plotting later.

    Empty lists when ``y`` holds a single class.
    """
    if len(np.unique(y)) < 2:
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y, proba)
    if fpr.size > max_points:
        grid = np.linspace(0.0, 1.0, max_points)
        tpr = np.interp(grid, fpr, tpr)
        fpr = grid
    return {"fpr": [_round(v, 4) for v in fpr], "tpr": [_round(v, 4) for v in tpr]}


def by_window_fraction(
    window_fraction: np.ndarray, y: np.ndarray, proba: np.ndarray
) -> list[dict[str, Any]]:
    """Risk metrics per bucket of the voting window elapsed (``WINDOW_BUCKETS``; the last
    bucket includes 1.0): how early the model can warn."""
    out = []
    for lo, hi in WINDOW_BUCKETS:
        upper = window_fraction <= hi if hi >= 1.0 else window_fraction < hi
        mask = (window_fraction >= lo) & upper
        out.append({"bucket": f"{lo:.2f}-{hi:.2f}", **classification_metrics(y[mask], proba[mask])})
    return out


def budget_threshold(scores: np.ndarray, budget: float) -> float:
    """The alert threshold that flags a ``budget`` share of ``scores`` (score >= threshold):
    their ``1 - budget`` quantile.

    >>> budget_threshold(np.arange(100.0), 0.05)
    94.05
    """
    if not 0.0 < budget < 1.0:
        raise ValueError(f"the alert budget must lie strictly between 0 and 1, got {budget!r}")
    return float(np.quantile(scores, 1.0 - budget))


def precision_recall_at(
    scores: np.ndarray, threshold: float, acceptable: np.ndarray, target: np.ndarray
) -> dict[str, Any]:
    """Flag ``scores >= threshold``; precision counts a flag right when ``acceptable`` (any
    attack pledge), recall is over ``target`` (the pledge_anomaly labels)."""
    flagged = scores >= threshold
    n_flagged = int(flagged.sum())
    n_target = int(target.sum())
    return {
        "threshold": _round(threshold),
        "flagged": n_flagged,
        "flagged_share": _round(n_flagged / max(scores.size, 1)),
        "precision": _round((flagged & acceptable).sum() / n_flagged) if n_flagged else None,
        "recall": _round((flagged & target).sum() / n_target) if n_target else None,
        "labelled": n_target,
    }


def budget_table(
    scores: np.ndarray,
    acceptable: np.ndarray,
    target: np.ndarray,
    budgets: Sequence[float] = REPORT_BUDGETS,
) -> list[dict[str, Any]]:
    """Precision/recall at each alert budget, thresholds taken from ``scores`` themselves."""
    return [
        {
            "budget": b,
            **precision_recall_at(scores, budget_threshold(scores, b), acceptable, target),
        }
        for b in budgets
    ]


def reference_stats(values: np.ndarray) -> dict[str, float]:
    """mean, std, median and a robust spread (IQR / 1.349; the std when the IQR is 0, as for
    a binary feature; 1.0 when both are 0), for alert reasons and drift checks.

    >>> reference_stats(np.array([0.0, 0.0, 0.0, 0.0, 1.0]))["spread"]  # binary: the std
    0.4
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": 0.0, "std": 1.0, "median": 0.0, "spread": 1.0}
    q1, median, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    std = float(v.std())
    spread = (q3 - q1) / 1.349
    if spread <= 0:
        spread = std if std > 0 else 1.0
    return {
        "mean": _significant(v.mean()),
        "std": _significant(std),
        "median": _significant(median),
        "spread": _significant(spread),
    }


def _significant(value: float) -> float:
    """``value`` to 7 significant digits (never rounds a small positive spread to 0)."""
    return float(f"{float(value):.7g}")
