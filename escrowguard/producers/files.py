"""Write a generated history to a directory, and summarise it for the command line.

Every file is written to a temporary name in the target directory and renamed over the
final one, so a crash never leaves a half-written table behind a complete-looking name.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from escrowguard.errors import ConfigError, DataError
from escrowguard.models.pareto import top_share
from escrowguard.producers.export import EVENT_PREFIXES, TABLES, History
from escrowguard.producers.progress import Phases, SilentPhases

_LINES_PER_WRITE: Final = 50_000


def labels_json(labels: dict[str, Any]) -> bytes:
    """labels.json bytes: sorted keys, two-space indent, trailing newline (byte-stable)."""
    return (json.dumps(labels, sort_keys=True, indent=2, allow_nan=False) + "\n").encode()


# --- writing ----------------------------------------------------------------------------


def prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and check it is writable, or raise ConfigError."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"--out {out_dir}: cannot write there ({exc.strerror or exc})", "not_writable"
        ) from None
    return out_dir


def _replace(path: Path, write: Callable[[Path], object]) -> int:
    """Write via a temporary file in the same directory, then rename over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"cannot write {path}: {exc.strerror or exc}", "not_writable") from None
    return path.stat().st_size


def write_history(
    history: History, out_dir: Path, progress: Phases | None = None
) -> dict[str, int]:
    """Write the six tables, events.jsonl and labels.json; returns bytes written per file."""
    phases = progress or SilentPhases()
    prepare_out_dir(out_dir)
    phases.start("write", len(history.tables) + 2)
    sizes: dict[str, int] = {}
    for name in TABLES:
        table = history.tables[name]
        write_table = functools.partial(pq.write_table, table, compression="zstd")
        sizes[f"{name}.parquet"] = _replace(out_dir / f"{name}.parquet", write_table)
        phases.advance()

    def write_events(tmp: Path) -> None:
        with tmp.open("wb") as fh:
            for start in range(0, len(history.events), _LINES_PER_WRITE):
                chunk = history.events[start : start + _LINES_PER_WRITE]
                fh.write(b"\n".join(chunk) + b"\n")

    sizes["events.jsonl"] = _replace(out_dir / "events.jsonl", write_events)
    phases.advance()
    sizes["labels.json"] = _replace(
        out_dir / "labels.json", lambda tmp: tmp.write_bytes(labels_json(history.labels))
    )
    phases.advance()
    return sizes


# --- summary ----------------------------------------------------------------------------


def history_stats(history: History) -> dict[str, float]:
    """Headline shape figures: funded share of finished projects, share of voted milestones
    below the 0.7 approval target, and the money held by the top 20% of projects/backers."""
    t = history.tables
    status = t["projects"]["status"].to_numpy()
    finished = status != 1
    rate = t["milestones"]["approval_rate"].to_numpy(zero_copy_only=False)
    voted = ~np.isnan(rate)
    pledges = t["pledges"]
    amount = pledges["amount"].cast(pa.float64()).to_numpy()
    backer_ids = t["backers"]["backer_id"].to_numpy(zero_copy_only=False)
    backer_pos = np.searchsorted(backer_ids, pledges["backer_id"].to_numpy(zero_copy_only=False))
    by_backer = np.bincount(backer_pos, weights=amount, minlength=backer_ids.size)
    funding = t["projects"]["current_funding"].cast(pa.float64()).to_numpy()
    return {
        "funded_share": float((status[finished] == 2).mean()) if finished.any() else 0.0,
        "below_target_share": float((rate[voted] < 0.7).mean()) if voted.any() else 0.0,
        "top20_projects_share": top_share(funding, 0.2),
        "top20_backers_share": top_share(by_backer, 0.2),
    }


def summary_lines(history: History, sizes: dict[str, int], elapsed_s: float) -> list[str]:
    """What ``escrowguard generate`` prints when it is done."""
    labels, counts = history.labels, history.labels["counts"]
    stats = history_stats(history)
    events = counts["events"]
    lines = [
        f"history: seed={history.seed} scale={history.scale:g} "
        f"{labels['history_start']} .. {labels['history_end']}",
        "tables:  " + " ".join(f"{name}={counts[name]:,}" for name in TABLES),
        "events:  " + " ".join(f"{name}={counts[name]:,}" for name in EVENT_PREFIXES),
        "attacks: " + " ".join(f"{kind}={len(rows):,}" for kind, rows in labels["attacks"].items()),
        f"shape:   funded={stats['funded_share']:.1%} "
        f"milestones_below_0.7={stats['below_target_share']:.1%} "
        f"top20%_projects={stats['top20_projects_share']:.1%} "
        f"top20%_backers={stats['top20_backers_share']:.1%}",
        f"written: {sum(sizes.values()) / 1e6:,.1f} MB in {len(sizes)} files",
        f"time:    {elapsed_s:.1f} s, {events / max(elapsed_s, 1e-9):,.0f} events/s",
    ]
    return lines
