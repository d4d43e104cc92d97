"""Training: a small generated history in, a bundle the streaming worker loads out.

One training run (seed 42, scale 0.3, in memory, with labels) is shared by the module; the
command-line test trains once more from files, without labels. Figures are not asserted
against targets here (a 0.3-scale history is too small for stable AUCs; docs/models.md has
the default history's); the tests check structure, calibration and the serving contract.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from escrowguard.cli import main
from escrowguard.errors import BundleError, DataError
from escrowguard.events import decode
from escrowguard.models.bundle import current_version
from escrowguard.models.features import (
    ANOMALY_FEATURES,
    PLEDGE_FEATURES,
    PROJECT_FEATURES,
    RISK_FEATURES,
    SUCCESS_FEATURES,
    VOTE_FEATURES,
    FeatureWindows,
)
from escrowguard.models.history import walk_history
from escrowguard.models.plots import FIGURES
from escrowguard.models.report import REPORT_NAME, comparison_rows, write_report
from escrowguard.models.segments import SEGMENT_NAMES
from escrowguard.models.serving import load_serving_models
from escrowguard.models.train import (
    ANOMALY_COLUMNS,
    METRIC_KEYS,
    TrainedModels,
    TrainingConfig,
    TrainingData,
    fingerprint_events,
    load_training_data,
    open_bundle,
    save_trained,
    train_models,
)
from escrowguard.outputs import Alert
from escrowguard.producers.export import History
from escrowguard.producers.files import write_history
from escrowguard.producers.generator import generate_history
from escrowguard.settings import Settings, load_settings
from tests.unit import streamsim

CREATED = datetime(2026, 1, 2, tzinfo=UTC)
SCALE = 0.3


@pytest.fixture(scope="module")
def settings() -> Settings:
    return load_settings(None, env={})


@pytest.fixture(scope="module")
def history() -> History:
    return generate_history(42, SCALE)


@pytest.fixture(scope="module")
def data(history: History) -> TrainingData:
    events = [decode(raw) for raw in history.events]
    return TrainingData(events, fingerprint_events(events), history.labels)


@pytest.fixture(scope="module")
def config(settings: Settings) -> TrainingConfig:
    return TrainingConfig.from_settings(settings)


@pytest.fixture(scope="module")
def trained(data: TrainingData, config: TrainingConfig) -> TrainedModels:
    phases: list[str] = []
    out = train_models(data, config, progress=lambda name, _: phases.append(name))
    assert phases == [
        "history",
        "success",
        "risk",
        "segments",
        "anomaly",
        "recommender",
        "analyses",
    ]
    return out


@pytest.fixture(scope="module")
def bundle_dir(trained: TrainedModels, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_trained(trained, tmp_path_factory.mktemp("models"), CREATED)


def test_the_bundle_loads_as_the_streaming_worker_loads_it(
    bundle_dir: Path, settings: Settings, data: TrainingData, config: TrainingConfig
) -> None:
    models = load_serving_models(settings, bundle_dir)
    models.check_windows(FeatureWindows.from_settings(settings.features, 0.7))
    h = walk_history(data.events, config.windows)
    assert models.training_end_us == h.end_us
    pledges = h.pledges.X[:, ANOMALY_COLUMNS]
    scores = models.anomaly_scores(pledges)
    assert scores.shape == (pledges.shape[0],) and np.all((scores > 0) & (scores <= 1))
    risk = models.risk(h.votes.X[:50])
    _, projects, _, _ = h.project_snapshots(config.checkpoint_fraction)
    success = models.success(projects)
    assert np.all((risk >= 0) & (risk <= 1)) and np.all((success >= 0) & (success <= 1))


def test_the_anomaly_threshold_flags_the_alert_budget_on_the_serving_scale(
    bundle_dir: Path, settings: Settings, data: TrainingData, config: TrainingConfig
) -> None:
    models = load_serving_models(settings, bundle_dir)
    h = walk_history(data.events, config.windows)
    scores = models.anomaly_scores(h.pledges.X[:, ANOMALY_COLUMNS])
    flagged = float(np.mean(scores >= models.anomaly_threshold))
    assert flagged == pytest.approx(config.anomaly_budget, abs=2 / scores.size)
    assert models.bundle.thresholds["anomaly_alert_budget"] == config.anomaly_budget


def test_the_manifest_records_windows_end_and_references_of_every_feature(
    bundle_dir: Path, config: TrainingConfig
) -> None:
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    training = manifest["training"]
    assert isinstance(training["end_us"], int) and isinstance(training["start_us"], int)
    assert training["windows"] == {
        k: getattr(config.windows, k) for k in FeatureWindows.__struct_fields__
    }
    refs = training["references"]
    names = {*PLEDGE_FEATURES, *VOTE_FEATURES, *PROJECT_FEATURES, "anomaly_score", "risk_score"}
    assert names <= set(refs)
    for name in names:
        assert set(refs[name]) == {"mean", "std", "median", "spread"}, name
        assert refs[name]["spread"] > 0, name
    assert manifest["models"]["anomaly"]["feature_names"] == list(ANOMALY_FEATURES)
    assert manifest["models"]["risk"]["feature_names"] == list(RISK_FEATURES)
    assert manifest["models"]["success"]["feature_names"] == list(SUCCESS_FEATURES)
    assert set(manifest["models"]) == {"anomaly", "risk", "success", "segments", "recommender"}


def test_the_metrics_hold_every_reported_figure(trained: TrainedModels) -> None:
    m = trained.metrics
    assert set(METRIC_KEYS) <= set(m)
    for model in ("success", "risk"):
        assert {"accuracy", "f1", "roc_auc", "n", "positives"} <= set(m[model]["split"])
        assert m[model]["time_holdout"]["status"] == "ok", model
        assert {"accuracy", "f1", "roc_auc"} <= set(m[model]["time_holdout"])
        assert len(m[model]["roc"]["fpr"]) == len(m[model]["roc"]["tpr"]) > 2
        assert [f for f, _ in m[model]["top_features"]]
    assert [b["bucket"] for b in m["risk"]["by_window_fraction"]] == [
        "0.00-0.25",
        "0.25-0.50",
        "0.50-0.75",
        "0.75-1.00",
    ]
    assert "cv_roc_auc" in m["success"]
    assert {"threshold", "precision", "recall"} <= set(m["anomaly"]["at_budget"])
    assert len(m["anomaly"]["budgets"]) >= 5 and m["anomaly"]["time_holdout"]["status"] == "ok"
    assert m["segments"]["silhouette"] is not None and -1 <= m["segments"]["silhouette"] <= 1
    assert {"mse_observed", "hit_rate_svd", "hit_rate_popular"} <= set(m["recommender"])
    assert m["ab_test"]["sample_size_per_group"] > 0
    assert set(m["bandit"]["final_regret"]) == {"thompson", "uniform", "greedy"}
    assert 0 < m["pareto"]["top20_projects_share"] <= 1
    assert len(m["goals"]["examples"]) >= 3
    assert len(comparison_rows(m)) == 9


def test_segments_are_named_by_centroid_spend(trained: TrainedModels) -> None:
    profiles = trained.metrics["segments"]["profiles"]
    assert [p["segment"] for p in profiles] == list(SEGMENT_NAMES)
    spend = [p["centroid_total_dollars"] for p in profiles]
    assert spend == sorted(spend)
    assert sum(p["backers"] for p in profiles) == trained.metrics["segments"]["backers"]


def test_anomaly_precision_and_recall_follow_the_stated_definition(
    trained: TrainedModels, data: TrainingData, config: TrainingConfig
) -> None:
    """Recompute the headline figure by hand from labels.json and the fitted model."""
    assert data.labels is not None
    h = walk_history(data.events, config.windows)
    scores = -trained.models["anomaly"].score_samples(h.pledges.X[:, ANOMALY_COLUMNS])  # type: ignore[attr-defined]
    flagged = {
        e
        for e, s in zip(h.pledges.event_ids, scores, strict=True)
        if s >= trained.thresholds["anomaly"]
    }
    attacks = data.labels["attacks"]
    anomalies = {a["event_id"] for a in attacks["pledge_anomaly"]}
    acceptable = anomalies | {a["event_id"] for a in attacks["wash_trading"]}
    sybil = {(b, s["project_id"]) for s in attacks["sybil_vote"] for b in s["backer_ids"]}
    acceptable |= {
        e
        for e, b, p in zip(
            h.pledges.event_ids, h.pledges.backer_ids, h.pledges.project_ids, strict=True
        )
        if (b, p) in sybil
    }
    at = trained.metrics["anomaly"]["at_budget"]
    assert at["precision"] == pytest.approx(len(flagged & acceptable) / len(flagged), abs=1e-6)
    assert at["recall"] == pytest.approx(len(flagged & anomalies) / len(anomalies), abs=1e-6)


def test_a_bundle_without_training_metrics_gets_no_report(
    trained: TrainedModels, tmp_path: Path
) -> None:
    bare = TrainedModels(
        trained.models, trained.feature_names, trained.thresholds, {}, trained.training
    )
    path = save_trained(bare, tmp_path, CREATED)
    with pytest.raises(BundleError, match="not written by `escrowguard train`"):
        write_report(open_bundle(path), tmp_path / "report")


def test_training_data_from_files_is_fingerprinted_by_its_bytes(
    history: History, tmp_path: Path
) -> None:
    write_history(history, tmp_path)
    data = load_training_data(data=tmp_path)
    events_bytes = (tmp_path / "events.jsonl").read_bytes()
    assert data.fingerprint == hashlib.sha256(events_bytes).hexdigest()
    assert data.labels is not None and len(data.events) == len(history.events)
    alone = load_training_data(events=tmp_path / "events.jsonl")
    assert alone.labels is None and alone.fingerprint == data.fingerprint
    with pytest.raises(DataError, match="exactly one"):
        load_training_data(events=tmp_path / "events.jsonl", data=tmp_path)
    with pytest.raises(DataError, match="exactly one"):
        load_training_data()


def test_the_in_memory_fingerprint_ignores_order(data: TrainingData) -> None:
    assert fingerprint_events(list(reversed(data.events))) == data.fingerprint
    assert fingerprint_events(list(data.events)[1:]) != data.fingerprint


def _run(args: list[str], env: dict[str, str]) -> tuple[int, list[str]]:
    """Exit code and output lines (stdout and stderr), log lines left out."""
    result = CliRunner().invoke(main, args, env=env, catch_exceptions=False)
    lines = [line for line in result.output.splitlines() if not line.startswith("ts=")]
    return result.exit_code, lines


def test_the_commands_train_report_promote_recommend_and_suggest(
    bundle_dir: Path, tmp_path: Path
) -> None:
    """`train --events` (no labels) -> bundle + report, `--promote`; `models current`;
    `models promote`; `report models` (report.md + every PNG); `recommend`;
    `suggest-goal`; friendly errors. A tiny history (scale 0.1) keeps it quick."""
    small = generate_history(42, 0.1)
    write_history(small, tmp_path / "h")
    registry = tmp_path / "registry"
    env = {"ESCROWGUARD_MODELS__REGISTRY_DIR": str(registry), "ESCROWGUARD_MODELS__BUNDLE_DIR": ""}

    code, lines = _run(["models", "current"], env)
    assert code == 1 and "no bundle promoted" in lines[-1]

    out = tmp_path / "models"
    events = str(tmp_path / "h" / "events.jsonl")
    code, lines = _run(["train", "--events", events, "--out", str(out), "--promote"], env)
    assert code == 0, lines
    (trained_dir,) = [p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert any(line.startswith("✓ anomaly") and "no labels" in line for line in lines)
    manifest = json.loads((trained_dir / "manifest.json").read_text())
    assert manifest["metrics"]["anomaly"]["labels"] == "no labels"
    assert "no labels" in (trained_dir / "report" / REPORT_NAME).read_text()
    assert current_version(registry) == trained_dir.name

    code, lines = _run(["models", "current"], env)
    assert code == 0 and lines[0].startswith(trained_dir.name)

    code, _ = _run(["models", "promote", str(bundle_dir)], env)
    assert code == 0 and current_version(registry) == bundle_dir.name

    code, lines = _run(["report", "models", str(bundle_dir), "--out", str(tmp_path / "r")], env)
    assert code == 0 and any("success ROC-AUC" in line for line in lines)
    text = (tmp_path / "r" / REPORT_NAME).read_text()
    assert "| success ROC-AUC |" in text and "| 0.91 |" in text
    for name in FIGURES:  # the labelled bundle has every figure, anomaly budgets included
        assert (tmp_path / "r" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"({name})" in text, name

    backer = small.tables["pledges"]["backer_id"][0].as_py()
    code, lines = _run(["recommend", backer, "-k", "3"], env)  # the promoted bundle
    assert code == 0 and [line.split()[0] for line in lines] == ["1", "2", "3"]

    code, lines = _run(["recommend", "nobody", "--bundle", str(bundle_dir)], env)
    assert code == 2 and lines[-1].startswith("error [unknown_backer]")

    code, lines = _run(["suggest-goal", "--reputation", "8", "--days", "30"], env)
    assert code == 0 and lines[0].startswith("suggested goal:")
    assert "training medians" in lines[-1]

    code, lines = _run(["train", "--out", str(out)], env)
    assert code == 2 and "exactly one of --events FILE or --data DIR" in lines[-1]


def test_the_streaming_pipeline_flags_exactly_the_pledges_training_calibrated(
    bundle_dir: Path,
    settings: Settings,
    history: History,
    data: TrainingData,
    config: TrainingConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Train/serve parity end to end: the in-process deployment (2 partitions, seeded
    interleaving) scoring with the trained bundle raises a pledge_anomaly alert for exactly
    the pledges whose offline training row scores at or above the calibrated threshold."""
    models = load_serving_models(settings, bundle_dir)
    monkeypatch.setattr(streamsim, "RuleModels", lambda: models)
    dep = streamsim.simulate(history.events, 2, 1, seed=3)
    streamed = {
        event_id
        for out in dep.collector.outputs
        if isinstance(out, Alert) and out.kind == "pledge_anomaly"
        for event_id in out.event_ids
    }
    h = walk_history(data.events, config.windows)
    scores = models.anomaly_scores(h.pledges.X[:, ANOMALY_COLUMNS])
    offline = {
        e for e, s in zip(h.pledges.event_ids, scores, strict=True) if s >= models.anomaly_threshold
    }
    assert len(offline) > 10
    assert streamed == offline
