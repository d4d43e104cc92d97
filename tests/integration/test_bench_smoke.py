"""``escrowguard bench`` at a small size on the session's servers: every phase runs and the
JSON is complete and sane. No timing is asserted (figures at this size mean nothing)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from escrowguard.bench.report import RESULT_KEYS, problems
from escrowguard.settings import Settings

pytestmark = pytest.mark.integration


def test_bench_writes_a_complete_sane_json(settings: Settings, tmp_path: Path) -> None:
    json_path = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "escrowguard",
            "bench",
            "--events",
            "5000",
            "--load-seconds",
            "3",
            "--naive-seconds",
            "3",
            "--two-worker-seconds",
            "5",
            "--out",
            str(tmp_path / "out"),
            "--json",
            str(json_path),
            "--bootstrap-servers",
            settings.kafka.bootstrap_servers,
            "--redis-url",
            settings.redis.url,
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "scorer_eps" in done.stdout  # the table
    result = json.loads(json_path.read_text())
    assert tuple(result) == RESULT_KEYS
    assert problems(result) == []
    assert math.isclose(
        result["ratio_scorer_vs_bare"],
        result["scorer_eps"] / result["bare_faust_eps"],
        rel_tol=0.01,
    )
    assert math.isclose(
        result["speedup_vs_naive"], result["scorer_eps"] / result["naive_eps"], rel_tol=0.01
    )
    assert set(result["latency_ms"]) == {"25", "50", "80"}
    machine = result["machine"]
    assert machine["cores"] == os.cpu_count()
    assert machine["servers"] == "configured"
    assert machine["libraries"]["faust-streaming"]
    details = json.loads((tmp_path / "bench.details.json").read_text())
    assert details["events"] == 5000
    assert details["worker"]["events"] > 0
    assert details["latency"]["outputs_counted"] > 0
