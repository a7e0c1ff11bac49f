"""CI's short run of bench/hostile.py: hostile requests, a maximum-size edit flood and one crash case per
process, ending in the JSON line the issue asks for, with every count at zero and memory bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_the_quick_hostile_bench_ends_clean(tmp_path: Path) -> None:
    out = tmp_path / "hostile.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "hostile.py"), "--quick", "--output", str(out)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["requests"] >= 1000
    zeros = {k: summary[k] for k in ("server_errors", "crashes", "orphans", "unsettled", "double_charges")}
    assert zeros == dict.fromkeys(zeros, 0), (zeros, run.stderr[-3000:])
    assert summary["rss_growth_mb"] <= 64
    detail = json.loads(out.read_text())
    assert detail["hostile"]["slow_connections_closed"] == detail["hostile"]["slow_connections"]
    assert detail["memory"]["statuses"].get("429", 0) > 0  # the flood was refused, not absorbed
    assert all(case["killed"] for case in detail["crash_matrix"]["cases"])  # each kill really happened
