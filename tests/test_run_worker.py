"""`python run.py worker` flags: laid over the settings, validated again, and bad ones refused clearly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
    # The advice names what run.py reads: it has no --token flag.
    assert "run.py: `token` under [worker] in the config file, or BRUSHFIRE_WORKER__TOKEN" in public.stderr
    bad = worker("--max-batch", "0")
    assert bad.returncode == 2 and "max_batch" in bad.stderr


def test_a_model_that_cannot_be_had_is_one_clear_line_naming_it(tmp_path: Path) -> None:
    # Offline (as the tests run) and not in the cache: refused at once, naming the id and what to do.
    done = subprocess.run(
        [sys.executable, "run.py", "worker", "--model", "nobody/not-cached-anywhere", "--port", "0"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")},
    )
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "'nobody/not-cached-anywhere' is not in the local cache and HF_HUB_OFFLINE is set" in errors[0]
    assert "hf download nobody/not-cached-anywhere" in errors[0]


def test_an_unreachable_hub_is_reported_quickly_without_retries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from inference.checkpoints import hub_access
    from inference.engine_api import EngineError

    with socket.socket() as s:  # a port nothing listens on: connections are refused at once
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{closed}")
    started = time.perf_counter()
    with pytest.raises(EngineError) as refused:
        hub_access("someone/some-model", tmp_path / "cache")
    assert time.perf_counter() - started < 5.0
    message = str(refused.value)
    assert (
        f"cannot reach the Hugging Face Hub (http://127.0.0.1:{closed}) to download model 'someone/some-model'"
        in message
    )
    assert "\n" not in message and "model_index.json" not in message


def test_a_single_file_checkpoint_goes_through_from_single_file(tmp_path: Path) -> None:
    import torch
    from diffusers import AutoPipelineForText2Image
    from safetensors.torch import save_file

    from inference.checkpoints import from_single_file, single_file_class
    from inference.engine_api import EngineError
    from inference.loading import from_pretrained
    from inference.settings import EngineSettings

    settings = EngineSettings(device="cpu", cache_dir=tmp_path / "cache")
    # A file diffusers reads as a Stable Diffusion 1.x checkpoint picks that pipeline's from_single_file
    # (not from_pretrained, whose "config file is not a valid JSON file" was the old answer).
    sd1 = tmp_path / "community-model.safetensors"
    key = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
    save_file({key: torch.zeros(320, 768)}, sd1)
    assert single_file_class(AutoPipelineForText2Image, str(sd1)).__name__ == "StableDiffusionPipeline"
    # Offline, its component configs cannot be fetched: the error says it was a single-file load.
    with pytest.raises(EngineError, match="cannot load single-file checkpoint"):
        from_pretrained(AutoPipelineForText2Image, str(sd1), settings, torch.float32)
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineError, match=r"cannot load single-file checkpoint .*broken\.ckpt"):
        from_single_file(AutoPipelineForText2Image, str(broken), {})
    with pytest.raises(EngineError, match="no such checkpoint file"):
        from_single_file(AutoPipelineForText2Image, str(tmp_path / "gone.safetensors"), {})
