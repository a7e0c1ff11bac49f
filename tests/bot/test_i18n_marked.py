"""No text a member reads is left out of the catalogue: every literal that reaches Discord or a user-facing
error in bot/ and cogs/ goes through `_()`, `_.ngettext()` or `N_()`.

The scan reads the source (ast): the arguments of the calls that put text in front of members (messages,
embeds, buttons, modals, select options, threads) and of every error class whose message is written for
members. A literal there with words in it, or an f-string used as a template, fails the test with its place.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bot
import cogs
from bot.checks import AdminOnly
from bot.core.i18n import LocalisedError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("bot", "cogs")
MARKERS = {"_", "N_", "ngettext", "message", "Message"}  # calls whose result is (or becomes) translated text
WORDS = re.compile(r"[A-Za-z]{2}")  # a literal with a word in it; "V", "#", " — " or "★" are not words

# Calls that show text to members, and which of their arguments carry it (position 0 or keywords).
SINKS: dict[str, tuple[bool, frozenset[str]]] = {
    "send_message": (True, frozenset({"content"})),
    "send": (True, frozenset({"content"})),
    "edit_original_response": (False, frozenset({"content"})),
    "edit_message": (False, frozenset({"content"})),
    "edit": (False, frozenset({"content"})),
    "create_thread": (False, frozenset({"name", "content"})),
    "Embed": (False, frozenset({"title", "description"})),
    "add_field": (False, frozenset({"name", "value"})),
    "set_footer": (False, frozenset({"text"})),
    "set_author": (False, frozenset({"name"})),
    "Button": (False, frozenset({"label"})),
    "button": (False, frozenset({"label"})),
    "TextInput": (False, frozenset({"label", "placeholder", "default"})),
    "SelectOption": (True, frozenset({"label", "description"})),
    "Select": (False, frozenset({"placeholder"})),
    "Modal": (False, frozenset({"title"})),
    "__init__": (False, frozenset({"title"})),  # a Modal subclass's super().__init__(title=...)
}
ASSIGNED = {"description", "title"}  # embed.description = ... / embed.title = ...


@dataclass(frozen=True)
class Unmarked:
    where: str
    text: str


def error_classes() -> set[str]:
    """Names of every error whose message members read (imported, so subclasses anywhere count)."""
    for package in (bot, cogs):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            importlib.import_module(module.name)
    found: set[str] = {AdminOnly.__name__}
    todo: list[type] = [LocalisedError]
    while todo:
        cls = todo.pop()
        found.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return found


def _name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _literal_text(node: ast.expr) -> str | None:
    """The words of a literal (or f-string's fixed parts) that nobody translated, else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if WORDS.search(node.value) else None
    if isinstance(node, ast.JoinedStr):
        fixed = "".join(
            v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)
        )
        return fixed if WORDS.search(fixed) else None
    if isinstance(node, ast.BinOp):  # "🏆 " + _("...")
        return _literal_text(node.left) or _literal_text(node.right)
    if isinstance(node, ast.IfExp):
        return _literal_text(node.body) or _literal_text(node.orelse)
    if isinstance(node, ast.Subscript):  # "..."[:256]
        return _literal_text(node.value)
    return None  # a call (marked or not, judged where it is made), a name, an attribute


def _shown_arguments(call: ast.Call, name: str, errors: set[str]) -> Iterator[ast.expr]:
    if name in errors or name == "Message":
        yield from call.args[:1]  # the template; its fields are data
        return
    positional, keywords = SINKS[name]
    if positional:
        yield from call.args[:1]
    yield from (k.value for k in call.keywords if k.arg in keywords)


def scan(source: str, filename: str, errors: set[str]) -> tuple[list[Unmarked], int]:
    """Unmarked texts in one module, and how many places that show text it checked."""
    problems: list[Unmarked] = []
    checked = 0
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name in {"_", "N_", "ngettext"} and node.args and isinstance(node.args[0], ast.JoinedStr):
                problems.append(Unmarked(f"{filename}:{node.lineno}", "f-string template: use {fields}"))
            if name is None or (name not in SINKS and name not in errors and name != "Message"):
                continue
            for argument in _shown_arguments(node, name, errors):
                checked += 1
                text = _literal_text(argument)
                if text is not None:
                    problems.append(Unmarked(f"{filename}:{argument.lineno}", text))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and target.attr in ASSIGNED:
                    checked += 1
                    text = _literal_text(node.value)
                    if text is not None:
                        problems.append(Unmarked(f"{filename}:{node.lineno}", text))
    return sorted(problems, key=lambda p: int(p.where.rsplit(":", 1)[1])), checked


def test_every_text_members_read_is_marked_for_translation() -> None:
    errors = error_classes()
    assert {"BrushfireError", "ChallengeRefused", "QuotaExceeded", "_Lost", "AdminOnly"} <= errors
    problems: list[Unmarked] = []
    checked = 0
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found, count = scan(path.read_text(), str(path.relative_to(ROOT)), errors)
            problems += found
            checked += count
    assert checked > 150, f"the scan saw only {checked} places: it is no longer looking at the code"
    assert problems == [], (
        "mark these with _() or N_() and run `python -m tools.i18n extract`:\n"
        + "\n".join(f"  {p.where}: {p.text!r}" for p in problems)
    )


def test_the_scan_finds_what_it_is_meant_to_find() -> None:
    errors = {"InvalidInput"}
    source = """
async def reply(interaction, _, n):
    await interaction.response.send_message("Saved.", ephemeral=True)
    await interaction.followup.send(f"You have {n} credits left")
    embed = discord.Embed(title="🏆 " + _("Results"), description=f"**{n}**")
    embed.add_field(name=_("Seed"), value=str(n))
    embed.description = "No entries" if n else _("Some")
    button("edit", "x", label=_("Edit"))
    raise InvalidInput(f"The seed must be below {n}.")
    raise InvalidInput(N_("The seed must be below {max}."), max=n)
    _(f"Hello {n}")
"""
    problems, checked = scan(source, "example.py", errors)
    assert [(p.where, p.text) for p in problems] == [
        ("example.py:3", "Saved."),
        ("example.py:4", "You have  credits left"),
        ("example.py:7", "No entries"),
        ("example.py:9", "The seed must be below ."),
        ("example.py:11", "f-string template: use {fields}"),
    ]
    assert checked == 10
