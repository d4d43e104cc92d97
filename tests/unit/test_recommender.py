"""SVD project recommender: fitting, reconstruction error, ranking, leave-one-out hit rate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from escrowguard.errors import DataError
from escrowguard.models.recommender import (
    Recommender,
    evaluate_hit_rate,
    fit_recommender,
    leave_one_out_split,
)
from escrowguard.reasons import Reason


def clustered_pledges(
    n_backers: int = 300, n_projects: int = 120, n_groups: int = 4, seed: int = 0
) -> pd.DataFrame:
    """Backers in ``n_groups`` taste groups pledge 90% of the time to their group's projects,
    favouring a few popular ones (Pareto weights); amounts are log-normal dollars."""
    rng = np.random.default_rng(seed)
    group = np.arange(n_projects) % n_groups
    weight = rng.pareto(1.5, n_projects) + 1
    rows = []
    for b in range(n_backers):
        for _ in range(int(rng.integers(2, 9))):
            g = b % n_groups if rng.random() < 0.9 else int(rng.integers(n_groups))
            candidates = np.flatnonzero(group == g)
            p = rng.choice(candidates, p=weight[candidates] / weight[candidates].sum())
            rows.append((f"b{b:04d}", f"p{p:04d}", round(float(rng.lognormal(3.5, 1.0)), 2)))
    return pd.DataFrame(rows, columns=["backer_id", "project_id", "amount"])


def dense(model: Recommender) -> np.ndarray:
    matrix = np.zeros(model.shape)
    rows = np.repeat(np.arange(model.shape[0]), np.diff(model.observed_indptr))
    matrix[rows, model.observed_indices] = model.observed_amounts
    return matrix


@pytest.fixture(scope="module")
def pledges() -> pd.DataFrame:
    return clustered_pledges()


@pytest.fixture(scope="module")
def model(pledges: pd.DataFrame) -> Recommender:
    return fit_recommender(pledges, n_components=8, seed=42)


# --- fitting -----------------------------------------------------------------------------


def test_fit_builds_sorted_ids_and_factor_shapes(model: Recommender) -> None:
    n_b, n_p = model.shape
    assert model.backer_ids == sorted(model.backer_ids)
    assert model.project_ids == sorted(model.project_ids)
    assert model.backer_factors.shape == (n_b, 8)
    assert model.project_factors.shape == (8, n_p)
    assert np.all(np.diff(model.singular_values) <= 0)


def test_repeat_pledges_are_summed_exactly_in_cents() -> None:
    table = pd.DataFrame(
        {
            "backer_id": ["b1", "b1", "b2", "b3"],
            "project_id": ["p1", "p1", "p2", "p1"],
            "amount": [0.1, 0.2, 5.0, 7.5],
        }
    )
    model = fit_recommender(table, n_components=1)
    assert dense(model)[0, 0] == 0.3  # not 0.30000000000000004
    assert model.project_backers.tolist() == [2, 1]


def test_rank_is_capped_below_the_smaller_side() -> None:
    table = pd.DataFrame(
        {"backer_id": ["a", "b", "c"], "project_id": ["x", "y", "x"], "amount": [1, 2, 3]}
    )
    assert fit_recommender(table, n_components=20).n_components == 1


def test_fit_is_deterministic_in_the_seed(pledges: pd.DataFrame, model: Recommender) -> None:
    again = fit_recommender(pledges, n_components=8, seed=42)
    np.testing.assert_array_equal(again.backer_factors, model.backer_factors)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        (pd.DataFrame({"backer_id": ["a"], "project_id": ["x"]}), "lacks column"),
        (pd.DataFrame(columns=["backer_id", "project_id", "amount"]), "empty"),
        (
            pd.DataFrame({"backer_id": ["a", "b"], "project_id": ["x", "y"], "amount": [1, 0]}),
            "> 0",
        ),
        (
            pd.DataFrame({"backer_id": ["a", None], "project_id": ["x", "y"], "amount": [1, 2]}),
            "missing",
        ),
        (
            pd.DataFrame({"backer_id": ["a", "b"], "project_id": ["x", "x"], "amount": [1, 2]}),
            "2 projects",
        ),
    ],
)
def test_fit_rejects_unusable_tables(table: pd.DataFrame, match: str) -> None:
    with pytest.raises(DataError, match=match):
        fit_recommender(table)


# --- reconstruction error ----------------------------------------------------------------


def test_reconstruction_mse_matches_the_dense_computation(model: Recommender) -> None:
    x = dense(model)
    error = (x - model.backer_factors @ model.project_factors) ** 2
    assert model.reconstruction_mse() == pytest.approx(error[x != 0].mean(), rel=1e-9)
    assert model.reconstruction_mse("full") == pytest.approx(error.mean(), rel=1e-9)


def test_reconstruction_improves_with_rank(pledges: pd.DataFrame) -> None:
    errors = [
        fit_recommender(pledges, n_components=k).reconstruction_mse("full") for k in (2, 8, 32)
    ]
    assert errors[0] > errors[1] > errors[2]


def test_reconstruction_scope_must_be_known(model: Recommender) -> None:
    with pytest.raises(ValueError, match="scope"):
        model.reconstruction_mse("sampled")  # type: ignore[arg-type]


# --- recommending ------------------------------------------------------------------------


def test_recommend_ranks_unbacked_projects_by_score(model: Recommender) -> None:
    backer = model.backer_ids[5]
    backed = {model.project_ids[j] for j in model.backed(5)}
    recs = model.recommend(backer, k=10)
    assert len(recs) == 10
    assert not backed & {p for p, _ in recs}
    scores = [s for _, s in recs]
    assert scores == sorted(scores, reverse=True)
    full = model.backer_factors[5] @ model.project_factors
    for project, score in recs:
        assert score == pytest.approx(full[model.project_ids.index(project)])


def test_recommend_can_include_backed_projects(model: Recommender) -> None:
    backer = model.backer_ids[5]
    recs = model.recommend(backer, k=len(model.project_ids), exclude_backed=False)
    assert len(recs) == len(model.project_ids)
    assert len(model.recommend(backer, k=len(model.project_ids))) == len(model.project_ids) - len(
        model.backed(5)
    )


def test_recommend_favours_the_backers_taste_group(model: Recommender) -> None:
    # Backer b0000 is in group 0: projects p0000, p0004, p0008, ... (index % 4 == 0).
    recs = model.recommend("b0000", k=10)
    in_group = sum(int(p[1:]) % 4 == 0 for p, _ in recs)
    assert in_group >= 8


def test_ties_go_to_the_smaller_project_id() -> None:
    table = pd.DataFrame(
        {"backer_id": ["a", "b", "c"], "project_id": ["z", "y", "x"], "amount": [1, 1, 1]}
    )
    model = fit_recommender(table)
    assert [p for p, _ in model.popular(k=3)] == ["x", "y", "z"]


def test_unknown_backer_is_a_data_error_unless_fallback(model: Recommender) -> None:
    with pytest.raises(DataError, match="no pledges") as info:
        model.recommend("nobody")
    assert info.value.reason == Reason.UNKNOWN_BACKER
    fallback = model.recommend("nobody", k=5, popular_fallback=True)
    assert fallback == model.popular(k=5)
    counts = [s for _, s in fallback]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == model.project_backers.max()


def test_model_round_trips_through_skops(model: Recommender) -> None:
    data = sio.dumps(model)
    untrusted = sio.get_untrusted_types(data=data)
    assert untrusted == ["escrowguard.models.recommender.Recommender"]  # nothing else inside
    restored = sio.loads(data, trusted=untrusted)
    assert restored.recommend("b0007", k=5) == model.recommend("b0007", k=5)


# --- leave-one-out -----------------------------------------------------------------------


def test_split_hides_one_project_per_eligible_backer(pledges: pd.DataFrame) -> None:
    train, hidden = leave_one_out_split(pledges, seed=42)
    distinct = pledges.groupby("backer_id")["project_id"].nunique()
    assert set(hidden["backer_id"]) == set(distinct[distinct >= 2].index)
    assert hidden["backer_id"].is_unique
    train_pairs = set(zip(train["backer_id"], train["project_id"], strict=True))
    for pair in zip(hidden["backer_id"], hidden["project_id"], strict=True):
        assert pair not in train_pairs
    assert len(train) + len(hidden) <= len(pledges)


def test_split_ignores_row_order(pledges: pd.DataFrame) -> None:
    shuffled = pledges.sample(frac=1.0, random_state=3)
    _, a = leave_one_out_split(pledges, seed=9)
    _, b = leave_one_out_split(shuffled, seed=9)
    pd.testing.assert_frame_equal(a, b)


def test_backers_with_one_project_are_not_evaluated() -> None:
    table = pd.DataFrame(
        {
            "backer_id": ["a", "a", "a", "b", "b"],
            "project_id": ["x", "x", "y", "x", "x"],
            "amount": [1, 2, 3, 4, 5],
        }
    )
    _, hidden = leave_one_out_split(table)
    assert hidden["backer_id"].tolist() == ["a"]
    with pytest.raises(DataError, match="2 or more"):
        leave_one_out_split(table[table["backer_id"] == "b"])


def test_hit_rate_beats_popularity_on_clustered_history(pledges: pd.DataFrame) -> None:
    popular = evaluate_hit_rate(pledges, k=10, method="popular")
    svd = evaluate_hit_rate(pledges, k=10, n_components=8)
    svd_log = evaluate_hit_rate(pledges, k=10, n_components=4, scale="log1p")
    # Golden figures for this seeded history (295 held-out backers).
    assert popular == pytest.approx(111 / 295)
    assert svd == pytest.approx(144 / 295)
    assert svd_log == pytest.approx(182 / 295)
    assert svd > popular + 0.05
    assert svd_log > popular + 0.2


def test_hit_rate_at_all_projects_counts_every_known_hidden_project(
    pledges: pd.DataFrame,
) -> None:
    train, hidden = leave_one_out_split(pledges, seed=42)
    known = hidden["project_id"].isin(set(train["project_id"])).mean()
    assert evaluate_hit_rate(pledges, k=10_000) == pytest.approx(known)


def test_hit_rate_rejects_bad_arguments(pledges: pd.DataFrame) -> None:
    with pytest.raises(ValueError):
        evaluate_hit_rate(pledges, k=0)
    with pytest.raises(ValueError):
        evaluate_hit_rate(pledges, method="random")  # type: ignore[arg-type]
