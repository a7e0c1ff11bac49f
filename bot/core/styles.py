"""Style presets (a prompt template, a negative prompt and defaults) and aspect ratios mapped to sizes."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.core.errors import InvalidInput, UnknownStyle
from bot.core.i18n import N_
from storage.styles import GuildStyleRecord

log = logging.getLogger(__name__)

AUTOCOMPLETE_MAX = 25  # Discord's cap on autocomplete choices
SIZE_MULTIPLE = 64  # UNets and VAEs are happiest on multiples of 64


class StylePreset(BaseModel):
    """A named look: `prompt` is a template with `{prompt}` where the user's words go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=50, pattern=r"^[a-z0-9][a-z0-9 _\-]*$")
    description: str = Field(default="", max_length=100)
    prompt: str = "{prompt}"
    negative: str = ""
    steps: int | None = Field(default=None, ge=1, le=150)
    guidance: float | None = Field(default=None, ge=0.0, le=30.0)
    aspect: str | None = Field(default=None, pattern=r"^\d{1,2}:\d{1,2}$")  # the default shape
    # A LoRA adapter the worker lists in `engine.adapters` (by name), switched on for this style's jobs.
    adapter: str | None = None
    adapter_scale: float = Field(default=1.0, ge=0.0, le=2.0)

    @field_validator("prompt")
    @classmethod
    def _has_slot(cls, v: str) -> str:
        if v.count("{prompt}") != 1:
            raise ValueError("a style's prompt template must contain {prompt} exactly once")
        return v

    @classmethod
    def from_record(cls, record: GuildStyleRecord) -> StylePreset:
        return cls(
            name=record.name,
            description=record.description,
            prompt=record.prompt,
            negative=record.negative,
            steps=record.steps,
            guidance=record.guidance,
            aspect=record.aspect,
            adapter=record.adapter,
            adapter_scale=record.adapter_scale,
        )

    def apply(self, prompt: str, negative: str) -> StyledPrompt:
        """The prompt and negative prompt the model sees for the user's words under this style."""
        styled = self.prompt.replace("{prompt}", prompt.strip())
        negatives = [n for n in (self.negative.strip(), negative.strip()) if n]
        return StyledPrompt(prompt=styled, negative=", ".join(negatives))


@dataclass(frozen=True, slots=True)
class StyledPrompt:
    prompt: str
    negative: str


class Aspect(BaseModel):
    """An aspect ratio offered as a fixed choice, e.g. `16:9`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^\d{1,2}:\d{1,2}$")
    label: str = Field(default="", max_length=100)

    @property
    def ratio(self) -> float:
        w, h = self.name.split(":")
        return int(w) / int(h)


@dataclass(frozen=True, slots=True)
class Size:
    width: int
    height: int


def size_for(aspect: Aspect, base_width: int, base_height: int) -> Size:
    """A model-friendly size with about the model's native pixel count at this aspect ratio.

    Keeping the pixel count near the native one keeps quality (and cost) steady across aspects;
    rounding to multiples of 64 keeps the sizes to a few buckets the worker can batch together.
    """
    area = base_width * base_height
    width = math.sqrt(area * aspect.ratio)
    height = width / aspect.ratio
    return Size(_round_side(width), _round_side(height))


def _round_side(v: float) -> int:
    return max(SIZE_MULTIPLE, round(v / SIZE_MULTIPLE) * SIZE_MULTIPLE)


DEFAULT_STYLES: tuple[StylePreset, ...] = (
    StylePreset(name="none", description="Your prompt as written"),
    StylePreset(
        name="photo",
        description="Photograph, natural light, sharp focus",
        prompt="a professional photograph of {prompt}, natural light, sharp focus, 35mm",
        negative="painting, drawing, illustration, cartoon, blurry",
    ),
    StylePreset(
        name="anime",
        description="Clean anime illustration",
        prompt="anime illustration of {prompt}, clean lines, vibrant colors",
        negative="photo, realistic, 3d render",
    ),
    StylePreset(
        name="watercolor",
        description="Soft watercolor painting",
        prompt="a watercolor painting of {prompt}, soft washes, paper texture",
        negative="photo, 3d render, harsh lines",
    ),
    StylePreset(
        name="pixel-art",
        description="Retro 16-bit pixel art",
        prompt="pixel art of {prompt}, 16-bit, limited palette",
        negative="blurry, photo, smooth gradients",
    ),
    StylePreset(
        name="cinematic",
        description="Film still, dramatic lighting",
        prompt="cinematic film still of {prompt}, dramatic lighting, shallow depth of field",
        negative="cartoon, flat lighting",
    ),
)

DEFAULT_ASPECTS: tuple[Aspect, ...] = (
    Aspect(name="1:1", label="Square"),
    Aspect(name="4:3", label="Landscape 4:3"),
    Aspect(name="3:4", label="Portrait 3:4"),
    Aspect(name="16:9", label="Widescreen 16:9"),
    Aspect(name="9:16", label="Tall 9:16"),
    Aspect(name="3:2", label="Photo 3:2"),
    Aspect(name="2:3", label="Photo 2:3"),
)


class StyleBook:
    """The presets and aspects from settings (plus, for one guild, that guild's own presets) by name."""

    def __init__(
        self, styles: list[StylePreset], aspects: list[Aspect], guild_styles: list[StylePreset] | None = None
    ) -> None:
        self._styles = {s.name: s for s in styles}
        self.guild_names = frozenset(s.name for s in guild_styles or () if s.name not in self._styles)
        # A configured preset wins over a guild one of the same name (`/style add` refuses those anyway).
        self._styles.update({s.name: s for s in guild_styles or () if s.name in self.guild_names})
        self._aspects = {a.name: a for a in aspects}

    def with_guild(self, guild_styles: list[StylePreset]) -> StyleBook:
        """This book plus one guild's presets."""
        configured = [s for s in self._styles.values() if s.name not in self.guild_names]
        return StyleBook(configured, list(self._aspects.values()), guild_styles)

    @property
    def styles(self) -> list[StylePreset]:
        return list(self._styles.values())

    @property
    def aspects(self) -> list[Aspect]:
        return list(self._aspects.values())

    def style(self, name: str | None) -> StylePreset | None:
        """The preset by name (case-insensitive); None for no style; UnknownStyle for a wrong name."""
        if name is None or not name.strip():
            return None
        found = self._styles.get(name.strip().lower())
        if found is None:
            known = ", ".join(sorted(self._styles)[:10])
            raise UnknownStyle(
                N_("There is no style called `{name}`. Try one of: {known}."), name=name[:50], known=known
            )
        return found

    def aspect(self, name: str | None) -> Aspect | None:
        if name is None:
            return None
        found = self._aspects.get(name.strip())
        if found is None:
            known = ", ".join(self._aspects)
            raise InvalidInput(
                N_("`{name}` is not an aspect ratio brushfire offers ({known})."), name=name[:20], known=known
            )
        return found

    def search(self, current: str) -> list[StylePreset]:
        """Presets for autocomplete: names starting with the text first, then names containing it."""
        text = current.strip().lower()
        starts = [s for s in self._styles.values() if s.name.startswith(text)]
        contains = [s for s in self._styles.values() if text in s.name and s not in starts]
        described = [
            s
            for s in self._styles.values()
            if text and text in s.description.lower() and s not in starts and s not in contains
        ]
        return (starts + contains + described)[:AUTOCOMPLETE_MAX]
