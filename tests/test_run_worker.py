"""`python run.py worker` flags: laid over the settings, validated again, and bad ones refused clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import run
from bot.core.settings import load_settings
from inference.settings import BUNDLED_MODEL_DEFAULTS

ROOT = Path(__file__).resolve().parents[1]


def test_flags_override_settings_and_a_model_brings_its_own_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[worker]\nport = 9100\nmax_batch = 4\n[engine]\ndevice = "cpu"\n')
    settings = load_settings(config, {})

    worker, engine = run.worker_settings(settings, run.parse_args(["worker"]))
    assert (worker.port, worker.max_batch, engine.device, engine.model) == (9100, 4, "cpu", None)
    assert engine.defaults == BUNDLED_MODEL_DEFAULTS

    args = run.parse_args(["worker", "--model", "some/sd-model", "--port", "9200", "--max-batch", "2"])
    worker, engine = run.worker_settings(settings, args)
    assert (worker.port, worker.max_batch, engine.device, engine.model) == (9200, 2, "cpu", "some/sd-model")
    assert engine.defaults.width == 512  # the configured model's defaults, not the bundled model's


def test_bad_flags_and_a_public_bind_without_token_are_refused() -> None:
    def worker(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "run.py", "worker", *flags],
            check=False,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    public = worker("--host", "0.0.0.0", "--port", "0")
    assert public.returncode == 2 and "without a token" in public.stderr
    bad = worker("--max-batch", "0")
    assert bad.returncode == 2 and "max_batch" in bad.stderr
