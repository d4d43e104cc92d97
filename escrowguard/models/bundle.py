"""Versioned model bundles (skops files + ``manifest.json``) and a tiny registry.

A bundle is a directory named after its version::

    <out_dir>/<version>/manifest.json
    <out_dir>/<version>/<model name>.skops   (one per model)
    <out_dir>/<version>/<model name>.scorer.npz   (its compiled scorer, if it has one)

``version`` is the content hash: sha256 of the canonical JSON of the manifest without its
``version`` key, truncated to 12 hex digits. The manifest holds every model file's sha256,
so the version covers the files too. (skops names archive members by object id, so the same
models saved twice give different bytes and so two versions: a version names one artefact.)

Loading trusts nothing: every check below fails with a ``BundleError`` whose ``reason`` is a
``BundleReason`` and whose message names the file or model and says what to do. Models are
read with skops (never pickle); any type skops does not trust by default must be in
``TRUSTED_TYPES`` (or the caller's ``trusted_types``), otherwise the bundle is refused.

A scorable model's compiled scorer (``models.scorers``: plain numpy arrays, read with
``allow_pickle=False``) is stored beside it, with its own sha256 in the manifest.
``load_bundle(..., scorers_only=True)`` (what a worker does) loads only those: no skops, no
scikit-learn import, ~150 MiB less resident memory per worker. Bundles saved before this
have no compiled scorers and load the full way.

The registry is a directory of bundles plus ``CURRENT``, a one-line file naming the promoted
version, rewritten atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import logging
import os
import platform
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Final

import numpy as np

from escrowguard.errors import BundleError
from escrowguard.logs import log_event
from escrowguard.models.scorers import (
    Scorer,
    ScoringSuite,
    compile_model,
    is_scorable,
    scorer_arrays,
    scorer_from_arrays,
)

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "TRUSTED_TYPES",
    "Bundle",
    "BundleReason",
    "TrainingInfo",
    "bundle_version",
    "current_bundle_path",
    "current_version",
    "load_bundle",
    "model_kind",
    "promote",
    "save_bundle",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION: Final = 1
SUPPORTED_FORMAT_VERSIONS: Final = frozenset({1})
MANIFEST_NAME: Final = "manifest.json"
CURRENT_NAME: Final = "CURRENT"
MODEL_SUFFIX: Final = ".skops"
SCORER_SUFFIX: Final = ".scorer.npz"

#: Types skops does not trust by default that a bundle may hold. Everything else it flags
#: (``skops.io.get_untrusted_types``) makes ``load_bundle`` refuse the file.
TRUSTED_TYPES: Final = frozenset(
    {
        "sklearn.tree._tree.Tree",  # the trees inside every tree ensemble
        "escrowguard.models.recommender.Recommender",  # numpy arrays + id lists, no code
    }
)

_MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_VERSION = re.compile(r"^[0-9a-f]{12}$")
_KINDS: Final = {
    "IsolationForest": "isolation_forest",
    "GradientBoostingClassifier": "gradient_boosting",
    "RandomForestClassifier": "random_forest",
    "KMeans": "kmeans",
    "TruncatedSVD": "truncated_svd",
    "StandardScaler": "standard_scaler",
    "Recommender": "recommender",
}


class BundleReason(StrEnum):
    """Why a bundle was refused: the ``reason`` of every ``BundleError`` raised here."""

    MISSING_FILE = "missing_file"
    TRUNCATED = "truncated"
    TAMPERED = "tampered"
    UNREADABLE = "unreadable"
    UNSUPPORTED_FORMAT = "unsupported_format"
    INCOMPATIBLE_VERSION = "incompatible_version"
    FEATURE_MISMATCH = "feature_mismatch"
    MISSING_MODEL = "missing_model"
    UNTRUSTED_TYPE = "untrusted_type"
    UNSUPPORTED_MODEL = "unsupported_model"
    INVALID_BUNDLE = "invalid_bundle"
    NO_CURRENT = "no_current"


@dataclass(frozen=True)
class TrainingInfo:
    """What a bundle was trained on: the history's fingerprint, row counts, event-time range."""

    history_fingerprint: str
    rows: Mapping[str, int]  # training rows per model (or per table)
    start: datetime  # first event time of the history used
    end: datetime  # last event time of the history used
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The manifest's ``training`` object."""
        return {
            "history_fingerprint": self.history_fingerprint,
            "rows": {k: int(v) for k, v in sorted(self.rows.items())},
            "time_range": {"start": self.start.isoformat(), "end": self.end.isoformat()},
            **dict(self.extra),
        }


@dataclass(frozen=True, eq=False)
class Bundle:
    """A verified, loaded bundle. ``scorers`` compiles the scorable models on first use."""

    path: Path
    manifest: Mapping[str, Any]
    models: Mapping[str, Any]
    compiled: Mapping[str, Scorer] = field(default_factory=dict)  # loaded compiled scorers

    @property
    def version(self) -> str:
        """The content hash that names this bundle."""
        return str(self.manifest["version"])

    @property
    def feature_names(self) -> dict[str, tuple[str, ...]]:
        """Feature names, in column order, per model."""
        return {n: tuple(e["feature_names"]) for n, e in self.manifest["models"].items()}

    @property
    def thresholds(self) -> Mapping[str, Any]:
        """Calibrated decision thresholds recorded at training."""
        return dict(self.manifest["thresholds"])

    @cached_property
    def scorers(self) -> dict[str, Scorer]:
        """Fast scorers of every scorable model, compiled once (or as loaded)."""
        if self.compiled:
            return dict(self.compiled)
        out: dict[str, Scorer] = {}
        for name, model in self.models.items():
            if not is_scorable(model):
                continue
            try:
                out[name] = compile_model(model)
            except (TypeError, ValueError) as exc:
                raise BundleError(
                    f"bundle {self.version}: model {name!r} cannot be compiled for scoring: "
                    f"{exc}; retrain it",
                    BundleReason.UNSUPPORTED_MODEL,
                ) from exc
        return out

    @cached_property
    def suite(self) -> ScoringSuite:
        """All scorers as one ``ScoringSuite``."""
        return ScoringSuite(self.scorers)


def model_kind(model: object) -> str:
    """A short name of a model's family (the final step's, for a Pipeline)."""
    steps = getattr(model, "steps", None)
    final = steps[-1][1] if steps else model
    name = type(final).__name__
    return _KINDS.get(name) or re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


def library_versions() -> dict[str, str]:
    """Versions of the libraries a bundle depends on, as recorded in its manifest."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": _dist_version("scikit-learn"),
        "skops": _dist_version("skops"),
        "escrowguard": _escrowguard_version(),
    }


def _escrowguard_version() -> str:
    """The installed escrowguard distribution's version."""
    return _dist_version("escrowguard")


def _dist_version(name: str) -> str:
    """An installed distribution's version, without importing it ("unknown" if absent)."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def bundle_version(manifest: Mapping[str, Any]) -> str:
    """The content hash of a manifest (its ``version`` key excluded): 12 hex digits."""
    body = {k: v for k, v in manifest.items() if k != "version"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _feature_names_for(name: str, model: object, given: Sequence[str] | None) -> list[str]:
    """Feature names of one model: as given, else the model's own ``feature_names_in_``."""
    own = getattr(model, "feature_names_in_", None)
    if given is not None:
        names = [str(n) for n in given]
    else:
        names = [str(n) for n in (own if own is not None else [])]
    if own is not None and list(own) != names:
        raise BundleError(
            f"model {name!r}: feature names given {names} differ from those it was fitted "
            f"with {list(own)}",
            BundleReason.FEATURE_MISMATCH,
        )
    n_in = getattr(model, "n_features_in_", None)
    if is_scorable(model) and (n_in is None or len(names) != int(n_in)):
        raise BundleError(
            f"model {name!r} reads {n_in} features but {len(names)} feature names were given",
            BundleReason.FEATURE_MISMATCH,
        )
    return names


def _save_scorer(staging: Path, name: str, model: object) -> dict[str, Any]:
    """Write a model's compiled scorer; returns its manifest entry."""
    try:
        arrays = scorer_arrays(compile_model(model))
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"model {name!r} cannot be compiled for scoring: {exc}",
            BundleReason.UNSUPPORTED_MODEL,
        ) from exc
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)  # type: ignore[arg-type]
    data = buf.getvalue()
    file_name = name + SCORER_SUFFIX
    (staging / file_name).write_bytes(data)
    return {"file": file_name, "sha256": _sha256(data), "size_bytes": len(data)}


def save_bundle(
    out_dir: str | os.PathLike[str],
    models: Mapping[str, object],
    *,
    created_at: datetime,
    feature_names: Mapping[str, Sequence[str]] | None = None,
    training: TrainingInfo | Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``models`` as a new bundle ``out_dir/<version>/`` and return its path.

    ``out_dir`` may be a registry directory (then ``promote`` needs no copy) or any staging
    directory. ``created_at`` is passed in (the models package never reads the clock).
    """
    import skops.io as sio

    if not models:
        raise BundleError("a bundle needs at least one model", BundleReason.INVALID_BUNDLE)
    for name in models:
        if not _MODEL_NAME.match(name):
            raise BundleError(
                f"model name {name!r} must match {_MODEL_NAME.pattern}",
                BundleReason.INVALID_BUNDLE,
            )
    names = dict(feature_names or {})
    training_json = training.to_json() if isinstance(training, TrainingInfo) else training
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        entries: dict[str, Any] = {}
        for name, model in sorted(models.items()):
            file_name = name + MODEL_SUFFIX
            sio.dump(model, staging / file_name, compression=zipfile.ZIP_DEFLATED)
            data = (staging / file_name).read_bytes()
            entries[name] = {
                "file": file_name,
                "sha256": _sha256(data),
                "size_bytes": len(data),
                "feature_names": _feature_names_for(name, model, names.get(name)),
                "kind": model_kind(model),
            }
            if is_scorable(model):
                entries[name]["scorer"] = _save_scorer(staging, name, model)
        manifest: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "created_at": created_at.isoformat(),
            "models": entries,
            "training": dict(training_json or {}),
            "metrics": dict(metrics or {}),
            "thresholds": dict(thresholds or {}),
            "library_versions": library_versions(),
        }
        try:
            manifest["version"] = bundle_version(manifest)
            text = json.dumps(manifest, indent=2, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BundleError(
                f"manifest fields must be JSON (finite numbers, strings, lists, dicts): {exc}",
                BundleReason.INVALID_BUNDLE,
            ) from exc
        (staging / MANIFEST_NAME).write_text(text + "\n", encoding="utf-8")
        final = root / manifest["version"]
        if final.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log_event(logger, "bundle_saved", version=manifest["version"], path=str(final))
    return final


def _read_manifest(path: Path) -> dict[str, Any]:
    """Parse and shape-check ``manifest.json``; check its format and content hash."""
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleError(
            f"bundle {path}: {MANIFEST_NAME} is missing; is this a bundle directory?",
            BundleReason.MISSING_FILE,
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BundleError(
            f"bundle {path}: {MANIFEST_NAME} is not readable JSON ({exc})",
            BundleReason.UNREADABLE,
        ) from exc
    if not isinstance(manifest, dict):
        raise BundleError(
            f"bundle {path}: {MANIFEST_NAME} is not an object", BundleReason.UNREADABLE
        )
    fmt = manifest.get("format_version")
    if type(fmt) is not int or fmt not in SUPPORTED_FORMAT_VERSIONS:
        raise BundleError(
            f"bundle {path}: format_version {fmt!r} is not supported (this escrowguard reads "
            f"{sorted(SUPPORTED_FORMAT_VERSIONS)}); retrain or upgrade escrowguard",
            BundleReason.UNSUPPORTED_FORMAT,
        )
    shape = {
        "version": str,
        "created_at": str,
        "models": dict,
        "training": dict,
        "metrics": dict,
        "thresholds": dict,
        "library_versions": dict,
    }
    for key, kind in shape.items():
        if not isinstance(manifest.get(key), kind):
            raise BundleError(
                f"bundle {path}: {MANIFEST_NAME} lacks {key!r} ({kind.__name__})",
                BundleReason.UNREADABLE,
            )
    for name, entry in manifest["models"].items():
        ok = isinstance(entry, dict) and _MODEL_NAME.match(str(name)) is not None
        ok = ok and all(isinstance(entry.get(k), str) for k in ("file", "sha256", "kind"))
        ok = ok and isinstance(entry.get("feature_names"), list)
        ok = ok and entry.get("file") == str(name) + MODEL_SUFFIX
        scorer = entry.get("scorer") if isinstance(entry, dict) else None
        if scorer is not None:
            ok = ok and isinstance(scorer, dict)
            ok = ok and all(isinstance(scorer.get(k), str) for k in ("file", "sha256"))
            ok = ok and scorer.get("file") == str(name) + SCORER_SUFFIX
        if not ok:
            raise BundleError(
                f"bundle {path}: {MANIFEST_NAME} entry for model {name!r} is malformed",
                BundleReason.UNREADABLE,
            )
    try:
        expected_version = bundle_version(manifest)
    except ValueError as exc:
        raise BundleError(f"bundle {path}: {exc}", BundleReason.UNREADABLE) from exc
    if manifest["version"] != expected_version:
        raise BundleError(
            f"bundle {path}: {MANIFEST_NAME} was edited: it says version "
            f"{manifest['version']!r} but its content hashes to {expected_version!r}",
            BundleReason.TAMPERED,
        )
    return manifest


def _check_library_versions(path: Path, manifest: Mapping[str, Any]) -> None:
    """scikit-learn major.minor of the bundle must equal the running one."""
    saved = str(manifest["library_versions"].get("scikit-learn", "unknown"))
    running = _dist_version("scikit-learn")
    if saved.split(".")[:2] != running.split(".")[:2]:
        raise BundleError(
            f"bundle {manifest['version']} ({path}) was trained with scikit-learn {saved}, "
            f"this process runs {running}: tree formats differ between minor versions. "
            f"Retrain the models with this scikit-learn (escrowguard train), or run with "
            f"scikit-learn {'.'.join(saved.split('.')[:2])}.*",
            BundleReason.INCOMPATIBLE_VERSION,
        )


def _check_features(
    manifest: Mapping[str, Any], expected: Mapping[str, Sequence[str]] | None
) -> None:
    """Each expected model is present with exactly the expected feature names, in order."""
    for name, want in (expected or {}).items():
        entry = manifest["models"].get(name)
        if entry is None:
            raise BundleError(
                f"bundle {manifest['version']} has no model {name!r} "
                f"(it has {sorted(manifest['models'])}); retrain",
                BundleReason.MISSING_MODEL,
            )
        have, want_names = list(entry["feature_names"]), [str(w) for w in want]
        if have == want_names:
            continue
        pairs = enumerate(zip(have, want_names, strict=False))
        pos = next((i for i, (h, w) in pairs if h != w), min(len(have), len(want_names)))
        got = repr(have[pos]) if pos < len(have) else "nothing"
        exp = repr(want_names[pos]) if pos < len(want_names) else "nothing"
        raise BundleError(
            f"bundle {manifest['version']}: model {name!r} feature #{pos} is {got} but the "
            f"code expects {exp} ({len(have)} features in the bundle, {len(want_names)} "
            f"expected); "
            f"retrain the bundle with this version of escrowguard",
            BundleReason.FEATURE_MISMATCH,
        )


def _read_verified(path: Path, entry: Mapping[str, Any]) -> bytes:
    """A bundle file's bytes, checked against the manifest's size and sha256."""
    file_path = path / entry["file"]
    try:
        data = file_path.read_bytes()
    except FileNotFoundError:
        raise BundleError(
            f"bundle {path}: model file {entry['file']} is missing", BundleReason.MISSING_FILE
        ) from None
    except OSError as exc:
        raise BundleError(
            f"bundle {path}: cannot read {entry['file']}: {exc}", BundleReason.UNREADABLE
        ) from exc
    if _sha256(data) != entry["sha256"]:
        size = entry.get("size_bytes")
        if isinstance(size, int) and len(data) < size:
            raise BundleError(
                f"bundle {path}: model file {entry['file']} is truncated "
                f"({len(data)} of {size} bytes); copy the bundle again",
                BundleReason.TRUNCATED,
            )
        raise BundleError(
            f"bundle {path}: model file {entry['file']} does not match its sha256 in the "
            f"manifest: it was modified; do not use this bundle",
            BundleReason.TAMPERED,
        )
    return data


def _load_model(path: Path, name: str, entry: Mapping[str, Any], trusted: frozenset[str]) -> Any:
    """Read one model file, verify size and sha256, check its types, load it with skops."""
    import skops.io as sio

    data = _read_verified(path, entry)
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # skops/zipfile raise many kinds on a bad archive
        raise BundleError(
            f"bundle {path}: {entry['file']} is not a readable skops file ({exc})",
            BundleReason.UNREADABLE,
        ) from exc
    refused = sorted(set(untrusted) - trusted)
    if refused:
        raise BundleError(
            f"bundle {path}: {entry['file']} holds types outside the allow-list: {refused}",
            BundleReason.UNTRUSTED_TYPE,
        )
    try:
        model = sio.loads(data, trusted=untrusted)
    except Exception as exc:
        raise BundleError(
            f"bundle {path}: cannot load {entry['file']} ({type(exc).__name__}: {exc})",
            BundleReason.UNREADABLE,
        ) from exc
    n_in = getattr(model, "n_features_in_", None)
    names = entry["feature_names"]
    if names and n_in is not None and int(n_in) != len(names):
        raise BundleError(
            f"bundle {path}: model {name!r} reads {n_in} features, manifest names {len(names)}",
            BundleReason.FEATURE_MISMATCH,
        )
    return model


def _load_scorer(path: Path, name: str, entry: Mapping[str, Any]) -> Scorer:
    """Read one compiled scorer, verify size and sha256, rebuild it (arrays only)."""
    data = _read_verified(path, entry)
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return scorer_from_arrays({k: npz[k] for k in npz.files})
    except Exception as exc:  # zipfile/numpy raise many kinds on a bad archive
        raise BundleError(
            f"bundle {path}: cannot load {entry['file']} ({type(exc).__name__}: {exc})",
            BundleReason.UNREADABLE,
        ) from exc


def load_bundle(
    path: str | os.PathLike[str],
    expected_features: Mapping[str, Sequence[str]] | None = None,
    *,
    trusted_types: Iterable[str] = (),
    scorers_only: bool = False,
) -> Bundle:
    """Verify and load the bundle at ``path``.

    Checks, in order: manifest present and well-formed, format supported, version equal to
    the content hash, scikit-learn major.minor equal to the running one, the expected
    models' feature names and order, then per model file: present, not truncated, sha256,
    only allow-listed types (``TRUSTED_TYPES`` + ``trusted_types``).

    ``scorers_only``: load just the compiled scorers of the expected models (present, not
    truncated, sha256, well-formed arrays); ``models`` is then empty and nothing imports
    scikit-learn. A bundle without compiled scorers for them loads the full way.
    """
    bundle_path = Path(path)
    if not bundle_path.is_dir():
        raise BundleError(
            f"bundle directory {bundle_path} does not exist", BundleReason.MISSING_FILE
        )
    manifest = _read_manifest(bundle_path)
    _check_features(manifest, expected_features)
    wanted = sorted(expected_features or manifest["models"])
    if scorers_only and all("scorer" in manifest["models"][n] for n in wanted):
        compiled = {
            n: _load_scorer(bundle_path, n, manifest["models"][n]["scorer"]) for n in wanted
        }
        log_event(
            logger,
            "bundle_loaded",
            version=manifest["version"],
            path=str(bundle_path),
            scorers_only=True,
        )
        return Bundle(path=bundle_path, manifest=manifest, models={}, compiled=compiled)
    _check_library_versions(bundle_path, manifest)
    trusted = TRUSTED_TYPES | frozenset(trusted_types)
    models = {
        name: _load_model(bundle_path, name, entry, trusted)
        for name, entry in sorted(manifest["models"].items())
    }
    compiled = {
        name: _load_scorer(bundle_path, name, entry["scorer"])
        for name, entry in sorted(manifest["models"].items())
        if "scorer" in entry
    }
    log_event(logger, "bundle_loaded", version=manifest["version"], path=str(bundle_path))
    return Bundle(path=bundle_path, manifest=manifest, models=models, compiled=compiled)


# --- registry ---------------------------------------------------------------------------


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path``'s content atomically: write a temp file beside it, then rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def promote(
    registry_dir: str | os.PathLike[str],
    bundle_dir: str | os.PathLike[str],
    expected_features: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """Verify a bundle, copy it into ``registry_dir/<version>/`` and make it CURRENT.

    Returns the version. A bundle already in the registry is not copied again.
    """
    registry = Path(registry_dir)
    bundle = load_bundle(bundle_dir, expected_features)
    registry.mkdir(parents=True, exist_ok=True)
    target = registry / bundle.version
    if not target.exists():
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=registry))
        try:
            for item in _bundle_files(bundle.manifest):
                shutil.copy2(bundle.path / item, staging / item)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    if target.resolve() != bundle.path.resolve():
        load_bundle(target, expected_features)  # what CURRENT will name must verify too
    _write_atomic(registry / CURRENT_NAME, bundle.version + "\n")
    log_event(logger, "bundle_promoted", version=bundle.version, registry=str(registry))
    return bundle.version


def _bundle_files(manifest: Mapping[str, Any]) -> list[str]:
    """Every file of a bundle: the manifest, model files, compiled scorers."""
    files = [MANIFEST_NAME]
    for entry in manifest["models"].values():
        files.append(entry["file"])
        if "scorer" in entry:
            files.append(entry["scorer"]["file"])
    return files


def current_version(registry_dir: str | os.PathLike[str]) -> str | None:
    """The promoted version named by ``registry_dir/CURRENT``, or None if nothing is."""
    current = Path(registry_dir) / CURRENT_NAME
    try:
        text = current.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"cannot read {current}: {exc}", BundleReason.UNREADABLE) from exc
    if not _VERSION.match(text):
        raise BundleError(
            f"{current} holds {text[:40]!r}, not a bundle version; promote a bundle again",
            BundleReason.UNREADABLE,
        )
    return text


def current_bundle_path(registry_dir: str | os.PathLike[str]) -> Path:
    """Directory of the promoted bundle; BundleError when nothing is promoted."""
    version = current_version(registry_dir)
    if version is None:
        raise BundleError(
            f"model registry {registry_dir} has no {CURRENT_NAME}: train and promote a "
            f"bundle first",
            BundleReason.NO_CURRENT,
        )
    path = Path(registry_dir) / version
    if not path.is_dir():
        raise BundleError(
            f"{CURRENT_NAME} names version {version} but {path} is missing",
            BundleReason.MISSING_FILE,
        )
    return path
