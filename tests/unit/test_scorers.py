"""Fast scorers equal scikit-learn to 1e-6: random rows, rows on split thresholds, float32
rounding edges, batches of 1/7/1000, pipelines and separate scalers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from escrowguard.models.scorers import (
    IsolationForestScorer,
    Scorer,
    ScoringSuite,
    Standardizer,
    compile_model,
    is_scorable,
    score_batch,
)

N_FEATURES = 12
ATOL = 1e-6


def training_data(seed: int = 7, n: int = 3000) -> tuple[np.ndarray, np.ndarray]:
    """Skewed, mixed-scale features (like the pledge/vote features) and a noisy label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_FEATURES))
    x[:, 0] = rng.lognormal(4.0, 1.5, n)  # amounts
    x[:, 1] = rng.poisson(3.0, n)  # counts: many ties
    x[:, 2] = rng.random(n) < 0.1  # a flag
    x[:, 3] *= 1e-4  # a tiny-scale feature: thresholds near float32 resolution
    y = (x[:, 4] + 0.5 * x[:, 5] + rng.normal(scale=0.8, size=n) > 0.3).astype(int)
    return x, y


X_TRAIN, Y_TRAIN = training_data()


def _proba(model: Any, x: np.ndarray) -> np.ndarray:
    return model.predict_proba(x)[:, 1]


def _samples(model: Any, x: np.ndarray) -> np.ndarray:
    return model.score_samples(x)


# name -> (fitted model, the scikit-learn output the scorer must equal)
Case = tuple[Any, Callable[[Any, np.ndarray], np.ndarray]]


@pytest.fixture(scope="module")
def cases() -> dict[str, Case]:
    x, y = X_TRAIN, Y_TRAIN
    iso = IsolationForest(random_state=42)
    gb = GradientBoostingClassifier(n_estimators=50, max_depth=5, learning_rate=0.1, random_state=1)
    rf = RandomForestClassifier(
        n_estimators=100, max_depth=10, class_weight="balanced", random_state=2
    )
    return {
        "isolation_forest": (iso.fit(x), _samples),
        "gradient_boosting": (gb.fit(x, y), _proba),
        "random_forest": (rf.fit(x, y), _proba),
        "scaled_isolation_forest": (
            make_pipeline(StandardScaler(), IsolationForest(random_state=42)).fit(x),
            _samples,
        ),
        "scaled_gradient_boosting": (
            make_pipeline(
                StandardScaler(), GradientBoostingClassifier(n_estimators=20, random_state=3)
            ).fit(x, y),
            _proba,
        ),
        "scaled_random_forest": (
            make_pipeline(
                StandardScaler(),
                RandomForestClassifier(n_estimators=30, max_depth=10, random_state=4),
            ).fit(x, y),
            _proba,
        ),
        "subsampled_isolation_forest": (
            IsolationForest(max_features=0.5, max_samples=64, random_state=5).fit(x),
            _samples,
        ),
        "zero_init_gradient_boosting": (
            GradientBoostingClassifier(n_estimators=10, init="zero", random_state=6).fit(x, y),
            _proba,
        ),
    }


def _scaled_space(model: Any) -> tuple[Any, Standardizer | None]:
    """The tree model and, for a pipeline, its scaler (edge rows are built in scaled space)."""
    if isinstance(model, Pipeline):
        return model.steps[-1][1], Standardizer.from_sklearn(model.steps[0][1])
    return model, None


def edge_rows(model: Any, n: int, seed: int = 11) -> np.ndarray:
    """Rows whose features sit on split thresholds and on the float32 values around them.

    Each row starts from a training row; then, for a random split node, the node's feature
    is set to one of: the float64 threshold, its float32 rounding, the float32 neighbours
    of that rounding, and the threshold +- 1e-12 (same float32, other side in float64).
    """
    rng = np.random.default_rng(seed)
    estimator, scaler = _scaled_space(model)
    trees = [e.tree_ for e in np.ravel(estimator.estimators_)]
    feature_maps = getattr(estimator, "estimators_features_", None)
    rows = X_TRAIN[rng.integers(0, X_TRAIN.shape[0], n)].copy()
    if scaler is not None:
        rows = scaler.transform(rows)
    for row in rows:
        for _ in range(4):
            t = int(rng.integers(len(trees)))
            internal = np.flatnonzero(trees[t].children_left != -1)
            node = int(rng.choice(internal))
            col = int(trees[t].feature[node])
            if feature_maps is not None and estimator.max_features != 1.0:
                col = int(feature_maps[t][col])
            thr = float(trees[t].threshold[node])
            f32 = np.float32(thr)
            candidates = [
                thr,
                float(f32),
                float(np.nextafter(f32, np.float32(np.inf))),
                float(np.nextafter(f32, np.float32(-np.inf))),
                thr + 1e-12,
                thr - 1e-12,
            ]
            row[col] = candidates[int(rng.integers(len(candidates)))]
    if scaler is not None:  # back to raw space: may move a hair off the edge, still close
        assert scaler.mean is not None and scaler.scale is not None
        rows = rows * scaler.scale + scaler.mean
    return rows


def random_rows(n: int, seed: int = 3) -> np.ndarray:
    """Rows like the training data, plus some far outside it."""
    rng = np.random.default_rng(seed)
    x, _ = training_data(seed=seed, n=n)
    x[::5] *= rng.choice([-50.0, 50.0], size=(len(x[::5]), 1))
    return x


@pytest.mark.parametrize("batch", [1, 7, 1000])
@pytest.mark.parametrize(
    "name",
    [
        "isolation_forest",
        "gradient_boosting",
        "random_forest",
        "scaled_isolation_forest",
        "scaled_gradient_boosting",
        "scaled_random_forest",
        "subsampled_isolation_forest",
        "zero_init_gradient_boosting",
    ],
)
def test_scorer_equals_sklearn(cases: dict[str, Case], name: str, batch: int) -> None:
    model, reference = cases[name]
    scorer = compile_model(model)
    for rows in (random_rows(batch), edge_rows(model, batch)):
        got = scorer.score(rows)
        assert got.dtype == np.float64 and got.shape == (batch,)
        np.testing.assert_allclose(got, reference(model, rows), rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", ["isolation_forest", "gradient_boosting", "random_forest"])
def test_edge_rows_hit_both_sides_of_a_split(cases: dict[str, Case], name: str) -> None:
    """The edge rows do probe exact ties: x == threshold must go left, like scikit-learn."""
    model, _ = cases[name]
    tree = np.ravel(model.estimators_)[0].tree_
    node = int(np.flatnonzero(tree.children_left != -1)[0])
    col, thr = int(tree.feature[node]), float(tree.threshold[node])
    below = np.float32(thr)
    if float(below) > thr:
        below = np.nextafter(below, np.float32(-np.inf))
    rows = np.repeat(X_TRAIN[:1], 2, axis=0)
    rows[:, col] = [float(below), float(np.nextafter(below, np.float32(np.inf)))]
    leaves = tree.apply(rows.astype(np.float32))
    assert leaves[0] != leaves[1]  # one float32 step apart, on either side
    reference = _proba if name != "isolation_forest" else _samples
    np.testing.assert_allclose(
        compile_model(model).score(rows), reference(model, rows), rtol=0, atol=ATOL
    )


def test_isolation_forest_decision_function(cases: dict[str, Case]) -> None:
    model, _ = cases["isolation_forest"]
    scorer = compile_model(model)
    assert isinstance(scorer, IsolationForestScorer)
    rows = random_rows(50)
    np.testing.assert_allclose(
        scorer.decision_function(rows), model.decision_function(rows), rtol=0, atol=ATOL
    )


def test_contamination_offset_is_kept() -> None:
    model = IsolationForest(n_estimators=20, contamination=0.05, random_state=0).fit(X_TRAIN)
    scorer = compile_model(model)
    assert isinstance(scorer, IsolationForestScorer)
    assert scorer.offset == model.offset_ != -0.5
    rows = random_rows(20)
    np.testing.assert_allclose(
        scorer.decision_function(rows), model.decision_function(rows), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize("name", ["isolation_forest", "random_forest"])
def test_nan_follows_missing_go_to_left(cases: dict[str, Case], name: str) -> None:
    model, reference = cases[name]
    rows = random_rows(40)
    rows[np.random.default_rng(0).random(rows.shape) < 0.2] = np.nan
    for batch in (rows[:1], rows):
        np.testing.assert_allclose(
            compile_model(model).score(batch), reference(model, batch), rtol=0, atol=ATOL
        )


def test_separate_scaler_equals_pipeline() -> None:
    scaler = StandardScaler().fit(X_TRAIN)
    model = IsolationForest(n_estimators=30, random_state=1).fit(scaler.transform(X_TRAIN))
    rows = random_rows(100)
    np.testing.assert_allclose(
        compile_model(model, scaler=scaler).score(rows),
        model.score_samples(scaler.transform(rows)),
        rtol=0,
        atol=ATOL,
    )


@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False)])
def test_standardizer_is_bit_identical(with_mean: bool, with_std: bool) -> None:
    scaler = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X_TRAIN)
    rows = random_rows(64)
    assert np.array_equal(Standardizer.from_sklearn(scaler).transform(rows), scaler.transform(rows))


def test_kmeans_predicts_nearest_centroid() -> None:
    model = KMeans(n_clusters=3, n_init=3, random_state=0).fit(X_TRAIN)
    rows = random_rows(500)
    scorer = compile_model(model)
    assert scorer.kind == "kmeans"
    assert np.array_equal(scorer.score(rows), model.predict(rows).astype(np.float64))


def test_scoring_suite_scores_each_model_on_its_own_rows(cases: dict[str, Case]) -> None:
    models = {
        "anomaly": cases["isolation_forest"][0],
        "risk": cases["gradient_boosting"][0],
        "success": cases["random_forest"][0],
        "svd": TruncatedSVD(n_components=2, random_state=0).fit(X_TRAIN),
    }
    suite = ScoringSuite.from_models(models)
    assert sorted(suite.scorers) == ["anomaly", "risk", "success"]  # the SVD is not scored
    inputs = {"anomaly": random_rows(5, seed=1), "risk": random_rows(9, seed=2)}
    got = suite.score(inputs)
    assert sorted(got) == ["anomaly", "risk"]
    np.testing.assert_allclose(got["anomaly"], models["anomaly"].score_samples(inputs["anomaly"]))
    np.testing.assert_allclose(got["risk"], _proba(models["risk"], inputs["risk"]))
    same = score_batch(suite.scorers, inputs)
    assert all(np.array_equal(same[k], got[k]) for k in got)
    with pytest.raises(KeyError, match="nope"):
        suite.score({"nope": inputs["risk"]})


def test_kinds(cases: dict[str, Case]) -> None:
    kinds = {name: compile_model(model).kind for name, (model, _) in cases.items()}
    assert kinds["isolation_forest"] == kinds["scaled_isolation_forest"] == "isolation_forest"
    assert kinds["gradient_boosting"] == "gradient_boosting"
    assert kinds["random_forest"] == "random_forest"


def test_empty_batch(cases: dict[str, Case]) -> None:
    scorer = compile_model(cases["random_forest"][0])
    assert scorer.score(np.empty((0, N_FEATURES))).shape == (0,)


def test_wrong_shape_is_refused(cases: dict[str, Case]) -> None:
    scorer: Scorer = compile_model(cases["gradient_boosting"][0])
    with pytest.raises(ValueError, match=r"\(n_rows, 12\)"):
        scorer.score(np.zeros((3, 11)))
    with pytest.raises(ValueError):
        scorer.score(np.zeros(12))


def test_unsupported_models_are_refused() -> None:
    logistic = LogisticRegression().fit(X_TRAIN[:200], Y_TRAIN[:200])
    assert not is_scorable(logistic)
    with pytest.raises(TypeError, match="LogisticRegression"):
        compile_model(logistic)
    odd_pipeline = make_pipeline(MinMaxScaler(), IsolationForest(n_estimators=5)).fit(X_TRAIN)
    assert not is_scorable(odd_pipeline)
    with pytest.raises(TypeError, match="MinMaxScaler"):
        compile_model(odd_pipeline)
    three_classes = np.arange(300) % 3
    multiclass = GradientBoostingClassifier(n_estimators=3).fit(X_TRAIN[:300], three_classes)
    with pytest.raises(ValueError, match="binary"):
        compile_model(multiclass)
    rf3 = RandomForestClassifier(n_estimators=3).fit(X_TRAIN[:300], three_classes)
    with pytest.raises(ValueError, match="binary"):
        compile_model(rf3)
