"""`run.py imagine` and `run.py edit`: the local user's path through job service, quotas, SQLite and worker."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import pytest
from PIL import Image

import run
from bot.core import terminal
from inference.output import read_metadata
from tests.bot.conftest import free_port
from tests.judge import Judge
from tools.tiny import data


def write_config(tmp_path: Path, tiny: tuple[Path, Path] | None, limit: int = 5) -> Path:
    """A config on the random-weight tiny pipelines (fast), or on the bundled trained model when `tiny` is None."""
    model, defaults = "", ""
    if tiny is not None:
        model = f'model = "{tiny[0]}"\nedit_model = "{tiny[1]}"\n'
        defaults = "[engine.defaults]\nsteps = 3\nwidth = 64\nheight = 64\n"
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[database]
path = "{tmp_path / "cli.sqlite3"}"
[worker]
port = {free_port()}
[engine]
{model}device = "cpu"
cpu_threads = 1
cache_dir = "{tmp_path / "cache"}"
{defaults}[quota]
default_limit = {limit}
[quota.relax]
enabled_by_default = false
""",
        encoding="utf-8",
    )
    return path


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_imagine_then_edit_writes_pngs_and_charges_the_local_user(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_models)
    out = tmp_path / "fox.png"
    assert run.main(["--config", str(config), "imagine", "a red fox", "-o", str(out), "--seed", "7"]) == 0
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (64, 64)
    err = capsys.readouterr().err
    assert "credits left" in err and "[" + "#" * 30 + "] Done" in err  # the bar ends full

    edited = tmp_path / "snowy.png"
    assert run.main(["--config", str(config), "edit", str(out), "make it snowy", "-o", str(edited)]) == 0
    with Image.open(edited) as img:
        assert img.format == "PNG"

    db = tmp_path / "cli.sqlite3"
    assert rows(db, "SELECT user_id, state FROM ledger ORDER BY created_at") == [
        (1, "committed"),
        (1, "committed"),
    ]
    assert rows(db, "SELECT kind, status FROM jobs ORDER BY created_at") == [
        ("generate", "succeeded"),
        ("edit", "succeeded"),
    ]
    (seed,) = rows(db, "SELECT seed FROM generations WHERE kind = 'generate'")[0]
    assert seed == 7


def test_quick_start_draws_the_prompt_on_the_bundled_model(tmp_path: Path) -> None:
    # The README's quick start, with a seed: no model configured, so the bundled trained one at its defaults.
    prompt = "a large yellow star in the centre of a blue background"
    config = write_config(tmp_path, None)
    out = tmp_path / "out.png"
    assert run.main(["--config", str(config), "imagine", prompt, "-o", str(out), "--seed", "6"]) == 0
    with Image.open(out) as img:
        assert img.size == (64, 64)
        verdict = Judge().judge(img)
    wanted = data.parse_caption(prompt)
    assert (verdict.background, verdict.colour, verdict.shape) == (
        wanted.background,
        wanted.groups[0].colour,
        wanted.groups[0].kind,
    ), verdict


def test_several_images_are_numbered_and_an_aspect_the_model_cannot_draw_is_named(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_models)
    out = tmp_path / "many.png"
    args = ["--config", str(config), "imagine", "dots", "-o", str(out), "--count", "2", "--aspect", "16:9"]
    assert run.main(args) == 0
    assert (tmp_path / "many-1.png").exists() and (tmp_path / "many-2.png").exists()
    with Image.open(tmp_path / "many-1.png") as img:
        assert img.size == (64, 64) and img.format == "PNG"
    # 16:9 at 64x64's pixel count rounds to a square: the command says so instead of staying silent.
    err = capsys.readouterr().err
    assert ", 64x64" in err and "--aspect 16:9 comes out 64x64 on this model" in err


def test_refusals_charge_nothing(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_models, limit=1)
    out = tmp_path / "x.png"
    assert run.main(["--config", str(config), "imagine", "   ", "-o", str(out)]) == 2
    assert "prompt is empty" in capsys.readouterr().err
    assert run.main(["--config", str(config), "imagine", "a cat", "--style", "nope", "-o", str(out)]) == 2
    assert "no style called" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    assert run.main(["--config", str(config), "edit", str(broken), "fix it", "-o", str(out)]) == 2
    assert "not a PNG, JPEG or WebP" in capsys.readouterr().err
    assert not out.exists()
    assert not (tmp_path / "cli.sqlite3").exists()  # refused before anything opened, let alone charged

    assert run.main(["--config", str(config), "imagine", "a cat", "-o", str(out)]) == 0
    assert run.main(["--config", str(config), "imagine", "a dog", "-o", str(tmp_path / "dog.png")]) == 1
    err = capsys.readouterr().err
    # The refusal says when a credit returns, as a terminal shows a time (no Discord `<t:…:R>` markup).
    assert "you have 0 of your 1 credits left" in err and "Next credit returns in " in err
    assert "<t:" not in err
    assert not (tmp_path / "dog.png").exists()
    assert rows(tmp_path / "cli.sqlite3", "SELECT state FROM ledger") == [("committed",)]


def test_missing_input_and_bad_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run.main(["--config", str(tmp_path / "none.toml"), "imagine", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert run.main(["bot"]) == 2
    assert "set DISCORD_TOKEN" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _in_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # any relative data/ path lands in the test's own folder


def test_db_migrate_and_backup(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'[database]\npath = "{tmp_path / "live.sqlite3"}"\n', encoding="utf-8")
    assert run.main(["--config", str(config), "db", "backup", str(tmp_path / "x.sqlite3")]) == 1
    assert "no database at" in capsys.readouterr().err
    assert run.main(["--config", str(config), "db", "migrate"]) == 0
    assert "schema version" in capsys.readouterr().out
    target = tmp_path / "backups" / "copy.sqlite3"
    assert run.main(["--config", str(config), "db", "backup", str(target)]) == 0
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
        assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)


def _no_model(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record any attempt to reach or start a worker (which is where a model would load)."""
    reached: list[str] = []

    def refuse(settings: object) -> NoReturn:
        reached.append("worker_for")
        raise AssertionError("a worker was reached for an argument that could be checked first")

    monkeypatch.setattr(run, "worker_for", refuse)
    return reached


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["imagine", "a cat", "--count", "1000"], "1 to 4 images per job here, not 1000"),
        (["imagine", "a cat", "--seed", "-1"], "seed must be between 0 and"),
        (["imagine", "a cat", "--style", "nope"], "no style called `nope`"),
        (["imagine", "\u200b \u2060"], "prompt is empty (nothing visible in it)"),
        (["imagine", "a cat", "--aspect", "5:1"], "`5:1` is not an aspect ratio"),
        (
            ["imagine", "a cat", "--lane", "relax", "--negative", "x" * 2000],
            "negative prompt is 2000 characters",
        ),
        (["imagine", "a cat", "-o", "/proc/x.png"], "cannot write /proc/x.png"),
        (["imagine", "a cat", "-o", "."], "it is a folder"),
        (["edit", "missing.png", "make it blue"], "cannot read missing.png: No such file or directory"),
        (["edit", "{png}", "   "], "instruction is empty"),
        (["edit", "{png}", "make it blue", "--strength", "7"], "Strength must be between 0.05 and 1.0"),
        # The bundled model edits by instruction: a strength would change nothing, so it is refused.
        (["edit", "{png}", "make it blue", "--strength", "0.3"], "Strength does not apply here"),
    ],
)
def test_an_invalid_argument_fails_at_once_before_any_model_loads(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    reached = _no_model(monkeypatch)
    config = write_config(tmp_path, None)
    png = tmp_path / "in.png"
    Image.new("RGB", (64, 64), "red").save(png)
    args = [str(png) if a == "{png}" else a for a in args]
    started = time.perf_counter()
    assert run.main(["--config", str(config), *args]) == 2
    elapsed = time.perf_counter() - started
    err = capsys.readouterr().err
    assert message in err and err.startswith("error: ") and "Traceback" not in err
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert reached == []
    assert not (tmp_path / "cli.sqlite3").exists()  # nothing opened, so nothing charged


def test_a_bad_log_level_is_a_usage_error_not_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        run.main(["--log-level", "LOUD", "imagine", "a cat"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --log-level: invalid choice: 'LOUD'" in err and "Traceback" not in err
    assert run.parse_args(["--log-level", "debug", "db", "migrate"]).log_level == "DEBUG"


def test_a_result_that_cannot_be_written_is_kept_and_the_command_says_where(
    tiny_models: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The output folder is fine when checked, then cannot take the file (as when it is removed or the disk
    # fills meanwhile): the job is paid for, so its image goes next to the database instead.
    monkeypatch.setattr(terminal, "check_output", lambda output, count: None)
    config = write_config(tmp_path, tiny_models)
    assert run.main(["--config", str(config), "imagine", "a cat", "-o", "/proc/x.png"]) == 1
    captured = capsys.readouterr()
    assert "cannot write /proc/x.png" in captured.err and "the result is kept at:" in captured.err
    (kept,) = captured.out.split()
    assert Path(kept).parent == tmp_path / "outputs"
    with Image.open(kept) as img:
        assert img.size == (64, 64)
    assert rows(tmp_path / "cli.sqlite3", "SELECT state FROM ledger") == [("committed",)]
    assert rows(tmp_path / "cli.sqlite3", "SELECT status, delivered_at IS NOT NULL FROM jobs") == [
        ("succeeded", 1)
    ]


def test_plain_renders_discord_markup_for_a_terminal() -> None:
    now = 1_000_000.0
    assert terminal.plain("returns <t:1000300:R>.", now).startswith("returns in 5 min (")
    assert terminal.plain("was <t:999990:R>", now).startswith("was 10 s ago (")
    assert terminal.plain("in <#42> or <@7>", now) == "in #42 or @7"


def cli(config: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(run.__file__).parent), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, run.__file__, "--config", str(config), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_data_paths_follow_the_config_file_not_the_working_folder_and_backup_says_it_once(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = home / "config.toml"
    config.write_text('[database]\npath = "data/brushfire.sqlite3"\n', encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd in (home, elsewhere):
        done = cli(config, "db", "migrate", cwd=cwd)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"{home / 'data' / 'brushfire.sqlite3'}: schema version")
    assert not (elsewhere / "data").exists()
    done = cli(config, "--log-level", "INFO", "db", "backup", "copy.sqlite3", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert (done.stdout + done.stderr).count("backed up") == 1
    assert (elsewhere / "copy.sqlite3").is_file()  # a path typed on the command line is the user's own


def test_json_logs_name_the_job_by_the_id_the_cli_prints(
    tiny_models: tuple[Path, Path], tmp_path: Path
) -> None:
    config = write_config(tmp_path, tiny_models)
    done = cli(
        config, "--log-level", "INFO", "--log-format", "json", "imagine", "a cat", "-o", "c.png", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    # Log lines may follow the progress bar's last `\r` frame on the same line.
    lines = [line[line.index('{"time"') :] for line in done.stderr.splitlines() if '{"time"' in line]
    records = [json.loads(line) for line in lines]
    assert records and all({"time", "level", "logger", "message"} <= r.keys() for r in records)
    (job_line,) = [line for line in done.stderr.splitlines() if line.startswith("job ")]
    job_id = job_line.split()[1].rstrip(":")
    finished = [r for r in records if r["logger"] == "inference.scheduler" and "succeeded" in r["message"]]
    assert finished and finished[0]["job_id"] == job_id and job_id in finished[0]["message"]


def test_the_output_files_name_picks_its_format(tiny_models: tuple[Path, Path], tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_models)
    for name, fmt in (("a.webp", "WEBP"), ("b.jpg", "JPEG"), ("c.JPEG", "JPEG")):
        assert run.main(["--config", str(config), "imagine", "a red circle", "-o", str(tmp_path / name)]) == 0
        with Image.open(tmp_path / name) as img:
            assert (
                img.format == fmt
                and read_metadata((tmp_path / name).read_bytes())["prompt"] == "a red circle"
            )
