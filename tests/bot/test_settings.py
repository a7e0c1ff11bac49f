"""Settings: TOML file, environment overrides with nested keys, the token from the environment only."""

from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.core.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_need_no_file() -> None:
    settings = load_settings(None, {})
    assert settings.resolved_worker_url == "http://127.0.0.1:8765"
    assert settings.discord_token is None
    assert {s.name for s in settings.styles} >= {"photo", "anime"}


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        """
worker_url = "http://gpu-box:9000"
[database]
path = "file.sqlite3"
[limits]
prompt_chars = 300
[discord]
dev_guild_id = 42
""",
    )
    monkeypatch.setenv("BRUSHFIRE_DATABASE__PATH", "env.sqlite3")
    monkeypatch.setenv("DISCORD_TOKEN", "abc.def")
    settings = load_settings(path, {})
    assert settings.database.path == Path("env.sqlite3")  # the environment wins
    assert settings.limits.prompt_chars == 300  # the file wins over defaults
    assert settings.discord.dev_guild_id == 42
    assert settings.resolved_worker_url == "http://gpu-box:9000"
    assert settings.discord_token is not None and settings.discord_token.get_secret_value() == "abc.def"
    assert "abc.def" not in repr(settings)


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_images_per_job = 2\n")
    assert load_settings(None, {"BRUSHFIRE_CONFIG": str(path)}).limits.max_images_per_job == 2


@pytest.mark.parametrize("text", ['discord_token = "x"', 'DISCORD_TOKEN = "x"', '[discord]\ntoken = "x"'])
def test_token_in_file_is_refused(tmp_path: Path, text: str) -> None:
    with pytest.raises(SettingsError, match="DISCORD_TOKEN environment variable"):
        load_settings(write(tmp_path, text), {})


def test_unknown_key_and_bad_value_are_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"limits\.prompt_chars"):
        load_settings(write(tmp_path, "[limits]\nprompt_chars = 0\n"), {})
    with pytest.raises(SettingsError, match="colour"):
        load_settings(write(tmp_path, 'colour = "red"\n'), {})


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "[limits\n"), {})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", {})


def test_styles_from_file_and_duplicates(tmp_path: Path) -> None:
    text = '[[styles]]\nname = "ink"\nprompt = "ink drawing of {prompt}"\n'
    assert [s.name for s in load_settings(write(tmp_path, text), {}).styles] == ["ink"]
    with pytest.raises(SettingsError, match="repeated: ink"):
        load_settings(write(tmp_path, text + text), {})


def test_example_config_documents_a_valid_configuration() -> None:
    settings = load_settings(ROOT / "config.example.toml", {})
    assert isinstance(settings, Settings)


def test_example_config_mentions_every_key() -> None:
    text = (ROOT / "config.example.toml").read_text()
    missing = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            if name == "discord_token":
                continue
            if (
                f"{name} =" not in text
                and f"[{prefix}{name}]" not in text
                and f"[[{prefix}{name}]]" not in text
            ):
                missing.append(prefix + name)
            sub = field.annotation
            if isinstance(sub, type) and hasattr(sub, "model_fields") and name not in ("styles", "aspects"):
                walk(sub, f"{prefix}{name}.")

    walk(Settings, "")
    assert not missing, f"config.example.toml does not document: {missing}"
