"""Backer segmentation: KMeans (k=3) on per-backer aggregates, clusters named by spend.

Aggregates come from the history's final state (every pledge and vote it holds). Money
aggregates enter as ``log1p`` dollars: pledge money is Pareto-distributed, and on raw
dollars KMeans spends a cluster on a handful of outliers (on the default history: 838 /
163 / 4 backers, silhouette 0.55) instead of describing the bulk. The silhouette on raw
dollars is reported beside ours for comparison.

Clusters are named ``Casuals``, ``Regulars``, ``Whales`` in order of their centroid's total
spend (dollars, from the inverse-transformed centroid).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from escrowguard.errors import DataError
from escrowguard.models.state import MemoryState

#: Columns of the segmentation model, in order.
SEGMENT_FEATURES: Final = (
    "pledge_count",
    "log_total_amount",
    "log_mean_amount",
    "distinct_projects",
    "votes_cast",
)
SEGMENT_NAMES: Final = ("Casuals", "Regulars", "Whales")
#: Silhouette is O(n^2): above this many backers it is estimated on a seeded sample.
SILHOUETTE_SAMPLE: Final = 5_000
#: Backers kept per plot (a seeded sample) for the segments scatter in the report.
SCATTER_POINTS: Final = 600


@dataclass(frozen=True)
class BackerAggregates:
    """One row per backer who pledged: ids, model features and readable profile columns."""

    backer_ids: list[str]
    X: np.ndarray  # (n, len(SEGMENT_FEATURES))
    total_dollars: np.ndarray
    mean_dollars: np.ndarray


def backer_aggregates(state: MemoryState) -> BackerAggregates:
    """Per-backer pledge count, spend, distinct projects and votes cast, from ``state``."""
    count: dict[str, int] = defaultdict(int)
    cents: dict[str, int] = defaultdict(int)
    projects: dict[str, set[str]] = defaultdict(set)
    votes: dict[str, int] = defaultdict(int)
    for project_id, pledges in state.project_pledges.items():
        for p in pledges:
            count[p.backer_id] += 1
            cents[p.backer_id] += p.amount_cents
            projects[p.backer_id].add(project_id)
    for ballots in state.milestone_votes.values():
        for v in ballots:
            votes[v.backer_id] += 1
    ids = sorted(count)
    if len(ids) < len(SEGMENT_NAMES):
        raise DataError(
            f"only {len(ids)} backers pledged: segmentation needs at least {len(SEGMENT_NAMES)}"
        )
    n = np.array([count[b] for b in ids], dtype=np.float64)
    total = np.array([cents[b] for b in ids], dtype=np.float64) / 100.0
    mean = total / n
    X = np.column_stack(
        [
            n,
            np.log1p(total),
            np.log1p(mean),
            [float(len(projects[b])) for b in ids],
            [float(votes[b]) for b in ids],
        ]
    )
    return BackerAggregates(ids, X, total, mean)


def _silhouette(X_scaled: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    sample = SILHOUETTE_SAMPLE if X_scaled.shape[0] > SILHOUETTE_SAMPLE else None
    return round(
        float(silhouette_score(X_scaled, labels, sample_size=sample, random_state=seed)), 6
    )


def fit_segments(aggregates: BackerAggregates, seed: int = 42) -> tuple[Pipeline, dict[str, Any]]:
    """Fit StandardScaler + KMeans(3) and describe the segments (names per cluster index,
    sizes, profiles, silhouette, a plot sample)."""
    model = Pipeline(
        [
            ("scale", StandardScaler()),
            ("kmeans", KMeans(n_clusters=len(SEGMENT_NAMES), n_init=10, random_state=seed)),
        ]
    )
    labels = model.fit_predict(aggregates.X)
    scaler: StandardScaler = model.named_steps["scale"]
    kmeans: KMeans = model.named_steps["kmeans"]
    centroids = scaler.inverse_transform(kmeans.cluster_centers_)
    spend = np.expm1(centroids[:, SEGMENT_FEATURES.index("log_total_amount")])
    names = [""] * len(SEGMENT_NAMES)
    for rank, cluster in enumerate(np.argsort(spend, kind="stable")):
        names[int(cluster)] = SEGMENT_NAMES[rank]
    profiles = []
    for cluster in np.argsort(spend, kind="stable"):
        members = labels == cluster
        profiles.append(
            {
                "segment": names[int(cluster)],
                "cluster": int(cluster),
                "backers": int(members.sum()),
                "share": round(float(members.mean()), 6),
                "centroid_total_dollars": round(float(spend[cluster]), 2),
                "mean_pledge_count": round(float(aggregates.X[members, 0].mean()), 3),
                "mean_total_dollars": round(float(aggregates.total_dollars[members].mean()), 2),
                "mean_pledge_dollars": round(float(aggregates.mean_dollars[members].mean()), 2),
                "mean_distinct_projects": round(float(aggregates.X[members, 3].mean()), 3),
                "mean_votes_cast": round(float(aggregates.X[members, 4].mean()), 3),
            }
        )
    X_scaled = scaler.transform(aggregates.X)
    metrics = {
        "features": list(SEGMENT_FEATURES),
        "names": names,
        "silhouette": _silhouette(X_scaled, labels, seed),
        "silhouette_raw_dollars": _raw_dollar_silhouette(aggregates, seed),
        "sizes": {p["segment"]: p["backers"] for p in profiles},
        "profiles": profiles,
        "backers": len(aggregates.backer_ids),
        "scatter": _scatter_sample(aggregates, labels, names, seed),
    }
    return model, metrics


def _raw_dollar_silhouette(aggregates: BackerAggregates, seed: int) -> float | None:
    """The same model on raw dollars (the seed report's way), for comparison only."""
    raw = aggregates.X.copy()
    raw[:, 1] = aggregates.total_dollars
    raw[:, 2] = aggregates.mean_dollars
    scaled = StandardScaler().fit_transform(raw)
    labels = KMeans(n_clusters=len(SEGMENT_NAMES), n_init=10, random_state=seed).fit_predict(scaled)
    return _silhouette(scaled, labels, seed)


def _scatter_sample(
    aggregates: BackerAggregates, labels: np.ndarray, names: list[str], seed: int
) -> dict[str, list[Any]]:
    """A seeded sample of backers (pledge count, total dollars, segment) for the plot."""
    n = len(aggregates.backer_ids)
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(n, size=min(n, SCATTER_POINTS), replace=False))
    return {
        "pledge_count": [int(v) for v in aggregates.X[pick, 0]],
        "total_dollars": [round(float(v), 2) for v in aggregates.total_dollars[pick]],
        "segment": [names[int(c)] for c in labels[pick]],
    }
