"""Fast scorers: fitted scikit-learn models compiled once into flat numpy arrays.

scikit-learn scores one tree at a time behind input validation and joblib (about 9 ms for
one row through a 100-tree IsolationForest). Here every tree of a forest is renumbered
breadth-first (siblings adjacent, so ``right == left + 1``) and all trees' nodes are
concatenated into flat arrays (left child, feature, threshold, leaf value). A batch is
scored level by level over all (row, tree) pairs at once, in chunks that stay in cache:
gather each pair's node, gather the feature value, compare, step to the child. Leaves point
at themselves with an infinite threshold, so every pair simply runs ``depth`` levels. For a
single row a plain Python loop over the trees beats numpy's per-call overhead; a small cost
model (measured constants) picks the path per batch size.

A compiled scorer is plain arrays (``scorer_arrays`` / ``scorer_from_arrays``): a bundle stores
them beside its models, so a worker scores without importing scikit-learn or SciPy (~150 MiB
of its resident memory). Only compiling (``compile_model``) imports scikit-learn.

Outputs equal scikit-learn's to ~1e-15 (tests hold them to 1e-6): trees compare the input
cast to float32 (``x <= threshold`` goes left; NaN follows ``missing_go_to_left`` as in
``Tree.apply``). The float64 thresholds are stored rounded *down* to float32, which gives the
same answer for every float32 input (``x <= t`` iff ``x <= largest float32 <= t``).

>>> import numpy as np
>>> from sklearn.ensemble import IsolationForest
>>> X = np.random.default_rng(0).normal(size=(300, 4))
>>> forest = IsolationForest(random_state=42).fit(X)
>>> scorer = compile_model(forest)
>>> bool(np.allclose(scorer.score(X[:5]), forest.score_samples(X[:5]), rtol=0, atol=1e-12))
True
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import numpy as np

if TYPE_CHECKING:  # compiling needs scikit-learn; scoring does not (see the module doc)
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )
    from sklearn.preprocessing import StandardScaler

__all__ = [
    "FlatForest",
    "GradientBoostingScorer",
    "IsolationForestScorer",
    "KMeansScorer",
    "RandomForestScorer",
    "Scorer",
    "ScorerKind",
    "ScoringSuite",
    "Standardizer",
    "average_path_length",
    "compile_model",
    "compile_trees",
    "is_scorable",
    "score_batch",
    "scorer_arrays",
    "scorer_from_arrays",
]

ScorerKind = Literal["isolation_forest", "gradient_boosting", "random_forest", "kmeans"]

#: One tree node while compiling (the forest keeps one contiguous array per field).
_NODE: Final = np.dtype(
    [
        ("left", np.intp),
        ("feature", np.intp),
        ("threshold", np.float32),
        ("missing_left", bool),
        ("is_leaf", bool),
        ("value", np.float64),
    ]
)
_LEAF: Final = -1  # scikit-learn's TREE_LEAF in children_left


def _round_down_f32(values: np.ndarray) -> np.ndarray:
    """The largest float32 <= each float64 value (so float32 ``x <= t`` keeps its answer)."""
    out = values.astype(np.float32)
    above = out.astype(np.float64) > values
    out[above] = np.nextafter(out[above], np.float32(-np.inf))
    return out


def _breadth_first(children_left: np.ndarray, children_right: np.ndarray) -> tuple[Any, int]:
    """New id of every old node id (breadth-first, siblings adjacent) and the tree depth."""
    new_id = np.zeros(children_left.shape[0], dtype=np.intp)
    frontier = np.zeros(1, dtype=np.intp)
    next_id, depth = 1, 0
    while True:
        internal = frontier[children_left[frontier] != _LEAF]
        if internal.size == 0:
            return new_id, depth
        kids = np.stack([children_left[internal], children_right[internal]], axis=1).ravel()
        new_id[kids] = np.arange(next_id, next_id + kids.size)
        next_id += kids.size
        frontier = kids
        depth += 1


@dataclass(frozen=True, eq=False)
class FlatForest:
    """All trees of a forest as flat arrays; ``sum_leaves`` adds each row's leaf values.

    Node ``i`` of the concatenation: go to ``left[i] + (x[feature[i]] > threshold[i])``.
    Leaves have ``left`` = themselves and threshold +inf, so traversal needs no leaf test.
    """

    left: np.ndarray  # intp: left child (the right child is left + 1); leaves: themselves
    feature: np.ndarray  # intp: column of X the node reads (0 at leaves)
    threshold: np.ndarray  # float32, rounded down; +inf at leaves
    missing_left: np.ndarray  # bool: where NaN goes (True at leaves: stay)
    leaf_value: np.ndarray  # float64 (0 at internal nodes)
    roots: np.ndarray  # intp: first node of each tree
    depth: int  # levels of the deepest tree
    n_features: int
    row_loop_max_rows: int  # batches up to this size take the per-row Python loop
    # the same nodes as Python lists, for the per-row loop
    py_left: list[int]
    py_feature: list[int]  # -1 at leaves
    py_threshold: list[float]
    py_leaf_value: list[float]
    py_roots: list[int]

    @property
    def n_trees(self) -> int:
        """Number of trees."""
        return int(self.roots.shape[0])

    def sum_leaves(self, x32: np.ndarray) -> np.ndarray:
        """Per row, the sum over trees of the value of the leaf the row lands in.

        ``x32`` is C-contiguous float32 of shape (n_rows, n_features).
        """
        n_rows = x32.shape[0]
        with_nan = bool(np.isnan(x32).any())
        if n_rows <= self.row_loop_max_rows and not with_nan:
            return self._sum_leaves_rows(x32)
        sums = np.empty(n_rows, dtype=np.float64)
        chunk = max(1, _PAIRS_PER_CHUNK // self.n_trees)
        buffers = _Buffers(min(chunk, n_rows) * self.n_trees)
        for start in range(0, n_rows, chunk):
            block = x32[start : start + chunk]
            leaves = self._leaves(block, buffers, with_nan)
            sums[start : start + block.shape[0]] = (
                self.leaf_value.take(leaves, mode="clip").reshape(block.shape[0], -1).sum(axis=1)
            )
        return sums

    def _leaves(self, x32: np.ndarray, buf: _Buffers, with_nan: bool) -> np.ndarray:
        """Leaf id per (row, tree), row-major: level-synchronous traversal of all pairs."""
        n_pairs = x32.shape[0] * self.n_trees
        idx, pos, tmp = buf.idx[:n_pairs], buf.pos[:n_pairs], buf.tmp[:n_pairs]
        value, threshold, right = buf.value[:n_pairs], buf.threshold[:n_pairs], buf.right[:n_pairs]
        # level 0: every pair sits at its tree's root, so read the columns directly
        roots = self.roots
        np.copyto(value.reshape(x32.shape[0], -1), x32[:, self.feature[roots]])
        np.copyto(threshold.reshape(x32.shape[0], -1), self.threshold[roots])
        np.copyto(idx.reshape(x32.shape[0], -1), roots)
        row_start = np.repeat(
            np.arange(0, x32.shape[0] * self.n_features, self.n_features, dtype=np.intp),
            self.n_trees,
        )
        flat = x32.ravel()
        for level in range(self.depth):
            if level:
                np.take(self.feature, idx, out=pos, mode="clip")
                pos += row_start
                np.take(flat, pos, out=value, mode="clip")
                np.take(self.threshold, idx, out=threshold, mode="clip")
            if with_nan:  # Tree.apply: NaN goes where missing_go_to_left says
                np.less_equal(value, threshold, out=right)
                np.logical_not(right, out=right)
                right &= ~(np.isnan(value) & self.missing_left.take(idx, mode="clip"))
            else:
                np.greater(value, threshold, out=right)
            np.take(self.left, idx, out=tmp, mode="clip")
            np.add(tmp, right, out=idx)
        return idx

    def _sum_leaves_rows(self, x32: np.ndarray) -> np.ndarray:
        """Per-row Python loop over the trees: no numpy call per level, so best for 1 row."""
        left, feature, threshold = self.py_left, self.py_feature, self.py_threshold
        leaf_value, roots = self.py_leaf_value, self.py_roots
        sums = np.empty(x32.shape[0], dtype=np.float64)
        for i, row in enumerate(x32.tolist()):
            total = 0.0
            for root in roots:
                node, f = root, feature[root]
                while f >= 0:
                    node = left[node] + (row[f] > threshold[node])
                    f = feature[node]
                total += leaf_value[node]
            sums[i] = total
        return sums


#: (row, tree) pairs traversed together: ~32k keeps the working arrays in L2 (measured best
#: at 250-500 rows x 100 trees on the reference machine).
_PAIRS_PER_CHUNK: Final = 32_768
#: Cost model for choosing the per-row loop, measured (docs/models-runtime.md): Python
#: ~0.1 us per node visited per row; numpy ~20 us set-up + ~10 us per level (7 calls) for
#: a small batch whatever its size.
_ROW_LOOP_US_PER_VISIT: Final = 0.1
_VECTOR_US_FIXED: Final = 20.0
_VECTOR_US_PER_LEVEL: Final = 10.0


class _Buffers:
    """Work arrays for one traversal, reused across chunks and levels."""

    def __init__(self, n_pairs: int) -> None:
        self.idx = np.empty(n_pairs, dtype=np.intp)
        self.pos = np.empty(n_pairs, dtype=np.intp)
        self.tmp = np.empty(n_pairs, dtype=np.intp)
        self.value = np.empty(n_pairs, dtype=np.float32)
        self.threshold = np.empty(n_pairs, dtype=np.float32)
        self.right = np.empty(n_pairs, dtype=bool)


def compile_trees(
    trees: Sequence[Any],
    leaf_values: Sequence[np.ndarray],
    n_features: int,
    feature_maps: Sequence[np.ndarray] | None = None,
    nan_follows_tree: bool = True,
) -> FlatForest:
    """Flatten fitted ``sklearn.tree._tree.Tree`` objects into one ``FlatForest``.

    ``leaf_values[i]`` gives a float64 value per node of tree i (only leaves are read);
    ``feature_maps[i]`` maps tree i's feature index to a column of X (feature subsampling);
    ``nan_follows_tree=False`` sends NaN right everywhere (GradientBoosting's
    ``predict_stages`` ignores ``missing_go_to_left``).
    """
    if not trees:
        raise ValueError("a forest needs at least one tree")
    parts: list[np.ndarray] = []
    roots: list[int] = []
    base, depth, visits = 0, 0, 0.0
    for i, tree in enumerate(trees):
        n = int(tree.node_count)
        cl = np.asarray(tree.children_left, dtype=np.intp)
        cr = np.asarray(tree.children_right, dtype=np.intp)
        new_id, tree_depth = _breadth_first(cl, cr)
        old_of_new = np.empty(n, dtype=np.intp)
        old_of_new[new_id] = np.arange(n)
        is_leaf = cl[old_of_new] == _LEAF
        feature = np.asarray(tree.feature, dtype=np.intp)[old_of_new]
        if feature_maps is not None:
            feature = np.asarray(feature_maps[i], dtype=np.intp)[np.maximum(feature, 0)]
        nodes = np.zeros(n, dtype=_NODE)
        nodes["left"] = base + np.where(is_leaf, np.arange(n), new_id[cl[old_of_new]])
        nodes["feature"] = np.where(is_leaf, 0, feature)
        threshold = _round_down_f32(np.asarray(tree.threshold, dtype=np.float64)[old_of_new])
        nodes["threshold"] = np.where(is_leaf, np.float32(np.inf), threshold)
        missing = np.asarray(tree.missing_go_to_left, dtype=bool)[old_of_new]
        nodes["missing_left"] = (missing & nan_follows_tree) | is_leaf
        nodes["is_leaf"] = is_leaf
        nodes["value"] = np.where(is_leaf, np.asarray(leaf_values[i], np.float64)[old_of_new], 0)
        parts.append(nodes)
        roots.append(base)
        base += n
        depth = max(depth, tree_depth)
        samples = np.asarray(tree.n_node_samples, dtype=np.float64)
        leaf_depths = tree.compute_node_depths()[cl == _LEAF] - 1
        visits += float(np.average(leaf_depths, weights=samples[cl == _LEAF]))
    nodes = np.concatenate(parts)
    if int(nodes["feature"].max()) >= n_features:
        raise ValueError(f"a tree reads feature {int(nodes['feature'].max())} of {n_features}")
    vector_us = _VECTOR_US_FIXED + _VECTOR_US_PER_LEVEL * depth
    row_loop_max_rows = int(vector_us // (_ROW_LOOP_US_PER_VISIT * max(visits, 1.0)))
    return FlatForest(
        left=np.ascontiguousarray(nodes["left"], dtype=np.intp),
        feature=np.ascontiguousarray(nodes["feature"], dtype=np.intp),
        threshold=np.ascontiguousarray(nodes["threshold"]),
        missing_left=np.ascontiguousarray(nodes["missing_left"]),
        leaf_value=np.ascontiguousarray(nodes["value"]),
        roots=np.asarray(roots, dtype=np.intp),
        depth=depth,
        n_features=n_features,
        row_loop_max_rows=row_loop_max_rows,
        py_left=nodes["left"].tolist(),
        py_feature=np.where(nodes["is_leaf"], -1, nodes["feature"]).tolist(),
        py_threshold=nodes["threshold"].astype(np.float64).tolist(),
        py_leaf_value=nodes["value"].tolist(),
        py_roots=roots,
    )


@dataclass(frozen=True, eq=False)
class Standardizer:
    """``StandardScaler.transform`` in float64, operation for operation (subtract, divide)."""

    mean: np.ndarray | None
    scale: np.ndarray | None

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scaled float64 copy of ``x``."""
        out = np.array(x, dtype=np.float64, copy=True)
        if self.mean is not None:
            out -= self.mean
        if self.scale is not None:
            out /= self.scale
        return out

    @classmethod
    def from_sklearn(cls, scaler: StandardScaler) -> Standardizer:
        """From a fitted ``StandardScaler``."""
        mean = getattr(scaler, "mean_", None) if scaler.with_mean else None
        scale = getattr(scaler, "scale_", None) if scaler.with_std else None
        return cls(
            mean=None if mean is None else np.asarray(mean, dtype=np.float64),
            scale=None if scale is None else np.asarray(scale, dtype=np.float64),
        )


class Scorer:
    """A compiled model: ``score(X)`` gives one float64 per row of ``X``."""

    kind: ClassVar[ScorerKind]

    def __init__(self, n_features: int, scalers: Sequence[Standardizer] = ()) -> None:
        self.n_features = n_features
        self.scalers = tuple(scalers)

    def score(self, x: np.ndarray) -> np.ndarray:
        """One float64 score per row of ``x`` (shape (n_rows, n_features))."""
        return self._score(self._prepare(x))

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        """Validated float64 ``x``, scaled by the pipeline's scalers."""
        x64 = np.asarray(x, dtype=np.float64)
        if x64.ndim != 2 or x64.shape[1] != self.n_features:
            raise ValueError(
                f"{self.kind}: expected x of shape (n_rows, {self.n_features}), got {x64.shape}"
            )
        for scaler in self.scalers:
            x64 = scaler.transform(x64)
        return x64

    def _score(self, x64: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class _ForestScorer(Scorer):
    """A scorer whose model is a FlatForest; subclasses turn leaf sums into the output."""

    def __init__(self, forest: FlatForest, scalers: Sequence[Standardizer] = ()) -> None:
        super().__init__(forest.n_features, scalers)
        self.forest = forest

    def _score(self, x64: np.ndarray) -> np.ndarray:
        sums = self.forest.sum_leaves(np.ascontiguousarray(x64, dtype=np.float32))
        return self._finish(sums)

    def _finish(self, sums: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def average_path_length(n_samples: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful BST search in ``n`` samples (IsolationForest).

    >>> average_path_length(np.array([1, 2])).tolist()
    [0.0, 1.0]
    """
    n = np.asarray(n_samples, dtype=np.float64)
    out = np.zeros(n.shape, dtype=np.float64)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationForestScorer(_ForestScorer):
    """``IsolationForest.score_samples`` (lower = more anomalous); ``decision_function`` too."""

    kind = "isolation_forest"

    def __init__(
        self,
        forest: FlatForest,
        denominator: float,
        offset: float,
        scalers: Sequence[Standardizer] = (),
    ) -> None:
        super().__init__(forest, scalers)
        self.denominator = denominator
        self.offset = offset

    def _finish(self, sums: np.ndarray) -> np.ndarray:
        if self.denominator == 0:  # one training sample: scikit-learn sets the ratio to 1
            return np.full(sums.shape, -0.5)
        return -(2.0 ** (-(sums / self.denominator)))

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """``score_samples - offset_``: negative means outlier."""
        return self.score(x) - self.offset

    @classmethod
    def from_sklearn(
        cls, model: IsolationForest, scalers: Sequence[Standardizer] = ()
    ) -> IsolationForestScorer:
        """Compile a fitted IsolationForest."""
        n_features = int(model.n_features_in_)
        trees = [est.tree_ for est in model.estimators_]
        # leaf value = depth of the leaf + expected depth of its unseparated samples - 1
        leaf_values = [
            t.compute_node_depths() + average_path_length(t.n_node_samples) - 1.0 for t in trees
        ]
        maps = None
        if int(model._max_features) != n_features:
            maps = [np.asarray(f, dtype=np.intp) for f in model.estimators_features_]
        forest = compile_trees(trees, leaf_values, n_features, maps)
        denominator = len(trees) * float(average_path_length(np.array([model.max_samples_]))[0])
        return cls(forest, denominator, float(model.offset_), scalers)


class GradientBoostingScorer(_ForestScorer):
    """Binary ``GradientBoostingClassifier.predict_proba(X)[:, 1]``."""

    kind = "gradient_boosting"

    def __init__(
        self, forest: FlatForest, init_raw: float, scalers: Sequence[Standardizer] = ()
    ) -> None:
        super().__init__(forest, scalers)
        self.init_raw = init_raw

    def _finish(self, sums: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # exp overflow -> inf -> probability 0, as expit
            return 1.0 / (1.0 + np.exp(-(sums + self.init_raw)))

    @classmethod
    def from_sklearn(
        cls, model: GradientBoostingClassifier, scalers: Sequence[Standardizer] = ()
    ) -> GradientBoostingScorer:
        """Compile a fitted binary GradientBoostingClassifier with a constant init."""
        from sklearn.dummy import DummyClassifier

        if int(model.n_trees_per_iteration_) != 1:
            raise ValueError("only binary GradientBoostingClassifier is supported")
        if not (model.init_ == "zero" or isinstance(model.init_, DummyClassifier)):
            raise ValueError(f"init estimator {model.init_!r} is not constant; cannot compile")
        n_features = int(model.n_features_in_)
        zeros = np.zeros((1, n_features), dtype=np.float32)
        with warnings.catch_warnings():  # fitted on a DataFrame: "no feature names" warning
            warnings.simplefilter("ignore", UserWarning)
            init_raw = float(model._raw_predict_init(zeros)[0, 0])
        trees = [est.tree_ for est in model.estimators_[:, 0]]
        rate = float(model.learning_rate)
        leaf_values = [rate * t.value[:, 0, 0] for t in trees]
        forest = compile_trees(trees, leaf_values, n_features, nan_follows_tree=False)
        return cls(forest, init_raw, scalers)


class RandomForestScorer(_ForestScorer):
    """Binary ``RandomForestClassifier.predict_proba(X)[:, 1]``: mean of the trees' fractions."""

    kind = "random_forest"

    def _finish(self, sums: np.ndarray) -> np.ndarray:
        return sums / self.forest.n_trees

    @classmethod
    def from_sklearn(
        cls, model: RandomForestClassifier, scalers: Sequence[Standardizer] = ()
    ) -> RandomForestScorer:
        """Compile a fitted binary, single-output RandomForestClassifier."""
        if int(model.n_outputs_) != 1 or int(model.n_classes_) != 2:
            raise ValueError("only binary single-output RandomForestClassifier is supported")
        trees = [est.tree_ for est in model.estimators_]
        # scikit-learn >= 1.4 stores class fractions in tree_.value; predict_proba returns them
        leaf_values = [t.value[:, 0, 1] for t in trees]
        return cls(compile_trees(trees, leaf_values, int(model.n_features_in_)), scalers)


class KMeansScorer(Scorer):
    """``KMeans.predict`` as float64: the nearest centroid, by ``|c|^2 - 2 x.c`` as sklearn."""

    kind = "kmeans"

    def __init__(self, centers: np.ndarray, scalers: Sequence[Standardizer] = ()) -> None:
        super().__init__(int(centers.shape[1]), scalers)
        self.centers = np.ascontiguousarray(centers, dtype=np.float64)
        self.center_sq = np.einsum("ij,ij->i", self.centers, self.centers)

    def _score(self, x64: np.ndarray) -> np.ndarray:
        distances = self.center_sq - 2.0 * (x64 @ self.centers.T)
        return np.argmin(distances, axis=1).astype(np.float64)


@functools.cache
def _compilers() -> dict[type, Any]:
    from sklearn.cluster import KMeans
    from sklearn.ensemble import (
        GradientBoostingClassifier,
        IsolationForest,
        RandomForestClassifier,
    )

    return {
        IsolationForest: IsolationForestScorer.from_sklearn,
        GradientBoostingClassifier: GradientBoostingScorer.from_sklearn,
        RandomForestClassifier: RandomForestScorer.from_sklearn,
        KMeans: lambda model, scalers: KMeansScorer(model.cluster_centers_, scalers),
    }


def _split_pipeline(model: object) -> tuple[list[StandardScaler], object]:
    """Leading StandardScalers and the final estimator of a Pipeline (or of a bare model)."""
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if not isinstance(model, Pipeline):
        return [], model
    steps = [step for _, step in model.steps if step is not None and step != "passthrough"]
    if not steps:
        raise ValueError("empty pipeline")
    *head, last = steps
    for step in head:
        if type(step) is not StandardScaler:
            raise TypeError(f"pipeline step {type(step).__name__} is not a StandardScaler")
    return list(head), last


def is_scorable(model: object) -> bool:
    """True when ``compile_model`` knows the model's (final) estimator type."""
    try:
        _, final = _split_pipeline(model)
    except (TypeError, ValueError):
        return False
    return type(final) in _compilers()


def compile_model(model: object, scaler: StandardScaler | None = None) -> Scorer:
    """Compile a fitted model (bare or a Pipeline of StandardScalers + model) to a Scorer.

    ``scaler``, when given, is a separately stored StandardScaler applied first.
    Raises TypeError for an unsupported estimator, ValueError for an unsupported setup.
    """
    head, final = _split_pipeline(model)
    scalers = [Standardizer.from_sklearn(s) for s in ([scaler] if scaler else []) + head]
    compiler = _compilers().get(type(final))
    if compiler is None:
        raise TypeError(f"no fast scorer for {type(final).__name__}")
    scorer: Scorer = compiler(final, scalers)
    return scorer


class ScoringSuite:
    """Several scorers, each on its own feature matrix, scored in one call."""

    def __init__(self, scorers: Mapping[str, Scorer]) -> None:
        self.scorers = dict(scorers)

    @classmethod
    def from_models(cls, models: Mapping[str, object]) -> ScoringSuite:
        """Compile every scorable model of ``models``; others are left out."""
        return cls({name: compile_model(m) for name, m in models.items() if is_scorable(m)})

    def score(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Scores per model name, for the names present in ``inputs``."""
        unknown = set(inputs) - set(self.scorers)
        if unknown:
            raise KeyError(f"no scorer named {sorted(unknown)!r}; have {sorted(self.scorers)!r}")
        return {name: self.scorers[name].score(X) for name, X in inputs.items()}


def score_batch(scorers: Mapping[str, Scorer], inputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Score each ``inputs[name]`` with ``scorers[name]``: ``ScoringSuite(scorers).score``."""
    return ScoringSuite(scorers).score(inputs)


# --- compiled scorers as plain arrays (stored in a bundle; loaded without scikit-learn) ----

_FOREST_ARRAYS: Final = ("left", "feature", "threshold", "missing_left", "leaf_value", "roots")
_KIND_CLASSES: Final[dict[str, type[Scorer]]] = {
    "isolation_forest": IsolationForestScorer,
    "gradient_boosting": GradientBoostingScorer,
    "random_forest": RandomForestScorer,
    "kmeans": KMeansScorer,
}


def scorer_arrays(scorer: Scorer) -> dict[str, np.ndarray]:
    """A compiled scorer as named numpy arrays (no objects: ``np.load`` needs no pickle)."""
    out: dict[str, np.ndarray] = {
        "kind": np.array(scorer.kind),
        "n_features": np.array(scorer.n_features, dtype=np.int64),
        "n_scalers": np.array(len(scorer.scalers), dtype=np.int64),
    }
    for i, scaler in enumerate(scorer.scalers):
        for part in ("mean", "scale"):
            value = getattr(scaler, part)
            if value is not None:
                out[f"scaler{i}_{part}"] = np.asarray(value, dtype=np.float64)
    if isinstance(scorer, _ForestScorer):
        forest = scorer.forest
        for name in _FOREST_ARRAYS:
            out[f"forest_{name}"] = getattr(forest, name)
        out["forest_depth"] = np.array(forest.depth, dtype=np.int64)
        out["forest_row_loop_max_rows"] = np.array(forest.row_loop_max_rows, dtype=np.int64)
    if isinstance(scorer, IsolationForestScorer):
        out["denominator"] = np.array(scorer.denominator, dtype=np.float64)
        out["offset"] = np.array(scorer.offset, dtype=np.float64)
    elif isinstance(scorer, GradientBoostingScorer):
        out["init_raw"] = np.array(scorer.init_raw, dtype=np.float64)
    elif isinstance(scorer, KMeansScorer):
        out["centers"] = scorer.centers
    return out


def scorer_from_arrays(arrays: Mapping[str, np.ndarray]) -> Scorer:
    """Inverse of ``scorer_arrays``. Checks shapes and indices (a malformed file raises
    ValueError, never scores wrong); the caller checks the file's integrity (sha256)."""
    try:
        kind = str(arrays["kind"])
        n_features = int(arrays["n_features"])
        scalers = [
            Standardizer(
                mean=_vector(arrays, f"scaler{i}_mean", n_features),
                scale=_vector(arrays, f"scaler{i}_scale", n_features),
            )
            for i in range(int(arrays["n_scalers"]))
        ]
        if kind not in _KIND_CLASSES:
            raise ValueError(f"unknown scorer kind {kind!r}")
        if kind == "kmeans":
            centers = np.asarray(arrays["centers"], dtype=np.float64)
            if centers.ndim != 2 or centers.shape[1] != n_features or not len(centers):
                raise ValueError(f"centers of shape {centers.shape}, {n_features} features")
            return KMeansScorer(centers, scalers)
        forest = _forest_from_arrays(arrays, n_features)
        if kind == "isolation_forest":
            return IsolationForestScorer(
                forest, float(arrays["denominator"]), float(arrays["offset"]), scalers
            )
        if kind == "gradient_boosting":
            return GradientBoostingScorer(forest, float(arrays["init_raw"]), scalers)
        return RandomForestScorer(forest, scalers)
    except KeyError as exc:
        raise ValueError(f"compiled scorer lacks {exc}") from None


def _vector(arrays: Mapping[str, np.ndarray], name: str, n: int) -> np.ndarray | None:
    if name not in arrays:
        return None
    value = np.asarray(arrays[name], dtype=np.float64)
    if value.shape != (n,):
        raise ValueError(f"{name} has shape {value.shape}, expected ({n},)")
    return value


def _forest_from_arrays(arrays: Mapping[str, np.ndarray], n_features: int) -> FlatForest:
    left = np.ascontiguousarray(arrays["forest_left"], dtype=np.intp)
    feature = np.ascontiguousarray(arrays["forest_feature"], dtype=np.intp)
    threshold = np.ascontiguousarray(arrays["forest_threshold"], dtype=np.float32)
    missing_left = np.ascontiguousarray(arrays["forest_missing_left"], dtype=bool)
    leaf_value = np.ascontiguousarray(arrays["forest_leaf_value"], dtype=np.float64)
    roots = np.ascontiguousarray(arrays["forest_roots"], dtype=np.intp)
    n = left.shape[0]
    if any(a.shape != (n,) for a in (feature, threshold, missing_left, leaf_value)):
        raise ValueError("forest arrays differ in length")
    if n == 0 or roots.ndim != 1 or not len(roots):
        raise ValueError("empty forest")
    is_leaf = left == np.arange(n)
    # an internal node's children are left and left + 1, both inside the forest
    if int(left.min()) < 0 or int(left.max()) >= n or bool((left[~is_leaf] + 1 >= n).any()):
        raise ValueError("forest child index out of range")
    if int(roots.min()) < 0 or int(roots.max()) >= n:
        raise ValueError("forest root index out of range")
    if int(feature.min()) < 0 or int(feature.max()) >= n_features:
        raise ValueError(f"forest reads a feature outside 0..{n_features - 1}")
    return FlatForest(
        left=left,
        feature=feature,
        threshold=threshold,
        missing_left=missing_left,
        leaf_value=leaf_value,
        roots=roots,
        depth=int(arrays["forest_depth"]),
        n_features=n_features,
        row_loop_max_rows=int(arrays["forest_row_loop_max_rows"]),
        py_left=left.tolist(),
        py_feature=np.where(is_leaf, -1, feature).tolist(),
        py_threshold=threshold.astype(np.float64).tolist(),
        py_leaf_value=leaf_value.tolist(),
        py_roots=roots.tolist(),
    )
