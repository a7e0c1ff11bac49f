"""The container files: valid compose, and every command, variable, path and health check matches the code.

No Docker engine runs on the development and CI machines, so these tests check what can be checked without
one: the compose files against the Compose Specification's own JSON schema (vendored, see README.md here),
the services' commands through `run.py`'s real argument parser, their environment through the real settings
loader, the worker's health check against a real worker started with the compose command, and the
entrypoint script with real secret files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

import run
from bot.core.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((Path(__file__).parent / "compose-spec.json").read_text(encoding="utf-8"))
WORKER_SERVICES = ("worker-gpu", "worker-cpu")
_VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?::?[-?](?P<default>[^}]*))?\}")


def load_compose(name: str = "compose.yaml") -> dict[str, Any]:
    compose: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return compose


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${NAME}` / `${NAME:-default}` substitution, enough for the forms the files use."""
    return _VAR.sub(lambda m: env.get(m["name"]) or (m["default"] or ""), value)


def service_env(service: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """The environment a service's process sees: the image's ENV, then .env, then `environment:`."""
    env = dict(dockerfile_env())
    env.update(dotenv)
    env.update({k: interpolate(str(v), dotenv) for k, v in service.get("environment", {}).items()})
    return env


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for op, args in dockerfile_instructions():
        if op == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def dockerfile_json(op: str) -> list[str]:
    (args,) = [a for o, a in dockerfile_instructions() if o == op]
    argv: list[str] = json.loads(args.split("CMD", 1)[1] if op == "HEALTHCHECK" else args)
    return argv


def settings_for(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly this environment builds (pydantic-settings reads os.environ)."""
    for key in list(os.environ):
        if key.startswith("BRUSHFIRE_") or key == "DISCORD_TOKEN":
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(environ=env)


def healthy(check: list[str], env: dict[str, str]) -> bool:
    return subprocess.run(check, check=False, env=env, capture_output=True, timeout=30).returncode == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the files are valid ---


@pytest.mark.parametrize("name", ["compose.yaml", "compose.secrets.yaml"])
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    jsonschema.validate(load_compose(name), SCHEMA)


def test_the_schema_check_catches_a_misspelt_key() -> None:
    broken = load_compose()
    broken["services"]["bot"]["comand"] = broken["services"]["bot"].pop("command")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_every_secret_and_override_names_a_service_of_the_main_file() -> None:
    main, secrets = load_compose(), load_compose("compose.secrets.yaml")
    assert set(secrets["services"]) <= set(main["services"])
    for service in secrets["services"].values():
        assert set(service["secrets"]) <= set(secrets["secrets"])


# --- commands and settings match the code ---


def test_service_commands_are_run_py_commands() -> None:
    services = load_compose()["services"]
    for name in WORKER_SERVICES:
        args = run.parse_args(services[name]["command"])
        assert (args.command, args.host, args.port) == ("worker", "0.0.0.0", 8765)
    assert run.parse_args(services["bot"]["command"]).command == "bot"
    assert run.parse_args(dockerfile_json("CMD")).command == "all"


def test_profiles_give_one_worker_each_and_the_gpu_one_reserves_an_nvidia_gpu() -> None:
    services = load_compose()["services"]
    for profile in ("gpu", "cpu"):
        workers = [n for n in WORKER_SERVICES if profile in services[n]["profiles"]]
        assert workers == [f"worker-{profile}"]
        assert profile in services["bot"]["profiles"]
    (device,) = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert "deploy" not in services["worker-cpu"]
    assert services["worker-gpu"]["environment"]["BRUSHFIRE_ENGINE__DEVICE"] == "cuda"
    assert services["worker-cpu"]["environment"]["BRUSHFIRE_ENGINE__DEVICE"] == "cpu"


def test_the_bot_reaches_whichever_worker_runs_with_the_same_token(monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_compose()["services"]
    dotenv = {"WORKER_TOKEN": "s3cret", "DISCORD_TOKEN": "discord"}
    bot = settings_for(service_env(services["bot"], dotenv), monkeypatch)
    for name in WORKER_SERVICES:
        assert "worker" in services[name]["networks"]["default"]["aliases"]
        worker = settings_for(service_env(services[name], dotenv), monkeypatch)
        url = f"http://worker:{worker.worker.port}"
        assert bot.resolved_worker_url == url
        assert bot.resolved_worker_token == worker.worker.token == "s3cret"
        # The worker never holds the bot's Discord token.
        assert worker.discord_token is None or not worker.discord_token.get_secret_value()
        assert services["bot"]["depends_on"][name] == {"condition": "service_healthy", "required": False}
    assert bot.discord_token is not None and bot.discord_token.get_secret_value() == "discord"


def test_state_lives_on_volumes_and_the_image_runs_as_a_user(monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_compose()["services"]
    env = dockerfile_env()
    settings = settings_for(env, monkeypatch)
    for service in services.values():
        mounts = {v.split(":")[1] for v in service["volumes"]}
        assert str(settings.database.path.parent) in mounts
        assert str(settings.discord.sync_state_file.parent) in mounts
        assert env["HF_HOME"] in mounts
    volume = json.loads(next(a for o, a in dockerfile_instructions() if o == "VOLUME"))
    assert {str(settings.database.path.parent), env["HF_HOME"]} <= set(volume)
    users = [a for o, a in dockerfile_instructions() if o == "USER"]
    assert users and users[-1] not in ("root", "0")


def test_the_image_holds_the_runtime_and_the_bundled_model() -> None:
    copied = {src for o, a in dockerfile_instructions() if o == "COPY" for src in a.split()[:-1]}
    for needed in ("bot", "cogs", "inference", "storage", "run.py", "pyproject.toml"):
        assert needed in copied
        assert (ROOT / needed).exists()
    ignored = [
        p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"
    ]
    model_files = [p.relative_to(ROOT).as_posix() for p in (ROOT / "inference/tiny/model").rglob("*.*")]
    shipped = [f for f in model_files if not f.startswith("inference/tiny/model/train-state")]
    assert shipped, "the bundled model is missing from the repository"
    for path in shipped:
        assert not any(fnmatch(path, pat) or path.startswith(pat.rstrip("/") + "/") for pat in ignored), path
    # The same torch pin as CI installs.
    pin = re.search(r"torch==([\d.]+)", (ROOT / ".ci/run").read_text())
    assert pin is not None
    assert f"TORCH_VERSION={pin[1]}" in {a for o, a in dockerfile_instructions() if o == "ARG"}


def test_the_worker_health_check_is_the_same_in_the_image_and_compose() -> None:
    services = load_compose()["services"]
    for name in WORKER_SERVICES:
        assert services[name]["healthcheck"]["test"] == ["CMD", *dockerfile_json("HEALTHCHECK")]
    assert services["bot"]["healthcheck"] == {"disable": True}
    assert "8765" in [a for o, a in dockerfile_instructions() if o == "EXPOSE"]


@pytest.mark.timeout(180)
def test_the_health_check_passes_against_a_worker_started_with_the_compose_command(tmp_path: Path) -> None:
    service = load_compose()["services"]["worker-cpu"]
    port = str(free_port())
    env = {**os.environ, **service_env(service, {"WORKER_TOKEN": "s3cret"})}
    env.update(
        BRUSHFIRE_WORKER__PORT=port,
        BRUSHFIRE_DATABASE__PATH=str(tmp_path / "bf.sqlite3"),
        BRUSHFIRE_DISCORD__SYNC_STATE_FILE=str(tmp_path / "sync"),
        HF_HOME=str(tmp_path / "models"),
        HF_HUB_OFFLINE="1",
    )
    command = [port if part == "8765" else part for part in service["command"]]
    check = service["healthcheck"]["test"][1:]
    check[0] = sys.executable
    assert not healthy(check, env)
    worker = subprocess.Popen(
        [sys.executable, "run.py", *command], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 150
        while not healthy(check, env):
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            assert time.monotonic() < deadline, "the worker never became healthy"
            time.sleep(0.5)
    finally:
        worker.terminate()
        worker.wait(timeout=60)


# --- the entrypoint ---


def run_entrypoint(
    tmp_path: Path, secrets: dict[str, str], env: dict[str, str], *args: str
) -> dict[str, Any]:
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name, value in secrets.items():
        (secrets_dir / name).write_text(value + "\n")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\n"
        "keys = ('DISCORD_TOKEN', 'BRUSHFIRE_WORKER__TOKEN', 'BRUSHFIRE_WORKER_TOKEN')\n"
        "print(json.dumps({'argv': sys.argv[1:], 'cwd': os.getcwd(),"
        " 'env': {k: os.environ.get(k) for k in keys}}))\n"
    )
    shim = tmp_path / "python"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {probe} "$@"\n')
    shim.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if "TOKEN" not in k}
    clean.update(
        BRUSHFIRE_SECRETS_DIR=str(secrets_dir), BRUSHFIRE_APP_DIR=str(ROOT), BRUSHFIRE_PYTHON=str(shim), **env
    )
    out = subprocess.run(
        ["sh", str(ROOT / "docker/entrypoint.sh"), *args],
        env=clean,
        capture_output=True,
        text=True,
        check=True,
    )
    environment: dict[str, Any] = json.loads(out.stdout)
    return environment


def test_the_entrypoint_reads_secret_files_and_runs_run_py(tmp_path: Path) -> None:
    seen = run_entrypoint(tmp_path, {"discord_token": "d-tok", "worker_token": "w-tok"}, {}, "bot")
    assert seen["argv"] == ["run.py", "bot"]
    assert Path(seen["cwd"]) == ROOT
    assert seen["env"] == {
        "DISCORD_TOKEN": "d-tok",
        "BRUSHFIRE_WORKER__TOKEN": "w-tok",
        "BRUSHFIRE_WORKER_TOKEN": "w-tok",
    }


def test_the_environment_wins_over_a_secret_file_and_missing_secrets_set_nothing(tmp_path: Path) -> None:
    seen = run_entrypoint(tmp_path, {"discord_token": "file"}, {"DISCORD_TOKEN": "env"}, "worker")
    assert seen["env"] == {
        "DISCORD_TOKEN": "env",
        "BRUSHFIRE_WORKER__TOKEN": None,
        "BRUSHFIRE_WORKER_TOKEN": None,
    }


def test_the_entrypoint_runs_the_real_run_py(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "TOKEN" not in k}
    env.update(
        BRUSHFIRE_SECRETS_DIR=str(tmp_path), BRUSHFIRE_APP_DIR=str(ROOT), BRUSHFIRE_PYTHON=sys.executable
    )
    out = subprocess.run(
        ["sh", str(ROOT / "docker/entrypoint.sh"), "--help"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "worker" in out.stdout and "bot" in out.stdout
