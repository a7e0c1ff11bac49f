"""CI's run of bench/gpu.py --smoke: the prepared device check works end to end (on the CPU, microscopic
pipelines of the same classes), ending in its one JSON line. Its figures mean nothing off a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_the_device_check_runs_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu-smoke.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu.py"), "--smoke", "--out", str(out)],
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=880,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary == json.loads(out.read_text())
    assert (summary["device"], summary["smoke"], summary["skipped"]) == ("cpu", True, [])
    rows = summary["results"]
    assert {(r["arch"], r["batch"]) for r in rows} == {
        (a, b) for a in ("sd-turbo", "sdxl-turbo") for b in (1, 4)
    }
    for row in rows:
        assert row["raw_ips"] > 0 and row["stack_ips"] > 0
        assert row["stack_over_raw"] == pytest.approx(row["stack_ips"] / row["raw_ips"], rel=0.01)
        assert 0 < row["gpu_busy_raw"] <= 1.05 and 0 < row["gpu_busy_stack"] <= 1.05
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["latency_jobs"] >= 1
    assert {r["variant"] for r in rows} == {"eager"}  # compiling is left out on the CPU
    switches = summary["switches"]
    cache, tiling = switches["prompt_cache"], switches["vae_tiling"]
    assert cache["hits"] == 2 and cache["uncached_ms"] > 0 and cache["cached_ms"] > 0
    assert tiling["size"] == [64, 64] and tiling["whole_ms"] > 0 and tiling["tiled_ms"] > 0
    tiny = summary["tiny_decoder"]
    assert [(r["arch"], r["batch"]) for r in tiny] == [("sd-turbo", 4), ("sdxl-turbo", 4)]
    assert all(r["raw_ips"] > 0 and r["over_own_vae"] > 0 for r in tiny)
