"""What the command line shows and writes for `run.py imagine/edit`: the progress bar, Discord-formatted
messages as plain text, the size a job comes out at, and the output files (checked before a job starts).
Discord-free and torch-free, so the checks run before any model loads."""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import TextIO

from bot.core.plans import JobPlan
from bot.core.progress import ProgressState
from bot.core.records import OutputFormat


class ArgumentError(Exception):
    """An argument of `run.py imagine/edit` that cannot work: reported before anything loads (exit 2)."""


class TerminalBar:
    """A one-line progress bar on a terminal stream (the CLI's progress display)."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self._stream = stream
        self._width = width

    async def show(self, state: ProgressState) -> None:
        done = state.step / state.total if state.total else 0.0
        filled = int(done * self._width)
        bar = "#" * filled + "." * (self._width - filled)
        self._stream.write(f"\r[{bar}] {state.describe()!s:<48}")  # the command line speaks English
        self._stream.flush()

    def finish(self) -> None:
        self._stream.write("\n")
        self._stream.flush()


def check_output(output: Path, count: int) -> None:
    """The output file(s) can be created: the folder exists (or can be made) and takes a file."""
    if output.is_dir():
        raise ArgumentError(
            f"cannot write {output}: it is a folder; give a file name such as {output / 'out.png'}"
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output.parent, prefix=".brushfire-", suffix=".png"):
            pass
    except OSError as exc:
        raise ArgumentError(f"cannot write {output}: {exc.strerror or exc}") from None
    for path in output_paths(output, count):
        if path.exists() and not os.access(path, os.W_OK):
            raise ArgumentError(f"cannot write {path}: it exists and is read-only")


def read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ArgumentError(f"cannot read {path}: {exc.strerror or exc}") from None


def size_note(plan: JobPlan, native: tuple[int, int], aspect: str | None) -> str:
    """`, 64x64` for the job line, and a plain word when the model's size cannot honour --aspect."""
    if plan.width is None or plan.height is None:
        return f", {native[0]}x{native[1]} (the model's native size)" if plan.kind == "generate" else ""
    size = f", {plan.width}x{plan.height}"
    if aspect is None:
        return size
    w, h = (int(side) for side in aspect.strip().split(":"))
    if abs(plan.width / plan.height - w / h) <= 0.05 * (w / h):
        return size
    return (
        f"{size}\nnote: --aspect {aspect.strip()} comes out {plan.width}x{plan.height} on this model: sizes keep "
        f"its native {native[0]}x{native[1]} pixel count in steps of 64, which is too small for that shape"
    )


def output_paths(output: Path, count: int) -> list[Path]:
    """`out.png` for one image, `out-1.png`, `out-2.png`… for several."""
    return [output] if count == 1 else [output.with_stem(f"{output.stem}-{i + 1}") for i in range(count)]


def format_for(output: Path) -> OutputFormat:
    """The format an output file's name asks for: `.webp`, `.jpg`/`.jpeg`, or PNG for anything else."""
    return _FORMATS_BY_SUFFIX.get(output.suffix.lower(), "png")


_FORMATS_BY_SUFFIX: dict[str, OutputFormat] = {".webp": "webp", ".jpg": "jpeg", ".jpeg": "jpeg"}


def write_images(output: Path, images: list[bytes]) -> list[Path]:
    output.parent.mkdir(parents=True, exist_ok=True)
    paths = output_paths(output, len(images))
    for path, image in zip(paths, images, strict=True):
        path.write_bytes(image)
    return paths


_DISCORD_TIME = re.compile(r"<t:(-?\d+)(?::([tTdDfFR]))?>")
_DISCORD_MENTION = re.compile(r"<(#|@&|@!?)(\d+)>")


def plain(text: str, now: float | None = None) -> str:
    """A message written for Discord, as a terminal shows it: `<t:…:R>` as "in 5 min (14:32)", a
    channel or member mention as its id."""
    now = time.time() if now is None else now

    def when(match: re.Match[str]) -> str:
        at = int(match[1])
        clock = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(at))
        return f"{_relative(at - now)} ({clock})" if match[2] in (None, "R") else clock

    text = _DISCORD_TIME.sub(when, text)
    return _DISCORD_MENTION.sub(lambda m: f"{'#' if m[1] == '#' else '@'}{m[2]}", text)


def _relative(seconds: float) -> str:
    """`in 5 min`, `in 2 h 5 min`, `in 40 s`, `3 min ago`."""
    span = abs(round(seconds))
    if span < 60:
        words = f"{span} s"
    elif span < 3600:
        words = f"{round(span / 60)} min"
    elif span < 86400:
        words = f"{span // 3600} h {span % 3600 // 60} min"
    else:
        words = f"{span // 86400} d {span % 86400 // 3600} h"
    return f"in {words}" if seconds >= 0 else f"{words} ago"
