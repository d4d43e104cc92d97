"""Model bundles: round trip, every refusal (missing, truncated, tampered, edited manifest,
feature order, scikit-learn version, untrusted types) as a BundleError with its reason, and
the registry's CURRENT pointer."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.ensemble import GradientBoostingClassifier, IsolationForest, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from escrowguard.errors import BundleError
from escrowguard.models.bundle import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    BundleReason,
    TrainingInfo,
    bundle_version,
    current_bundle_path,
    current_version,
    load_bundle,
    promote,
    save_bundle,
)
from escrowguard.models.scorers import compile_model

CREATED_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ANOMALY = [f"a{i}" for i in range(9)]
RISK = [f"r{i}" for i in range(18)]
SUCCESS = [f"s{i}" for i in range(7)]


class Sneaky:
    """Not a scikit-learn or numpy type: skops flags it as untrusted."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.fixture(scope="module")
def models() -> dict[str, Any]:
    rng = np.random.default_rng(5)
    x9, x18, x7 = rng.normal(size=(400, 9)), rng.normal(size=(400, 18)), rng.normal(size=(400, 7))
    y18, y7 = (x18[:, 0] > 0).astype(int), (x7[:, 1] > 0.2).astype(int)
    return {
        "anomaly": make_pipeline(
            StandardScaler(), IsolationForest(n_estimators=10, random_state=42)
        ).fit(x9),
        "risk": GradientBoostingClassifier(n_estimators=5, max_depth=3).fit(x18, y18),
        "success": RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x7, y7),
        "clusters": KMeans(n_clusters=3, n_init=2, random_state=0).fit(x7),
        "svd": TruncatedSVD(n_components=2, random_state=0).fit(x7),
    }


FEATURES = {
    "anomaly": ANOMALY,
    "risk": RISK,
    "success": SUCCESS,
    "clusters": SUCCESS,
    "svd": SUCCESS,
}
TRAINING = TrainingInfo(
    history_fingerprint="sha256:abc123",
    rows={"anomaly": 400, "risk": 400, "success": 400},
    start=datetime(2025, 1, 1, tzinfo=UTC),
    end=datetime(2025, 12, 31, tzinfo=UTC),
)


def save(out_dir: Path, models: dict[str, Any], **overrides: Any) -> Path:
    kwargs: dict[str, Any] = {
        "created_at": CREATED_AT,
        "feature_names": {k: FEATURES[k] for k in models if k in FEATURES},
        "training": TRAINING,
        "metrics": {"risk": {"auc": 0.91}},
        "thresholds": {"risk_freeze_at": 0.8, "anomaly_score_below": -0.62},
    }
    kwargs.update(overrides)
    return save_bundle(out_dir, models, **kwargs)


@pytest.fixture
def bundle_dir(tmp_path: Path, models: dict[str, Any]) -> Path:
    return save(tmp_path / "out", models)


def read_manifest(path: Path) -> dict[str, Any]:
    return json.loads((path / MANIFEST_NAME).read_text())


def write_manifest(path: Path, manifest: dict[str, Any], rehash: bool = True) -> None:
    if rehash:
        manifest["version"] = bundle_version(manifest)
    (path / MANIFEST_NAME).write_text(json.dumps(manifest))


def refused(path: Path, reason: BundleReason, **kwargs: Any) -> BundleError:
    with pytest.raises(BundleError) as info:
        load_bundle(path, **kwargs)
    assert info.value.reason == reason, info.value.message
    return info.value


def test_round_trip(bundle_dir: Path, models: dict[str, Any]) -> None:
    bundle = load_bundle(bundle_dir, expected_features={"anomaly": ANOMALY, "risk": RISK})
    assert bundle.version == bundle_dir.name
    assert len(bundle.version) == 12
    manifest = bundle.manifest
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["created_at"] == CREATED_AT.isoformat()
    assert manifest["training"]["history_fingerprint"] == "sha256:abc123"
    assert manifest["training"]["time_range"]["end"].startswith("2025-12-31")
    assert manifest["thresholds"]["risk_freeze_at"] == 0.8
    assert manifest["metrics"] == {"risk": {"auc": 0.91}}
    assert set(manifest["library_versions"]) == {
        "python",
        "numpy",
        "scikit-learn",
        "skops",
        "escrowguard",
    }
    kinds = {name: entry["kind"] for name, entry in manifest["models"].items()}
    assert kinds == {
        "anomaly": "isolation_forest",
        "risk": "gradient_boosting",
        "success": "random_forest",
        "clusters": "kmeans",
        "svd": "truncated_svd",
    }
    assert bundle.feature_names["risk"] == tuple(RISK)
    assert sorted(bundle.scorers) == ["anomaly", "clusters", "risk", "success"]
    rows = np.random.default_rng(9).normal(size=(20, 18))
    np.testing.assert_allclose(
        bundle.scorers["risk"].score(rows), models["risk"].predict_proba(rows)[:, 1], atol=1e-6
    )
    np.testing.assert_allclose(
        bundle.models["anomaly"].score_samples(rows[:, :9]),
        models["anomaly"].score_samples(rows[:, :9]),
    )
    assert set(bundle.suite.score({"success": rows[:, :7]})) == {"success"}


def test_each_save_is_its_own_version(bundle_dir: Path, models: dict[str, Any]) -> None:
    again = save(bundle_dir.parent, models, thresholds={"risk_freeze_at": 0.7})
    assert again != bundle_dir and again.parent == bundle_dir.parent
    assert load_bundle(again).thresholds == {"risk_freeze_at": 0.7}
    assert load_bundle(bundle_dir).version == bundle_dir.name
    assert not [p for p in bundle_dir.parent.iterdir() if p.name.startswith(".")]


def test_flipped_byte_is_tampered(bundle_dir: Path) -> None:
    path = bundle_dir / "risk.skops"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    err = refused(bundle_dir, BundleReason.TAMPERED)
    assert "risk.skops" in err.message


def test_truncated_file(bundle_dir: Path) -> None:
    path = bundle_dir / "success.skops"
    path.write_bytes(path.read_bytes()[:100])
    err = refused(bundle_dir, BundleReason.TRUNCATED)
    assert "success.skops" in err.message


def test_missing_model_file(bundle_dir: Path) -> None:
    (bundle_dir / "anomaly.skops").unlink()
    err = refused(bundle_dir, BundleReason.MISSING_FILE)
    assert "anomaly.skops" in err.message


def test_missing_manifest_and_directory(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_NAME).unlink()
    assert MANIFEST_NAME in refused(bundle_dir, BundleReason.MISSING_FILE).message
    refused(bundle_dir / "nope", BundleReason.MISSING_FILE)


def test_unparseable_manifest(bundle_dir: Path) -> None:
    (bundle_dir / MANIFEST_NAME).write_text('{"format_version": 1, "models": ')
    refused(bundle_dir, BundleReason.UNREADABLE)


def test_edited_manifest_no_longer_matches_its_version(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["thresholds"]["risk_freeze_at"] = 0.99
    write_manifest(bundle_dir, manifest, rehash=False)
    err = refused(bundle_dir, BundleReason.TAMPERED)
    assert "edited" in err.message


def test_unsupported_format_version(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["format_version"] = FORMAT_VERSION + 1
    write_manifest(bundle_dir, manifest)
    refused(bundle_dir, BundleReason.UNSUPPORTED_FORMAT)


def test_other_sklearn_minor_version_is_incompatible(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    major, minor = sklearn.__version__.split(".")[:2]
    older = f"{major}.{int(minor) - 1}.2"
    manifest["library_versions"]["scikit-learn"] = older
    write_manifest(bundle_dir, manifest)  # re-hashed: only the version check can fire
    err = refused(bundle_dir, BundleReason.INCOMPATIBLE_VERSION)
    assert older in err.message and sklearn.__version__ in err.message
    assert "Retrain" in err.message


def test_same_minor_other_patch_is_accepted(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    major, minor = sklearn.__version__.split(".")[:2]
    manifest["library_versions"]["scikit-learn"] = f"{major}.{minor}.99"
    write_manifest(bundle_dir, manifest)
    assert load_bundle(bundle_dir).version == manifest["version"]


def test_feature_order_mismatch_names_model_and_position(bundle_dir: Path) -> None:
    swapped = list(RISK)
    swapped[4], swapped[5] = swapped[5], swapped[4]
    err = refused(bundle_dir, BundleReason.FEATURE_MISMATCH, expected_features={"risk": swapped})
    assert "'risk'" in err.message and "#4" in err.message
    longer = [*SUCCESS, "extra"]
    err = refused(bundle_dir, BundleReason.FEATURE_MISMATCH, expected_features={"success": longer})
    assert "#7" in err.message and "'extra'" in err.message


def test_expected_model_missing(bundle_dir: Path) -> None:
    refused(bundle_dir, BundleReason.MISSING_MODEL, expected_features={"drift": ["x"]})


def test_untrusted_type_is_refused(tmp_path: Path, models: dict[str, Any]) -> None:
    path = save(tmp_path, {"risk": models["risk"], "sneaky": Sneaky()})
    err = refused(path, BundleReason.UNTRUSTED_TYPE)
    assert "Sneaky" in err.message and "sneaky.skops" in err.message
    name = f"{Sneaky.__module__}.{Sneaky.__qualname__}"
    assert load_bundle(path, trusted_types=[name]).models["sneaky"].payload == [1, 2, 3]


def test_garbage_with_matching_hash_is_unreadable(bundle_dir: Path) -> None:
    """A file that is not a skops archive never leaks a zipfile/skops traceback."""
    garbage = b"PK\x03\x04 definitely not a zip archive"
    (bundle_dir / "risk.skops").write_bytes(garbage)
    manifest = read_manifest(bundle_dir)
    manifest["models"]["risk"]["sha256"] = hashlib.sha256(garbage).hexdigest()
    manifest["models"]["risk"]["size_bytes"] = len(garbage)
    write_manifest(bundle_dir, manifest)
    refused(bundle_dir, BundleReason.UNREADABLE)


def test_path_in_manifest_cannot_escape(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["models"]["risk"]["file"] = "../risk.skops"
    write_manifest(bundle_dir, manifest)
    refused(bundle_dir, BundleReason.UNREADABLE)


def test_save_refuses_bad_input(tmp_path: Path, models: dict[str, Any]) -> None:
    with pytest.raises(BundleError) as info:
        save(tmp_path, {"Risk Model": models["risk"]})
    assert info.value.reason == BundleReason.INVALID_BUNDLE
    with pytest.raises(BundleError) as info:
        save(tmp_path, {"risk": models["risk"]}, feature_names={"risk": RISK[:-1]})
    assert info.value.reason == BundleReason.FEATURE_MISMATCH
    with pytest.raises(BundleError) as info:
        save(tmp_path, {"risk": models["risk"]}, metrics={"auc": float("nan")})
    assert info.value.reason == BundleReason.INVALID_BUNDLE
    assert not list(tmp_path.iterdir())  # nothing half-written is left behind


def test_registry_promote_and_current(tmp_path: Path, models: dict[str, Any]) -> None:
    registry = tmp_path / "registry"
    assert current_version(registry) is None
    with pytest.raises(BundleError) as info:
        current_bundle_path(registry)
    assert info.value.reason == BundleReason.NO_CURRENT

    first = save(tmp_path / "staging", models)
    assert promote(registry, first) == first.name
    assert (registry / "CURRENT").read_text() == first.name + "\n"
    assert current_version(registry) == first.name
    assert current_bundle_path(registry) == registry / first.name
    assert load_bundle(current_bundle_path(registry)).version == first.name

    # a bundle saved straight into the registry is promoted without a copy
    second = save(registry, models, thresholds={"risk_freeze_at": 0.5})
    assert promote(registry, second) == second.name
    assert current_bundle_path(registry) == second
    assert promote(registry, first) == first.name  # rolling back is promoting again
    assert current_version(registry) == first.name
    assert sorted(p.name for p in registry.iterdir()) == sorted(
        ["CURRENT", first.name, second.name]
    )


def test_promote_refuses_a_broken_bundle(tmp_path: Path, bundle_dir: Path) -> None:
    registry = tmp_path / "registry"
    (bundle_dir / "risk.skops").write_bytes(b"")
    with pytest.raises(BundleError):
        promote(registry, bundle_dir)
    assert current_version(registry) is None


def test_corrupt_current_pointer(tmp_path: Path, bundle_dir: Path) -> None:
    registry = tmp_path / "registry"
    version = promote(registry, bundle_dir)
    (registry / "CURRENT").write_text("../../etc\n")
    with pytest.raises(BundleError) as info:
        current_version(registry)
    assert info.value.reason == BundleReason.UNREADABLE
    (registry / "CURRENT").write_text(version)
    shutil.rmtree(registry / version)
    with pytest.raises(BundleError) as info:
        current_bundle_path(registry)
    assert info.value.reason == BundleReason.MISSING_FILE


# --- compiled scorers: what a worker loads (no scikit-learn) ------------------------------

SERVED = {"anomaly": ANOMALY, "risk": RISK, "success": SUCCESS}


def rows(n_features: int) -> np.ndarray:
    x = np.random.default_rng(11).normal(size=(64, n_features))
    x[3, 0] = np.nan  # NaN routing is part of the compiled trees
    return x


def test_scorers_only_loads_compiled_scorers_equal_to_compiling(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    scored = {n for n, e in manifest["models"].items() if "scorer" in e}
    assert scored == {"anomaly", "risk", "success", "clusters"}  # the SVD is not scored
    full = load_bundle(bundle_dir)
    lite = load_bundle(bundle_dir, SERVED, scorers_only=True)
    assert lite.models == {} and sorted(lite.scorers) == sorted(SERVED)
    assert lite.version == full.version
    for name, features in SERVED.items():
        x = rows(len(features))
        fresh = compile_model(full.models[name]).score(x)
        assert np.array_equal(lite.scorers[name].score(x), fresh), name
        assert np.array_equal(full.scorers[name].score(x), fresh), name


def test_scorers_only_clusters(bundle_dir: Path, models: dict[str, Any]) -> None:
    lite = load_bundle(bundle_dir, {"clusters": SUCCESS}, scorers_only=True)
    x = rows(len(SUCCESS))[4:]
    expected = models["clusters"].predict(x).astype(np.float64)
    assert np.array_equal(lite.scorers["clusters"].score(x), expected)


def test_tampered_compiled_scorer_is_refused(bundle_dir: Path) -> None:
    path = bundle_dir / "risk.scorer.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(bundle_dir, BundleReason.TAMPERED, expected_features=SERVED, scorers_only=True)
    path.write_bytes(bytes(data[:100]))
    refused(bundle_dir, BundleReason.TRUNCATED, expected_features=SERVED, scorers_only=True)


def test_compiled_scorer_with_bad_indices_is_unreadable(bundle_dir: Path) -> None:
    """Arrays that pass the hash but point outside the forest never reach scoring."""
    import io

    with np.load(bundle_dir / "success.scorer.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["forest_left"] = arrays["forest_left"] + len(arrays["forest_left"])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (bundle_dir / "success.scorer.npz").write_bytes(buf.getvalue())
    manifest = read_manifest(bundle_dir)
    entry = manifest["models"]["success"]["scorer"]
    entry["sha256"] = hashlib.sha256(buf.getvalue()).hexdigest()
    entry["size_bytes"] = len(buf.getvalue())
    write_manifest(bundle_dir, manifest)
    err = refused(bundle_dir, BundleReason.UNREADABLE, expected_features=SERVED, scorers_only=True)
    assert "success.scorer.npz" in err.message and "out of range" in err.message


def test_bundle_without_compiled_scorers_loads_the_full_way(bundle_dir: Path) -> None:
    """Bundles saved before compiled scorers existed still serve."""
    manifest = read_manifest(bundle_dir)
    for entry in manifest["models"].values():
        entry.pop("scorer", None)
    write_manifest(bundle_dir, manifest)
    lite = load_bundle(bundle_dir, SERVED, scorers_only=True)
    assert sorted(lite.models) == ["anomaly", "clusters", "risk", "success", "svd"]
    assert set(SERVED) <= set(lite.scorers)


def test_a_worker_never_imports_scikit_learn(bundle_dir: Path) -> None:
    """The worker's modules and its bundle load leave scikit-learn, skops and pandas out
    (~150 MiB of resident memory: docs/performance.md)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from escrowguard.stream_app import app\n"
        "from escrowguard.models.bundle import load_bundle\n"
        "from escrowguard.models.serving import load_serving_models\n"
        f"load_bundle({str(bundle_dir)!r}, {SERVED!r}, scorers_only=True).scorers\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'skops', 'pandas'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
