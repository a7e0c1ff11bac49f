"""config.example.toml is the configuration reference: it holds every setting, documents each, and IS the defaults.

Checked against the settings models themselves, so the reference cannot drift from the code: a new field
without an entry, an entry for a field that is gone, an example value the models refuse, a shown value that
differs from the default, an undocumented key, or an environment variable read in code but not listed in the
reference's header each fail here.
"""

from __future__ import annotations

import re
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bot.core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"
HEADER = re.compile(r"^(?P<commented>#\s?)?\[(?P<array>\[)?(?P<name>[a-z_.]+)\]\]?\s*$")
KEY = re.compile(r"^(?P<commented>#\s?)?(?P<key>[a-z_0-9]+)\s*=\s*\S")
# Tables whose keys mean "set by hand" when present, whatever their value: [engine.defaults] keys override
# the defaults the worker advertises for its model, so the reference shows them commented out.
BY_HAND_TABLES = ("engine.defaults.",)
RUN_LIMIT = 3  # at most this many settings may share one comment ("in bytes and pixels")
# Where the code reads environment variables: the Python runtime and the container entrypoint.
CODE = [
    ROOT / "run.py",
    *[p for d in ("bot", "cogs", "inference", "storage") for p in (ROOT / d).rglob("*.py")],
]
SHELL = [ROOT / "docker" / "entrypoint.sh"]


@dataclass(frozen=True)
class Entry:
    path: str  # "engine.defaults.steps", "styles[].name"
    commented: bool  # shown as `# key = value`
    in_commented_table: bool  # inside a commented-out `# [[table]]` example
    documented: bool
    line: int


def setting_fields(model: type[BaseModel], prefix: str = "") -> dict[str, FieldInfo]:
    """Every leaf setting of a model by dotted path; list-of-model fields as `name[].field`."""
    out: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        if field.exclude:  # the Discord token: never in a file
            continue
        ann = field.annotation
        nested = [
            a for a in (typing.get_args(ann) or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(setting_fields(ann, f"{prefix}{name}."))
        elif typing.get_origin(ann) is list and nested:
            out.update(setting_fields(nested[0], f"{prefix}{name}[]."))
        elif nested:  # an optional table (`X | None`, e.g. [engine.safety]): its keys are the settings
            out.update(setting_fields(nested[0], f"{prefix}{name}."))
        else:
            out[prefix + name] = field
    return out


def reference_entries(text: str) -> list[Entry]:
    """The settings the reference shows, with whether each is commented out and documented."""
    entries: list[Entry] = []
    table, table_commented = "", False
    seen_tables: set[str] = set()
    check_docs = True
    since_comment: int | None = None  # keys since the last plain comment line; None: no comment yet
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        header = HEADER.match(line)
        if header:
            table = header["name"] + ("[]" if header["array"] else "")
            # A sub-table of an array table ([engine.extra_models.defaults] after [[engine.extra_models]]).
            parent = next(
                (t for t in seen_tables if t.endswith("[]") and table.startswith(t[:-2] + ".")), None
            )
            if parent is not None:
                table = parent + table[len(parent) - 2 :]
            table_commented = bool(header["commented"])
            # Repeated array tables ([[styles]] x 6) are data: only the first one must be documented.
            check_docs = table not in seen_tables
            seen_tables.add(table)
            since_comment = None
            continue
        body = line[1:].strip() if table_commented and line.startswith("#") else line
        key = KEY.match(body if table_commented else line)
        if key:
            since_comment = None if since_comment is None else since_comment + 1
            documented = not check_docs or (since_comment is not None and since_comment <= RUN_LIMIT)
            path = f"{table}.{key['key']}" if table else key["key"]
            commented = table_commented or bool(key["commented"])
            entries.append(Entry(path, commented, table_commented, documented, number))
        elif line.startswith("#") and len(body.lstrip("#").strip()) > 0:
            since_comment = 0
        elif not line:
            since_comment = None
    return entries


def uncommented(text: str) -> str:
    """The reference with every commented-out setting and table switched on."""
    return re.sub(r"(?m)^#\s?(?=\[|[a-z_0-9]+\s*=\s*\S)", "", text)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("BRUSHFIRE_") or key == "DISCORD_TOKEN":
            monkeypatch.delenv(key)


def test_the_reference_is_the_defaults(clean_env: None) -> None:
    example = Settings(**tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    defaults = Settings()
    assert example.model_dump() == defaults.model_dump()
    # Nothing in the file counts as "set by hand" where the code cares (the bot keeps hand-set engine
    # defaults over the worker's).
    assert example.engine.defaults.model_fields_set == defaults.engine.defaults.model_fields_set


def test_every_setting_is_in_the_reference_and_nothing_else() -> None:
    shown = {e.path for e in reference_entries(EXAMPLE.read_text(encoding="utf-8"))}
    fields = setting_fields(Settings)
    assert sorted(set(fields) - shown) == [], "settings missing from config.example.toml"
    assert sorted(shown - set(fields)) == [], "config.example.toml shows settings the models do not have"


def test_every_shown_setting_is_documented() -> None:
    undocumented = [
        f"line {e.line}: {e.path}"
        for e in reference_entries(EXAMPLE.read_text(encoding="utf-8"))
        if not e.documented
    ]
    assert undocumented == []


def test_commented_settings_are_the_unset_ones_and_their_examples_are_valid(clean_env: None) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    fields = setting_fields(Settings)
    for entry in reference_entries(text):
        if entry.commented and not entry.in_commented_table and not entry.path.startswith(BY_HAND_TABLES):
            assert fields[entry.path].get_default(call_default_factory=True) is None, (
                f"line {entry.line}: {entry.path} is commented out but has a default; show the default instead"
            )
    # Every example value, switched on together, is a valid configuration.
    Settings(**tomllib.loads(uncommented(text)))


def test_the_reference_parser_sees_what_a_reader_sees() -> None:
    sample = (
        "[a]\n# Doc.\nx = 1\ny = 2\n\nz = 3\n# [[a.items]]\n# # Doc of n.\n# n = 'v'\n"
        "[[b]]\n# Doc.\nk = 1\n[[b]]\nk = 2\n"
    )
    entries = {(e.path, e.line): e for e in reference_entries(sample)}
    assert entries[("a.x", 3)].documented and entries[("a.y", 4)].documented
    assert not entries[("a.z", 6)].documented
    assert entries[("a.items[].n", 9)].commented and entries[("a.items[].n", 9)].in_commented_table
    assert entries[("b[].k", 14)].documented  # a repeated array table is data
    assert "[[a.items]]\n# # Doc of n.\nn = 'v'" in uncommented(sample)


def environment_variables_read_by_code() -> set[str]:
    names: set[str] = set()
    py = re.compile(r"""(?:environ(?:\.get)?\s*[\[(]\s*|getenv\(\s*|_ENV\s*=\s*)["']([A-Z][A-Z0-9_]+)["']""")
    for path in CODE:
        names |= set(py.findall(path.read_text(encoding="utf-8")))
    for path in SHELL:
        names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", path.read_text(encoding="utf-8")))
    return names


def test_every_environment_variable_the_code_reads_is_in_the_reference() -> None:
    header = EXAMPLE.read_text(encoding="utf-8").split("\n[", 1)[0]
    names = environment_variables_read_by_code()
    assert {"BRUSHFIRE_CONFIG", "DISCORD_TOKEN"} <= names  # the scan finds the ones we know of
    # BRUSHFIRE_<KEY> variables of settings are covered by the header's rule; the rest must be named.
    settings_vars = {
        "BRUSHFIRE_" + p.replace("[]", "").replace(".", "__").upper() for p in setting_fields(Settings)
    }
    missing = sorted(n for n in names if n not in header and n not in settings_vars)
    assert missing == []


def test_a_preset_is_chosen_by_name_and_keys_beside_it_win(clean_env: None) -> None:
    from inference.presets import get_preset

    chosen = Settings(engine={"preset": "sdxl-lightning", "device": "cuda"}).engine
    preset = get_preset("sdxl-lightning")
    assert (chosen.model, chosen.scheduler, chosen.timestep_spacing) == (
        "stabilityai/stable-diffusion-xl-base-1.0",
        "EulerDiscreteScheduler",
        "trailing",
    )
    assert chosen.defaults == preset.defaults and chosen.device == "cuda"
    assert [a.name for a in chosen.adapters] == ["sdxl-lightning-4step"] and chosen.adapters[0].fuse
    # The engine section's own keys win, down to one default.
    mine = Settings(engine={"preset": "sd-turbo", "model": "/srv/my-turbo", "defaults": {"steps": 2}}).engine
    assert mine.model == "/srv/my-turbo" and mine.defaults.steps == 2 and mine.defaults.guidance == 0.0
    with pytest.raises(ValueError, match="unknown preset 'sdxl-fast'; known: sd-turbo, sdxl-turbo"):
        Settings(engine={"preset": "sdxl-fast"})


def test_the_readme_model_examples_are_valid_and_the_sdxl_turbo_one_is_scheduled_as_it_needs(
    clean_env: None,
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", readme, flags=re.S)
    engines = [Settings(**tomllib.loads(block)).engine for block in blocks]
    turbo = [e for e in engines if e.model == "stabilityai/sdxl-turbo"]
    assert len(turbo) >= 2  # the preset, and the same written out
    assert all(e.timestep_spacing == "trailing" and e.defaults.steps == 1 for e in turbo)
    assert all(e.model_dump(exclude={"preset"}) == turbo[0].model_dump(exclude={"preset"}) for e in turbo)


def section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_licence_and_the_readme_say_what_an_operator_needs() -> None:
    licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License") and "brushfire contributors" in licence
    assert 'license = { text = "MIT" }' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # The Quick start stays two commands, each one line.
    quick = re.findall(r"```bash\n(.*?)```", section(readme, "Quick start"), flags=re.S)
    assert len(quick) == 2 and all(block.count("\n") == 1 for block in quick)
    # Running the bot on a GPU box names the torch build for CUDA and how to choose it by driver.
    run_bot = section(readme, "Run the real bot")
    assert re.search(
        r"pip install torch==[\d.]+ --index-url https://download\.pytorch\.org/whl/cu\d+", run_bot
    )
    assert "nvidia-smi" in run_bot and "driver" in run_bot
