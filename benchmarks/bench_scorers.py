"""Fast scorers vs scikit-learn: single-row latency and batch-1000 throughput.

Trains the three scored models on synthetic data shaped like the real features
(IsolationForest on the pledge-anomaly columns, GradientBoosting on the vote-state columns,
RandomForest on the project columns; ``--features N`` gives every model N columns instead),
checks the fast scorers agree with scikit-learn, then prints one table:

    python benchmarks/bench_scorers.py            # ~1 min on one core
    python benchmarks/bench_scorers.py --calls 3000 --sweep

Single-row figures are the median and p99 over ``--calls`` calls, each on a fresh row;
throughput is rows / median time of one batch of 1,000 rows (over ``--batches`` batches).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import sklearn
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestClassifier

from escrowguard.models.features import ANOMALY_FEATURES, RISK_FEATURES, SUCCESS_FEATURES
from escrowguard.models.scorers import ScoringSuite, compile_model

BATCH = 1000


def synthetic(n_rows: int, n_features: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mixed-scale features (log amounts, counts, flags, ratios) and a noisy binary label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, n_features))
    x[:, 0] = np.log1p(rng.lognormal(4.0, 1.5, n_rows))
    if n_features > 2:
        x[:, 1] = rng.poisson(3.0, n_rows)
        x[:, 2] = rng.random(n_rows) < 0.1
    y = (x[:, -1] + 0.5 * x[:, -2] + rng.normal(scale=0.8, size=n_rows) > 0.3).astype(int)
    return x, y


def timings_us(fn: Callable[[int], Any], calls: int) -> np.ndarray:
    """Wall time of ``fn(i)`` for i in range(calls), in microseconds."""
    gc.collect()
    out = np.empty(calls)
    for i in range(calls):
        start = time.perf_counter_ns()
        fn(i)
        out[i] = (time.perf_counter_ns() - start) / 1000.0
    return out


def main() -> None:
    """Train, check, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="single-row calls per series")
    parser.add_argument("--batches", type=int, default=20, help="batches of 1,000 per series")
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=0, help="N columns for every model")
    parser.add_argument("--sweep", action="store_true", help="also time batch sizes 1..1000")
    args = parser.parse_args()

    widths = {
        "anomaly": args.features or len(ANOMALY_FEATURES),
        "risk": args.features or len(RISK_FEATURES),
        "success": args.features or len(SUCCESS_FEATURES),
    }
    data = {
        name: synthetic(args.train_rows, w, seed=i) for i, (name, w) in enumerate(widths.items())
    }
    started = time.perf_counter()
    models: dict[str, Any] = {
        "anomaly": IsolationForest(random_state=42).fit(data["anomaly"][0]),
        "risk": GradientBoostingClassifier(
            n_estimators=50, max_depth=5, learning_rate=0.1, random_state=0
        ).fit(*data["risk"]),
        "success": RandomForestClassifier(
            n_estimators=100, max_depth=10, class_weight="balanced", random_state=0
        ).fit(*data["success"]),
    }
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    suite = ScoringSuite({name: compile_model(m) for name, m in models.items()})
    compile_ms = (time.perf_counter() - started) * 1000

    n_rows = max(args.calls, args.batches * BATCH)
    rows = {
        name: synthetic(n_rows, w, seed=100 + i)[0] for i, (name, w) in enumerate(widths.items())
    }
    sk: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "anomaly": models["anomaly"].score_samples,
        "risk": lambda x: models["risk"].predict_proba(x)[:, 1],
        "success": lambda x: models["success"].predict_proba(x)[:, 1],
    }
    fast = {name: suite.scorers[name].score for name in models}

    max_diff = {
        name: float(np.abs(fast[name](rows[name][:BATCH]) - sk[name](rows[name][:BATCH])).max())
        for name in models
    }

    def one(fn: Callable[[np.ndarray], np.ndarray], name: str) -> Callable[[int], Any]:
        return lambda i: fn(rows[name][i : i + 1])

    def batch(fn: Callable[[np.ndarray], np.ndarray], name: str) -> Callable[[int], Any]:
        return lambda i: fn(rows[name][i * BATCH : (i + 1) * BATCH])

    def both_sk(i: int, size: int) -> None:
        sk["anomaly"](rows["anomaly"][i * size : (i + 1) * size])
        sk["risk"](rows["risk"][i * size : (i + 1) * size])

    def both_fast(i: int, size: int) -> None:
        suite.score(
            {
                "anomaly": rows["anomaly"][i * size : (i + 1) * size],
                "risk": rows["risk"][i * size : (i + 1) * size],
            }
        )

    labels = {
        "anomaly": "IsolationForest (anomaly)",
        "risk": "GradientBoosting (risk)",
        "success": "RandomForest (success)",
    }
    results: list[tuple[str, str, np.ndarray, np.ndarray]] = []
    for name in models:
        for impl, fns in (("scikit-learn", sk), ("fast", fast)):
            single = timings_us(one(fns[name], name), args.calls)
            batches = timings_us(batch(fns[name], name), args.batches)
            results.append((labels[name], impl, single, batches))
    for impl, fn in (("scikit-learn", both_sk), ("fast", both_fast)):
        single = timings_us(lambda i, fn=fn: fn(i, 1), args.calls)
        batches = timings_us(lambda i, fn=fn: fn(i, BATCH), args.batches)
        results.append(("anomaly + risk", impl, single, batches))

    print(f"# bench_scorers: {platform.processor() or platform.machine()}, {os.cpu_count()} cpu")
    print(
        f"# python {platform.python_version()}, numpy {np.__version__}, "
        f"scikit-learn {sklearn.__version__}; features {widths}; trained on "
        f"{args.train_rows} rows in {train_s:.1f} s; compiled in {compile_ms:.0f} ms"
    )
    print(f"# max |fast - scikit-learn| on {BATCH} rows: {max_diff}")
    print(f"# single row: {args.calls} calls; batch: {args.batches} x {BATCH} rows\n")
    header = (
        "| model | implementation | 1 row median (us) | 1 row p99 (us) | "
        "batch 1000 (ms) | rows/s at 1000 | speed-up 1 row / batch |"
    )
    print(header)
    print("|---|---|---:|---:|---:|---:|---:|")
    reference: dict[str, tuple[float, float]] = {}
    for label, impl, single, batches in results:
        median, p99 = float(np.median(single)), float(np.percentile(single, 99))
        batch_ms = float(np.median(batches)) / 1000
        if impl == "scikit-learn":
            reference[label] = (median, batch_ms)
            speedup = ""
        else:
            ref_median, ref_batch = reference[label]
            speedup = f"{ref_median / median:.0f}x / {ref_batch / batch_ms:.1f}x"
        print(
            f"| {label} | {impl} | {median:,.0f} | {p99:,.0f} | {batch_ms:,.2f} | "
            f"{BATCH / batch_ms * 1000:,.0f} | {speedup} |"
        )

    if args.sweep:
        print("\n# fast scorers by batch size (median us per call; row loop vs vectorised)\n")
        print("| model | rows | auto (us) | row loop (us) | vectorised (us) | auto path |")
        print("|---|---:|---:|---:|---:|---|")
        for name in models:
            for size in (1, 2, 4, 8, 32, 128, 1000):
                print(sweep_line(labels[name], suite.scorers[name], rows[name][:size]))


def sweep_line(label: str, scorer: Any, x: np.ndarray) -> str:
    """One line of the batch-size sweep: auto path vs each path forced."""
    forest = scorer.forest
    x32 = np.ascontiguousarray(x, dtype=np.float32)
    calls = 200 if x.shape[0] < 100 else 20
    auto = np.median(timings_us(lambda i: scorer.score(x), calls))
    loop = np.median(timings_us(lambda i: forest._sum_leaves_rows(x32), calls))
    limit = forest.row_loop_max_rows
    object.__setattr__(forest, "row_loop_max_rows", -1)  # force the vectorised path
    try:
        vec = np.median(timings_us(lambda i: forest.sum_leaves(x32), calls))
    finally:
        object.__setattr__(forest, "row_loop_max_rows", limit)
    path = "row loop" if x.shape[0] <= limit else "vectorised"
    return f"| {label} | {x.shape[0]} | {auto:,.0f} | {loop:,.0f} | {vec:,.0f} | {path} |"


if __name__ == "__main__":
    main()
