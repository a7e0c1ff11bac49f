"""`run.py imagine` and `run.py edit`: the local user's path through job service, quotas, SQLite and worker."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import run
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


def test_several_images_are_numbered(tiny_models: tuple[Path, Path], tmp_path: Path) -> None:
    config = write_config(tmp_path, tiny_models)
    out = tmp_path / "many.png"
    assert run.main(["--config", str(config), "imagine", "dots", "-o", str(out), "--count", "2"]) == 0
    assert (tmp_path / "many-1.png").exists() and (tmp_path / "many-2.png").exists()


def test_refusals_charge_nothing(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, tiny_models, limit=1)
    out = tmp_path / "x.png"
    assert run.main(["--config", str(config), "imagine", "   ", "-o", str(out)]) == 1
    assert "prompt is empty" in capsys.readouterr().err
    assert run.main(["--config", str(config), "imagine", "a cat", "--style", "nope", "-o", str(out)]) == 1
    assert "no style called" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image at all")
    assert run.main(["--config", str(config), "edit", str(broken), "fix it", "-o", str(out)]) == 1
    assert "not a PNG, JPEG or WebP" in capsys.readouterr().err
    assert not out.exists()
    assert rows(tmp_path / "cli.sqlite3", "SELECT state FROM ledger") == []

    assert run.main(["--config", str(config), "imagine", "a cat", "-o", str(out)]) == 0
    assert run.main(["--config", str(config), "imagine", "a dog", "-o", str(tmp_path / "dog.png")]) == 1
    err = capsys.readouterr().err
    assert (
        "you have 0 of your 1 credits left" in err and "<t:" in err
    )  # the refusal says when a credit returns
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
