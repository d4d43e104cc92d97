"""Fit and evaluate each model of the bundle on a walked history (all seeded).

Each ``fit_*`` returns the fitted model and a JSON-ready metrics dict. Classifiers are
measured twice: on a random split (stratified for success; grouped by milestone for risk,
so the snapshots of one milestone never sit on both sides) and on a time hold-out (train on
what was known before ``cutoff_us``, test on what happened after it). The bundle keeps the
model fitted on the random split's training side: the model whose figures are reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestClassifier
from sklearn.model_selection import (
    GroupShuffleSplit,
    StratifiedKFold,
    cross_val_score,
    train_test_split,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from escrowguard.errors import DataError
from escrowguard.models.evaluate import (
    budget_table,
    budget_threshold,
    by_window_fraction,
    classification_metrics,
    precision_recall_at,
    roc_points,
)
from escrowguard.models.features import RISK_FEATURES, SUCCESS_FEATURES
from escrowguard.models.recommender import Recommender, evaluate_hit_rate, fit_recommender

TEST_SIZE = 0.2
CV_FOLDS = 5
HIT_RATE_K = 10
RECOMMENDER_COMPONENTS = 20


def success_model(seed: int) -> Pipeline:
    """StandardScaler + RandomForest(100 trees, depth 10, balanced classes)."""
    return Pipeline(
        [
            ("scale", StandardScaler()),
            (
                "forest",
                RandomForestClassifier(
                    n_estimators=100, max_depth=10, class_weight="balanced", random_state=seed
                ),
            ),
        ]
    )


def risk_model(seed: int) -> GradientBoostingClassifier:
    """GradientBoosting(50 trees, depth 5, learning rate 0.1)."""
    return GradientBoostingClassifier(
        n_estimators=50, max_depth=5, learning_rate=0.1, random_state=seed
    )


def _importances(values: np.ndarray, names: Sequence[str]) -> list[list[Any]]:
    order = np.argsort(-values, kind="stable")
    return [[names[i], round(float(values[i]), 6)] for i in order]


def _both_classes(y: np.ndarray) -> bool:
    return len(np.unique(y)) == 2


def _time_holdout(
    make: Any, X: np.ndarray, y: np.ndarray, before: np.ndarray, after: np.ndarray
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Fit a fresh model on rows ``before`` the cutoff, measure it on rows ``after`` it.
    Returns the metrics and the test rows' probabilities (None when it could not run)."""
    out: dict[str, Any] = {"n_train": int(before.sum()), "n_test": int(after.sum())}
    if not _both_classes(y[before]) or not after.any():
        out["status"] = "not enough data on one side of the cutoff"
        return out, None
    model = make().fit(X[before], y[before])
    proba = model.predict_proba(X[after])[:, 1]
    out.update(classification_metrics(y[after], proba))
    out["status"] = "ok"
    return out, proba


def fit_success(
    X: np.ndarray, y: np.ndarray, deadlines_us: np.ndarray, cutoff_us: int, seed: int
) -> tuple[Pipeline, dict[str, Any]]:
    """Project success at the checkpoint: stratified 80/20 split, 5-fold CV AUC (the split
    has few projects, so one split is noisy), time hold-out by deadline."""
    if X.shape[0] < 10 or min(np.bincount(y, minlength=2)) < 2:
        raise DataError(
            f"success model: {X.shape[0]} finished projects, {int(y.sum())} funded: need at "
            "least 10 with 2 of each outcome (a longer history)"
        )
    idx = np.arange(X.shape[0])
    tr, te = train_test_split(idx, test_size=TEST_SIZE, stratify=y, random_state=seed)
    model = success_model(seed).fit(X[tr], y[tr])
    proba = model.predict_proba(X[te])[:, 1]
    metrics: dict[str, Any] = {
        "split": {**classification_metrics(y[te], proba), "n_train": int(tr.size)},
        "roc": roc_points(y[te], proba),
        "top_features": _importances(
            model.named_steps["forest"].feature_importances_, SUCCESS_FEATURES
        ),
        "funded_share": round(float(y.mean()), 6),
    }
    folds = min(CV_FOLDS, int(min(np.bincount(y))))
    if folds >= 2:
        cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
        aucs = cross_val_score(success_model(seed), X, y, cv=cv, scoring="roc_auc")
        metrics["cv_roc_auc"] = {
            "folds": folds,
            "mean": round(float(aucs.mean()), 6),
            "std": round(float(aucs.std()), 6),
        }
    metrics["time_holdout"], _ = _time_holdout(
        lambda: success_model(seed), X, y, deadlines_us < cutoff_us, deadlines_us >= cutoff_us
    )
    return model, metrics


def fit_risk(
    X: np.ndarray,
    milestone_ids: np.ndarray,
    final_approval: Mapping[str, float],
    resolved_us: Mapping[str, int],
    approval_target: float,
    cutoff_us: int,
    seed: int,
) -> tuple[GradientBoostingClassifier, dict[str, Any]]:
    """Milestone risk from vote-state rows of resolved milestones (label: final approval
    below target), split 80/20 by milestone; metrics overall and by window fraction."""
    keep = np.array([m in final_approval for m in milestone_ids], dtype=bool)
    X, groups = X[keep], milestone_ids[keep]
    y = np.array([final_approval[m] < approval_target for m in groups], dtype=np.int64)
    if len(set(groups)) < 10 or not _both_classes(y):
        raise DataError(
            f"risk model: {len(set(groups))} resolved milestones with votes: need at least 10, "
            "with both outcomes (approved and below target)"
        )
    splitter = GroupShuffleSplit(n_splits=1, test_size=TEST_SIZE, random_state=seed)
    tr, te = next(splitter.split(X, y, groups))
    if not _both_classes(y[tr]):
        raise DataError("risk model: the training side of the split holds one outcome only")
    model = risk_model(seed).fit(X[tr], y[tr])
    proba = model.predict_proba(X[te])[:, 1]
    window = X[:, RISK_FEATURES.index("window_fraction")]
    resolved = np.array([resolved_us[m] for m in groups], dtype=np.int64)
    before, after = resolved < cutoff_us, resolved >= cutoff_us
    holdout, late_proba = _time_holdout(lambda: risk_model(seed), X, y, before, after)
    holdout["milestones_test"] = len(set(groups[after]))
    if late_proba is not None:
        holdout["by_window_fraction"] = by_window_fraction(window[after], y[after], late_proba)
    metrics: dict[str, Any] = {
        "split": {
            **classification_metrics(y[te], proba),
            "n_train": int(tr.size),
            "milestones_train": len(set(groups[tr])),
            "milestones_test": len(set(groups[te])),
        },
        "by_window_fraction": by_window_fraction(window[te], y[te], proba),
        "roc": roc_points(y[te], proba),
        "top_features": _importances(model.feature_importances_, RISK_FEATURES),
        "below_target_share": round(
            float(np.mean([final_approval[m] < approval_target for m in set(groups)])), 6
        ),
        "time_holdout": holdout,
    }
    return model, metrics


def fit_anomaly(
    X: np.ndarray,
    t_us: np.ndarray,
    budget: float,
    cutoff_us: int,
    seed: int,
    acceptable: np.ndarray | None,
    target: np.ndarray | None,
) -> tuple[IsolationForest, float, dict[str, Any]]:
    """IsolationForest on every pledge; threshold = the (1 - budget) quantile of the
    training scores (-score_samples: higher = more anomalous). With labels: precision and
    recall at several budgets, and on a time hold-out."""
    if X.shape[0] < 50:
        raise DataError(f"anomaly model: {X.shape[0]} pledges, need at least 50")
    model = IsolationForest(random_state=seed).fit(X)
    scores = -model.score_samples(X)
    threshold = budget_threshold(scores, budget)
    metrics: dict[str, Any] = {
        "alert_budget": budget,
        "threshold": round(threshold, 6),
        "score_scale": "-IsolationForest.score_samples (higher = more anomalous)",
        "pledges": int(X.shape[0]),
    }
    if acceptable is None or target is None:
        metrics["labels"] = "no labels"
        return model, threshold, metrics
    metrics["labels"] = "labels.json"
    metrics["at_budget"] = precision_recall_at(scores, threshold, acceptable, target)
    metrics["budgets"] = budget_table(scores, acceptable, target)
    before, after = t_us < cutoff_us, t_us >= cutoff_us
    holdout: dict[str, Any] = {"n_train": int(before.sum()), "n_test": int(after.sum())}
    if before.sum() >= 50 and after.any():
        early = IsolationForest(random_state=seed).fit(X[before])
        early_threshold = budget_threshold(-early.score_samples(X[before]), budget)
        late_scores = -early.score_samples(X[after])
        holdout.update(
            precision_recall_at(late_scores, early_threshold, acceptable[after], target[after])
        )
        holdout["status"] = "ok"
    else:
        holdout["status"] = "not enough data on one side of the cutoff"
    metrics["time_holdout"] = holdout
    return model, threshold, metrics


def fit_recommender_model(pledges: pd.DataFrame, seed: int) -> tuple[Recommender, dict[str, Any]]:
    """SVD recommender on every pledge; reconstruction MSE and leave-one-out hit rate@10
    (beside the popularity baseline)."""
    model = fit_recommender(pledges, n_components=RECOMMENDER_COMPONENTS, seed=seed)
    metrics: dict[str, Any] = {
        "n_components": model.n_components,
        "backers": model.shape[0],
        "projects": model.shape[1],
        "mse_observed": round(model.reconstruction_mse("observed"), 4),
        "mse_full": round(model.reconstruction_mse("full"), 4),
        "k": HIT_RATE_K,
    }
    try:
        methods: tuple[Literal["svd", "popular"], ...] = ("svd", "popular")
        for method in methods:
            metrics[f"hit_rate_{method}"] = round(
                evaluate_hit_rate(
                    pledges,
                    HIT_RATE_K,
                    seed,
                    n_components=RECOMMENDER_COMPONENTS,
                    method=method,
                ),
                6,
            )
    except DataError as exc:
        metrics["hit_rate_svd"] = metrics["hit_rate_popular"] = None
        metrics["note"] = str(exc)
    return model, metrics
