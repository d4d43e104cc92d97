"""Project recommendations for backers: truncated SVD of the backer x project pledge matrix.

The matrix holds each backer's total pledged dollars per project (pledges summed exactly in
integer cents first, then turned into float dollars for the linear algebra), or, with
``scale="log1p"``, ``log(1 + dollars)``: a few large pledges then weigh less (on synthetic
histories it ranks held-out projects better; dollars stay the default). A rank-k
TruncatedSVD (scikit-learn, randomized, seeded) gives backer factors ``U S`` and project
factors ``V``; a backer's score for a project is their dot product.

A fitted ``Recommender`` holds only numpy arrays, id lists and numbers (no estimator, no
lambdas), so it can go into a skops bundle as it is.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.decomposition import TruncatedSVD

from escrowguard.errors import DataError
from escrowguard.reasons import Reason

__all__ = [
    "Recommender",
    "evaluate_hit_rate",
    "fit_recommender",
    "leave_one_out_split",
]

_COLUMNS = ("backer_id", "project_id", "amount")
Scale = Literal["dollars", "log1p"]
_CHUNK_ROWS = 1024
_CHUNK_NNZ = 262_144


@dataclass(frozen=True, eq=False)
class Recommender:
    """A fitted recommender. Ids are sorted; row/column ``i`` belongs to ``*_ids[i]``.

    ``observed_*`` is the training matrix in CSR form (dollars), kept to exclude projects a
    backer already backed and to measure reconstruction error. ``project_backers`` counts
    distinct backers per project: the popularity ranking.
    """

    backer_ids: list[str]
    project_ids: list[str]
    backer_factors: np.ndarray  # (n_backers, k): U * S
    project_factors: np.ndarray  # (k, n_projects): V (right singular vectors)
    singular_values: np.ndarray  # (k,)
    observed_indptr: np.ndarray
    observed_indices: np.ndarray
    observed_amounts: np.ndarray
    project_backers: np.ndarray  # (n_projects,)
    n_components: int
    seed: int
    scale: str = "dollars"

    @property
    def shape(self) -> tuple[int, int]:
        """(backers, projects) of the training matrix."""
        return len(self.backer_ids), len(self.project_ids)

    def backer_index(self, backer_id: str) -> int | None:
        """Row of ``backer_id`` in the factors, or None for a backer not seen in training."""
        i = bisect.bisect_left(self.backer_ids, backer_id)
        return i if i < len(self.backer_ids) and self.backer_ids[i] == backer_id else None

    def backed(self, row: int) -> np.ndarray:
        """Column indices of the projects the backer in ``row`` pledged to."""
        return self.observed_indices[self.observed_indptr[row] : self.observed_indptr[row + 1]]

    def recommend(
        self,
        backer_id: str,
        k: int = 10,
        exclude_backed: bool = True,
        popular_fallback: bool = False,
    ) -> list[tuple[str, float]]:
        """Top-``k`` (project_id, score) for a backer, best first; ties go to the smaller id.

        An unknown backer raises ``DataError`` (reason ``unknown_backer``), unless
        ``popular_fallback`` is set: then the most-backed projects come back, scored by their
        number of distinct backers.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        row = self.backer_index(backer_id)
        if row is None:
            if popular_fallback:
                return self.popular(k)
            raise DataError(
                f"backer {backer_id!r} has no pledges in the training data; "
                "pass popular_fallback=True for the popularity ranking",
                Reason.UNKNOWN_BACKER,
            )
        scores = self.backer_factors[row] @ self.project_factors
        if exclude_backed:
            scores[self.backed(row)] = -np.inf
        return self._top(scores, k)

    def popular(self, k: int = 10, exclude_backer: str | None = None) -> list[tuple[str, float]]:
        """Top-``k`` projects by distinct backers, optionally without those a backer backed."""
        scores = self.project_backers.astype(np.float64)
        if exclude_backer is not None:
            row = self.backer_index(exclude_backer)
            if row is not None:
                scores[self.backed(row)] = -np.inf
        return self._top(scores, k)

    def _top(self, scores: np.ndarray, k: int) -> list[tuple[str, float]]:
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.project_ids[j], float(scores[j])) for j in order if np.isfinite(scores[j])]

    def reconstruction_mse(self, scope: Literal["observed", "full"] = "observed") -> float:
        """Mean squared error of the rank-k reconstruction of the training matrix.

        In the matrix's units: dollars^2, or (log1p dollars)^2 for ``scale="log1p"``.

        ``observed`` (the default) averages over the pledged (non-zero) cells only; ``full``
        over every backer x project cell, unpledged ones counting as 0. Both are exact and
        never build the dense matrix: the full figure uses
        ``|X - P|^2 = |X|^2 - 2 <X, P> + trace((U'U)(VV'))`` with ``P = U V``.
        """
        rows = np.repeat(np.arange(len(self.backer_ids)), np.diff(self.observed_indptr))
        amounts = self.observed_amounts
        observed_sq = 0.0
        cross = 0.0
        for start in range(0, amounts.size, _CHUNK_NNZ):
            stop = start + _CHUNK_NNZ
            pred = np.einsum(
                "ij,ji->i",
                self.backer_factors[rows[start:stop]],
                self.project_factors[:, self.observed_indices[start:stop]],
            )
            observed_sq += float(np.sum((amounts[start:stop] - pred) ** 2))
            cross += float(np.dot(amounts[start:stop], pred))
        if scope == "observed":
            return observed_sq / max(amounts.size, 1)
        if scope != "full":
            raise ValueError(f"scope must be 'observed' or 'full', got {scope!r}")
        gram_u = self.backer_factors.T @ self.backer_factors
        gram_v = self.project_factors @ self.project_factors.T
        total_sq = float(np.dot(amounts, amounts)) - 2 * cross + float(np.sum(gram_u * gram_v))
        n_b, n_p = self.shape
        return max(total_sq, 0.0) / (n_b * n_p)


def _aggregate(pledges: pd.DataFrame) -> pd.DataFrame:
    """One row per (backer_id, project_id) with the exact total in integer cents."""
    missing = [c for c in _COLUMNS if c not in pledges.columns]
    if missing:
        raise DataError(f"pledges table lacks column(s) {missing}; needs {list(_COLUMNS)}")
    if pledges.empty:
        raise DataError("pledges table is empty")
    frame = pledges.loc[:, list(_COLUMNS)]
    if frame.isna().any().any():
        raise DataError("pledges table has missing backer_id, project_id or amount values")
    try:
        dollars = pd.to_numeric(frame["amount"], errors="raise").astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"pledge amounts must be numbers: {exc}") from exc
    if not np.all(np.isfinite(dollars)) or (dollars <= 0).any():
        raise DataError("pledge amounts must be finite and > 0")
    cents = np.rint(dollars.to_numpy() * 100).astype(np.int64)
    table = pd.DataFrame(
        {
            "backer_id": frame["backer_id"].astype(str).to_numpy(),
            "project_id": frame["project_id"].astype(str).to_numpy(),
            "amount_cents": cents,
        }
    )
    return table.groupby(["backer_id", "project_id"], as_index=False, sort=True)[
        "amount_cents"
    ].sum()


def fit_recommender(
    pledges: pd.DataFrame,
    n_components: int = 20,
    seed: int = 42,
    *,
    scale: Scale = "dollars",
) -> Recommender:
    """Fit the SVD recommender on a pledges table (columns backer_id, project_id, amount).

    Amounts are dollars; repeated pledges of a backer to a project are summed (then
    ``log1p``-transformed if ``scale="log1p"``). The rank is
    ``min(n_components, backers - 1, projects - 1)`` (TruncatedSVD needs it below both
    sides); the fitted object records the rank used.
    """
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if scale not in ("dollars", "log1p"):
        raise ValueError(f"scale must be 'dollars' or 'log1p', got {scale!r}")
    pairs = _aggregate(pledges)
    backer_codes, backer_ids = pd.factorize(pairs["backer_id"], sort=True)
    project_codes, project_ids = pd.factorize(pairs["project_id"], sort=True)
    n_b, n_p = len(backer_ids), len(project_ids)
    rank = min(n_components, n_b - 1, n_p - 1)
    if rank < 1:
        raise DataError(
            f"need at least 2 backers and 2 projects to fit, got {n_b} and {n_p}",
        )
    values = pairs["amount_cents"].to_numpy() / 100.0
    if scale == "log1p":
        values = np.log1p(values)
    matrix = sparse.csr_matrix(
        (values, (backer_codes, project_codes)),
        shape=(n_b, n_p),
        dtype=np.float64,
    )
    matrix.sort_indices()
    svd = TruncatedSVD(n_components=rank, algorithm="randomized", random_state=seed)
    backer_factors = svd.fit_transform(matrix)
    return Recommender(
        backer_ids=[str(b) for b in backer_ids],
        project_ids=[str(p) for p in project_ids],
        backer_factors=np.ascontiguousarray(backer_factors, dtype=np.float64),
        project_factors=np.ascontiguousarray(svd.components_, dtype=np.float64),
        singular_values=np.asarray(svd.singular_values_, dtype=np.float64),
        observed_indptr=matrix.indptr.astype(np.int64),
        observed_indices=matrix.indices.astype(np.int64),
        observed_amounts=matrix.data.astype(np.float64),
        project_backers=np.bincount(project_codes, minlength=n_p).astype(np.int64),
        n_components=rank,
        seed=seed,
        scale=scale,
    )


def leave_one_out_split(pledges: pd.DataFrame, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hide one random backed project per backer who backed at least 2 distinct projects.

    Returns ``(train, hidden)``: ``train`` is the pledges table without every pledge of a
    hidden (backer, project) pair (so the project is truly unseen for that backer);
    ``hidden`` has one row (backer_id, project_id) per evaluated backer. Deterministic in
    the seed and independent of the input row order.
    """
    pairs = _aggregate(pledges)
    rng = np.random.default_rng(seed)
    keyed = pairs.assign(_key=rng.random(len(pairs)))
    per_backer = keyed.groupby("backer_id")["project_id"].transform("size")
    eligible = keyed[per_backer >= 2]
    if eligible.empty:
        raise DataError("no backer has pledged to 2 or more projects: nothing to hold out")
    hidden = (
        eligible.sort_values(["backer_id", "_key"])
        .drop_duplicates("backer_id", keep="first")
        .loc[:, ["backer_id", "project_id"]]
        .reset_index(drop=True)
    )
    hidden_pairs = pd.MultiIndex.from_frame(hidden)
    original = pd.MultiIndex.from_arrays(
        [pledges["backer_id"].astype(str), pledges["project_id"].astype(str)]
    )
    keep = ~original.isin(hidden_pairs)
    return pledges.loc[keep].reset_index(drop=True), hidden


def evaluate_hit_rate(
    pledges: pd.DataFrame,
    k: int = 10,
    seed: int = 42,
    *,
    n_components: int = 20,
    scale: Scale = "dollars",
    method: Literal["svd", "popular"] = "svd",
) -> float:
    """Leave-one-out hit rate@k: share of held-out projects ranked in a backer's top k.

    ``leave_one_out_split`` hides one project per backer with >= 2 distinct projects; one
    model is fitted on all the rest (a single refit, not one per backer); a hit is the hidden
    project within the top ``k`` of the projects that backer has not backed in training,
    ranked as ``Recommender.recommend`` ranks them. A hidden project that appears nowhere in
    training counts as a miss. ``method="popular"`` ranks by distinct backers instead: the
    baseline to beat.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if method not in ("svd", "popular"):
        raise ValueError(f"method must be 'svd' or 'popular', got {method!r}")
    train, hidden = leave_one_out_split(pledges, seed)
    model = fit_recommender(train, n_components=n_components, seed=seed, scale=scale)
    column = {project: j for j, project in enumerate(model.project_ids)}
    rows = np.array([model.backer_index(b) for b in hidden["backer_id"]], dtype=np.int64)
    cols = np.array([column.get(p, -1) for p in hidden["project_id"]], dtype=np.int64)
    known = cols >= 0
    rows, cols = rows[known], cols[known]
    popularity = model.project_backers.astype(np.float64)
    project_order = np.arange(len(model.project_ids))
    hits = 0
    for start in range(0, rows.size, _CHUNK_ROWS):
        r, c = rows[start : start + _CHUNK_ROWS], cols[start : start + _CHUNK_ROWS]
        if method == "svd":
            scores = model.backer_factors[r] @ model.project_factors
        else:
            scores = np.tile(popularity, (r.size, 1))
        for i, row in enumerate(r):
            scores[i, model.backed(int(row))] = -np.inf
        target = scores[np.arange(r.size), c][:, None]
        ahead = (scores > target) | ((scores == target) & (project_order < c[:, None]))
        hits += int(np.count_nonzero(ahead.sum(axis=1) < k))
    return hits / len(hidden)
