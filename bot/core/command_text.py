"""What brushfire's job commands and their options are called and say: one source for Discord and the CLI.

`/imagine` and `/edit` take their descriptions from here (the command sync sends them, translated, as
Discord's own help), `/help` lists them in each member's language, and `run.py imagine|edit --help` prints
the same English words. Discord caps each description at 100 characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CommandText:
    name: str
    description: str
    options: Mapping[str, str]  # option name (as Discord and the CLI's long flag spell it) -> description

    def __post_init__(self) -> None:
        for text in (self.description, *self.options.values()):
            if not 1 <= len(text) <= 100:
                raise ValueError(f"a command description must be 1-100 characters: {text!r}")


IMAGINE = CommandText(
    name="imagine",
    description="Make images from a text prompt",
    options={
        "prompt": "What to draw",
        "style": "A style preset (start typing to search)",
        "negative": "What to keep out of the picture",
        "aspect": "Shape of the image",
        "count": "How many images (each costs credits)",
        "seed": "A number that makes the result repeatable",
        "lane": "fast uses credits; relax is slower and free where the server allows it",
        "steps": "Denoising steps: more is slower and finer, and costs more credits",
        "guidance": "How closely to follow the prompt (0-30; the model's own when left out)",
        "width": "Exact width in pixels, a multiple of 8 (with height, instead of an aspect)",
        "height": "Exact height in pixels, a multiple of 8 (with width; more pixels cost more)",
        "sampler": "The sampler that draws the image (the model's own when left out)",
        "model": "Which of the worker's models draws it (the main one when left out)",
    },
)

EDIT = CommandText(
    name="edit",
    description="Change an image by instruction",
    options={
        "image": "A PNG, JPEG or WebP image",
        "instruction": "What to change, e.g. 'make it snowy'",
        "strength": "How much to change (0.05-1.0; higher follows the instruction more)",
        "seed": "A number that makes the result repeatable",
        "lane": "fast uses credits; relax is slower and free where the server allows it",
    },
)

HELP = CommandText(
    name="help",
    description="What each brushfire command does",
    options={"command": "A command whose options to show"},
)
