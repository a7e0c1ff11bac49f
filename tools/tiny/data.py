"""Procedural training data for the tiny model: 64x64 scenes of coloured shapes, their captions and edits.

Everything is drawn from a small grammar and a numpy random generator, so a seed fixes every picture and
every caption, and nothing is downloaded. A `Scene` is the ground truth; `render` draws it anti-aliased
(at 4x, then box-downsampled), `caption` describes it, `parse_caption` reads a caption back into a
`CaptionSpec`, and `sample_edit` makes (before, instruction, after) triples for the edit model.
`caption` writes the one canonical form (the evaluation's fixed set); training phrases each scene and edit
afresh in many ways (tools/tiny/phrasing.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from PIL import Image, ImageDraw

log = logging.getLogger(__name__)

SIZE = 64
SUPERSAMPLE = 4

# Far apart in RGB (every pair at least ~110 apart) so a blurry decoder still lands on the right name.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 20, 30),
    "orange": (255, 120, 0),
    "yellow": (255, 235, 0),
    "green": (20, 160, 40),
    "blue": (20, 60, 230),
    "purple": (130, 30, 190),
    "pink": (255, 130, 200),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "grey": (128, 128, 128),
    "brown": (120, 70, 20),
    "cyan": (0, 210, 230),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
COLOUR_SYNONYMS = {"gray": "grey"}
# A shape on a background closer than this would be hard to see, for the model and the judge alike.
MIN_CONTRAST = 150.0

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "ring", "diamond", "cross")
PLURALS = {shape: shape + ("es" if shape.endswith("s") else "s") for shape in SHAPES}

SIZES: tuple[str, ...] = ("small", "large")
SIZE_SYNONYMS = {"big": "large"}
# Radius as a fraction of the picture: one shape alone, or several sharing the picture.
# Scene mix: one shape at a named place (what most prompts ask for, and what the judge can check), two or
# three alike, or two different shapes (the rest).
SINGLE_SHARE = 0.8
ALIKE_SHARE = 0.12
RADIUS_SINGLE = {"small": 0.14, "large": 0.26}
RADIUS_MULTI = {"small": 0.11, "large": 0.16}

POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.30, 0.50),
    "right": (0.70, 0.50),
    "top": (0.50, 0.30),
    "bottom": (0.50, 0.70),
    "centre": (0.50, 0.50),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
POSITION_SYNONYMS = {"center": "centre", "middle": "centre"}
# Training scenes put a single shape in the centre more often than elsewhere: a prompt that names no place
# ("a red circle on a white background", the commonest way to ask) means the centre.
POSITION_WEIGHTS = {"left": 0.16, "right": 0.16, "top": 0.16, "bottom": 0.16, "centre": 0.36}

COUNT_WORDS = {1: "a", 2: "two", 3: "three"}
COUNT_PARSE = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}

# The words captions and instructions may use; all are in inference/tiny/make_tokenizer.py's WORDS.
VOCABULARY: frozenset[str] = frozenset(
    [
        *SHAPES,
        *COLOURS,
        *COLOUR_SYNONYMS,
        *SIZES,
        *SIZE_SYNONYMS,
        *POSITIONS,
        *POSITION_SYNONYMS,
        *[
            "background",
            "on",
            "a",
            "an",
            "the",
            "of",
            "and",
            "in",
            "one",
            "two",
            "three",
            "make",
            "it",
            "turn",
            "change",
            "move",
            "to",
            "add",
            "remove",
        ],
    ]
)


class EditKind(StrEnum):
    """What an edit instruction changes."""

    RECOLOUR = "recolour"
    BACKGROUND = "background"
    MOVE = "move"
    RESIZE = "resize"
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class Shape:
    """One drawn shape: centre (x, y) and radius are fractions of the picture side."""

    kind: str
    colour: str
    size: str
    x: float
    y: float
    radius: float


@dataclass(frozen=True)
class Scene:
    """The ground truth of one picture. `position` is named only for a scene with a single shape."""

    background: str
    shapes: tuple[Shape, ...]
    position: str | None = None


@dataclass(frozen=True)
class GroupSpec:
    """One phrase of a caption, e.g. "two small red stars"."""

    count: int
    size: str | None
    colour: str | None
    kind: str


@dataclass(frozen=True)
class CaptionSpec:
    """What a caption asks for; None where it does not say."""

    background: str | None
    groups: tuple[GroupSpec, ...]
    position: str | None = None


@dataclass(frozen=True)
class EditSpec:
    """What an edit instruction asks for: the kind of change and its target word (colour, place, size, shape)."""

    kind: EditKind
    value: str
    colour: str | None = None


@dataclass(frozen=True)
class EditTriple:
    """A training example for the edit model: the picture before, the instruction, the picture after."""

    before: Scene
    instruction: str
    after: Scene
    kind: EditKind
    # What the instruction asks, so it can be phrased afresh every time (inference/tiny/phrasing.py).
    spec: EditSpec | None = None


class CaptionError(ValueError):
    """A caption or instruction that the grammar cannot read."""


# ---------------------------------------------------------------- geometry and drawing


def colour_distance(a: str, b: str) -> float:
    return float(np.linalg.norm(np.subtract(PALETTE[a], PALETTE[b], dtype=float)))


def contrasting(colour: str) -> tuple[str, ...]:
    """Colours that stand out on `colour` (and so may be drawn on it, or be its background)."""
    return tuple(c for c in COLOURS if colour_distance(c, colour) >= MIN_CONTRAST)


def _regular(
    n: int, outer: float, inner: float | None, phase: float = -math.pi / 2
) -> list[tuple[float, float]]:
    """Vertices of a regular polygon (inner=None) or a star, first point up, in unit coordinates."""
    points = []
    steps = n if inner is None else 2 * n
    for i in range(steps):
        r = outer if inner is None or i % 2 == 0 else inner
        a = phase + 2 * math.pi * i / steps
        points.append((r * math.cos(a), r * math.sin(a)))
    return points


def _heart() -> list[tuple[float, float]]:
    ts = np.linspace(0, 2 * math.pi, 80, endpoint=False)
    xs = 16 * np.sin(ts) ** 3
    ys = -(13 * np.cos(ts) - 5 * np.cos(2 * ts) - 2 * np.cos(3 * ts) - np.cos(4 * ts))
    ys = ys - (ys.max() + ys.min()) / 2
    scale = max(np.abs(xs).max(), np.abs(ys).max())
    return [(float(x / scale), float(y / scale)) for x, y in zip(xs, ys, strict=True)]


def _centred_triangle() -> list[tuple[float, float]]:
    # Shifted down so the bounding box, not the centroid, sits on the centre, like the other shapes.
    points = _regular(3, 1.15, None)
    top, bottom = min(p[1] for p in points), max(p[1] for p in points)
    shift = -(top + bottom) / 2
    return [(x, y + shift) for x, y in points]


def _cross(arm: float = 0.34) -> list[tuple[float, float]]:
    a, e = arm, 0.95
    return [
        (-a, -e),
        (a, -e),
        (a, -a),
        (e, -a),
        (e, a),
        (a, a),
        (a, e),
        (-a, e),
        (-a, a),
        (-e, a),
        (-e, -a),
        (-a, -a),
    ]


def _star() -> list[tuple[float, float]]:
    points = _regular(5, 1.05, 0.45)
    top, bottom = min(p[1] for p in points), max(p[1] for p in points)
    shift = -(top + bottom) / 2
    return [(x, y + shift) for x, y in points]


POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)],
    "triangle": _centred_triangle(),
    "star": _star(),
    "heart": _heart(),
    "diamond": [(0.0, -1.0), (0.72, 0.0), (0.0, 1.0), (-0.72, 0.0)],
    "cross": _cross(),
}
RING_INNER = 0.55


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape, background: str) -> None:
    side = SIZE * SUPERSAMPLE
    cx, cy, r = shape.x * side, shape.y * side, shape.radius * side
    fill = PALETTE[shape.colour]
    if shape.kind in ("circle", "ring"):
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        if shape.kind == "ring":
            ri = r * RING_INNER
            draw.ellipse((cx - ri, cy - ri, cx + ri, cy + ri), fill=PALETTE[background])
        return
    draw.polygon([(cx + x * r, cy + y * r) for x, y in POLYGONS[shape.kind]], fill=fill)


def render(scene: Scene) -> Image.Image:
    """Draw the scene as a 64x64 RGB picture, anti-aliased by drawing at 4x and box-downsampling."""
    side = SIZE * SUPERSAMPLE
    image = Image.new("RGB", (side, side), PALETTE[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        _draw_shape(draw, shape, scene.background)
    return image.resize((SIZE, SIZE), Image.Resampling.BOX)


# ---------------------------------------------------------------- captions


def _groups(scene: Scene) -> list[GroupSpec]:
    """Shapes that share kind, colour and size, in the order they first appear."""
    counts: dict[tuple[str, str, str], int] = {}
    for s in scene.shapes:
        key = (s.kind, s.colour, s.size)
        counts[key] = counts.get(key, 0) + 1
    return [
        GroupSpec(count=n, size=size, colour=colour, kind=kind) for (kind, colour, size), n in counts.items()
    ]


def _phrase(group: GroupSpec) -> str:
    noun = group.kind if group.count == 1 else PLURALS[group.kind]
    article = COUNT_WORDS[group.count]
    if group.count == 1 and group.size is None and group.colour is None:
        article = "a"
    rest = " ".join(w for w in (group.size, group.colour, noun) if w)
    if article == "a" and rest[0] in "aeiou":
        article = "an"
    return f"{article} {rest}"


def caption(scene: Scene) -> str:
    """Describe the scene, e.g. "a large red circle in the left of a blue background"."""
    shapes = " and ".join(_phrase(g) for g in _groups(scene))
    article = "an" if scene.background[0] in "aeiou" else "a"
    if scene.position is not None:
        return f"{shapes} in the {scene.position} of {article} {scene.background} background"
    return f"{shapes} on {article} {scene.background} background"


def _canonical(word: str, known: Collection[str], synonyms: dict[str, str]) -> str | None:
    word = synonyms.get(word, word)
    return word if word in known else None


def _singular(word: str) -> str | None:
    if word in SHAPES:
        return word
    for shape, plural in PLURALS.items():
        if word == plural:
            return shape
    return None


def _parse_phrase(words: list[str]) -> GroupSpec:
    """Read "[count] [size] [colour] shape" where every part but the shape may be missing."""
    count = 1
    size = colour = None
    for word in words[:-1]:
        if word in COUNT_PARSE:
            count = COUNT_PARSE[word]
        elif (s := _canonical(word, SIZES, SIZE_SYNONYMS)) is not None:
            size = s
        elif (c := _canonical(word, COLOURS, COLOUR_SYNONYMS)) is not None:
            colour = c
        elif word not in ("the", "of"):
            raise CaptionError(f"unknown word {word!r} before a shape")
    kind = _singular(words[-1]) if words else None
    if kind is None:
        raise CaptionError(f"expected a shape at the end of {' '.join(words)!r}")
    return GroupSpec(count=count, size=size, colour=colour, kind=kind)


def _split_tail(words: list[str]) -> tuple[list[str], str | None, str | None]:
    """Strip "... in the POS of a BG background" / "... on a BG background"; return (rest, position, bg)."""
    background = position = None
    if len(words) >= 2 and words[-1] == "background":
        background = _canonical(words[-2], COLOURS, COLOUR_SYNONYMS)
        if background is None:
            raise CaptionError(f"unknown background colour {words[-2]!r}")
        words = words[:-2]
        while words and words[-1] in ("a", "an", "the", "on", "of", "with"):
            words = words[:-1]
    if len(words) >= 2 and (p := _canonical(words[-1], POSITIONS, POSITION_SYNONYMS)) is not None:
        position = p
        words = words[:-1]
        while words and words[-1] in ("the", "in", "on"):
            words = words[:-1]
    return words, position, background


def _words(text: str) -> list[str]:
    cleaned = "".join(ch if ch.isalpha() else " " for ch in text.lower())
    return cleaned.split()


def parse_caption(text: str) -> CaptionSpec:
    """Read a caption of this grammar back into what it asks for; raise CaptionError if it cannot."""
    words, position, background = _split_tail(_words(text))
    if not words:
        raise CaptionError(f"no shape in caption {text!r}")
    phrases: list[list[str]] = [[]]
    for word in words:
        if word == "and":
            phrases.append([])
        else:
            phrases[-1].append(word)
    groups = tuple(_parse_phrase(p) for p in phrases)
    return CaptionSpec(background=background, groups=groups, position=position)


def parse_instruction(text: str) -> EditSpec:
    """Read an edit instruction of this grammar ("make it blue", "remove the star", ...)."""
    words = _words(text)
    if not words:
        raise CaptionError("empty instruction")
    last = words[-1]
    if words[0] == "add":
        group = _parse_phrase(words[1:])
        return EditSpec(kind=EditKind.ADD, value=group.kind, colour=group.colour)
    if words[0] == "remove":
        return EditSpec(kind=EditKind.REMOVE, value=_parse_phrase(words[1:]).kind)
    if words[0] == "move" and (p := _canonical(last, POSITIONS, POSITION_SYNONYMS)) is not None:
        return EditSpec(kind=EditKind.MOVE, value=p)
    if "background" in words and (c := _canonical(last, COLOURS, COLOUR_SYNONYMS)) is not None:
        return EditSpec(kind=EditKind.BACKGROUND, value=c)
    if (c := _canonical(last, COLOURS, COLOUR_SYNONYMS)) is not None:
        return EditSpec(kind=EditKind.RECOLOUR, value=c)
    if (s := _canonical(last, SIZES, SIZE_SYNONYMS)) is not None:
        return EditSpec(kind=EditKind.RESIZE, value=s)
    raise CaptionError(f"cannot read instruction {text!r}")


# ---------------------------------------------------------------- sampling scenes


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _single(rng: np.random.Generator, kind: str, colour: str, size: str, position: str) -> Shape:
    ax, ay = POSITIONS[position]
    radius = RADIUS_SINGLE[size] * float(rng.uniform(0.9, 1.1))
    jitter = rng.uniform(-0.03, 0.03, size=2)
    return Shape(kind, colour, size, ax + float(jitter[0]), ay + float(jitter[1]), radius)


def _free_spot(rng: np.random.Generator, radius: float, taken: list[Shape]) -> tuple[float, float] | None:
    """A centre where a shape of this radius fits inside the picture without touching the others."""
    margin = radius + 0.03
    for _ in range(200):
        x, y = (float(v) for v in rng.uniform(margin, 1 - margin, size=2))
        if all(math.hypot(x - s.x, y - s.y) > radius + s.radius + 0.04 for s in taken):
            return x, y
    return None


def _place(rng: np.random.Generator, specs: list[tuple[str, str, str]]) -> tuple[Shape, ...] | None:
    shapes: list[Shape] = []
    for kind, colour, size in specs:
        radius = RADIUS_MULTI[size] * float(rng.uniform(0.9, 1.1))
        spot = _free_spot(rng, radius, shapes)
        if spot is None:
            return None
        shapes.append(Shape(kind, colour, size, spot[0], spot[1], radius))
    return tuple(shapes)


def _colour_on(rng: np.random.Generator, background: str, avoid: tuple[str, ...] = ()) -> str:
    return _pick(rng, [c for c in contrasting(background) if c not in avoid])


def sample_scene(rng: np.random.Generator, centre_bias: bool = False) -> Scene:
    """A random scene: mostly one shape at a named place, sometimes two or three alike, or two different.

    `centre_bias` (training captions) puts a single shape in the centre more often (POSITION_WEIGHTS);
    without it every place is equally likely, and the evaluation's fixed sets stay what they were.
    """
    background = _pick(rng, COLOURS)
    roll = float(rng.random())
    if roll < SINGLE_SHARE:
        shape = _single(
            rng,
            _pick(rng, SHAPES),
            _colour_on(rng, background),
            _pick(rng, SIZES),
            _place_name(rng, centre_bias),
        )
        return Scene(background, (shape,), _position_of(shape))
    if roll < SINGLE_SHARE + ALIKE_SHARE:
        count = int(rng.integers(2, 4))
        spec = (_pick(rng, SHAPES), _colour_on(rng, background), _pick(rng, SIZES))
        specs = [spec] * count
    else:
        first = (_pick(rng, SHAPES), _colour_on(rng, background), _pick(rng, SIZES))
        second_kind = _pick(rng, [s for s in SHAPES if s != first[0]])
        specs = [first, (second_kind, _colour_on(rng, background), _pick(rng, SIZES))]
    shapes = _place(rng, specs)
    if shapes is None:
        return sample_scene(rng, centre_bias)
    return Scene(background, shapes)


def _place_name(rng: np.random.Generator, centre_bias: bool) -> str:
    if not centre_bias:
        return _pick(rng, POSITION_NAMES)
    return POSITION_NAMES[int(rng.choice(len(POSITION_NAMES), p=list(POSITION_WEIGHTS.values())))]


def _position_of(shape: Shape) -> str:
    """The named place nearest to a single shape's centre."""
    return min(POSITIONS, key=lambda p: math.hypot(shape.x - POSITIONS[p][0], shape.y - POSITIONS[p][1]))


# ---------------------------------------------------------------- edits


def sample_single_scene(rng: np.random.Generator, size: str | None = None) -> Scene:
    """One shape at a named place: the scenes whose colour and shape a judge can check unambiguously."""
    background = _pick(rng, COLOURS)
    shape = _single(
        rng,
        _pick(rng, SHAPES),
        _colour_on(rng, background),
        size or _pick(rng, SIZES),
        _pick(rng, POSITION_NAMES),
    )
    return Scene(background, (shape,), _position_of(shape))


def _recolour(rng: np.random.Generator) -> EditTriple:
    before = sample_scene(rng)
    old = {s.colour for s in before.shapes}
    colour = _colour_on(rng, before.background, avoid=tuple(old))
    after = replace(before, shapes=tuple(replace(s, colour=colour) for s in before.shapes))
    kinds = {s.kind for s in before.shapes}
    verb = _pick(rng, ("make", "turn"))
    if len(before.shapes) == 1 and rng.random() < 0.4:
        instruction = f"{verb} the {next(iter(kinds))} {colour}"
    else:
        instruction = f"{verb} it {colour}"
    return EditTriple(before, instruction, after, EditKind.RECOLOUR, EditSpec(EditKind.RECOLOUR, colour))


def _background(rng: np.random.Generator) -> EditTriple:
    before = sample_scene(rng)
    used = {s.colour for s in before.shapes}
    options = [
        c
        for c in COLOURS
        if c != before.background and all(colour_distance(c, u) >= MIN_CONTRAST for u in used)
    ]
    colour = _pick(rng, options)
    after = replace(before, background=colour)
    instruction = (
        f"make the background {colour}" if rng.random() < 0.6 else f"change the background to {colour}"
    )
    return EditTriple(before, instruction, after, EditKind.BACKGROUND, EditSpec(EditKind.BACKGROUND, colour))


def _move(rng: np.random.Generator) -> EditTriple:
    before = sample_single_scene(rng)
    shape = before.shapes[0]
    old = POSITIONS[before.position or "centre"]
    target = _pick(rng, [p for p in POSITIONS if p != before.position])
    new = POSITIONS[target]
    moved = replace(shape, x=shape.x - old[0] + new[0], y=shape.y - old[1] + new[1])
    after = replace(before, shapes=(moved,), position=target)
    spec = EditSpec(EditKind.MOVE, target)
    return EditTriple(before, f"move it to the {target}", after, EditKind.MOVE, spec)


def _resize(rng: np.random.Generator) -> EditTriple:
    before = sample_single_scene(rng)
    shape = before.shapes[0]
    target = "small" if shape.size == "large" else "large"
    radius = shape.radius * RADIUS_SINGLE[target] / RADIUS_SINGLE[shape.size]
    after = replace(before, shapes=(replace(shape, size=target, radius=radius),))
    word = "big" if target == "large" and rng.random() < 0.3 else target
    return EditTriple(before, f"make it {word}", after, EditKind.RESIZE, EditSpec(EditKind.RESIZE, target))


def _add(rng: np.random.Generator) -> EditTriple:
    """One small shape, then a second of another kind beside it; the reverse of this is a removal."""
    before = sample_single_scene(rng, size="small")
    kind = _pick(rng, [s for s in SHAPES if s != before.shapes[0].kind])
    colour = _colour_on(rng, before.background)
    radius = RADIUS_MULTI["small"] * float(rng.uniform(0.9, 1.1))
    spot = _free_spot(rng, radius, list(before.shapes))
    if spot is None:
        return _add(rng)
    added = Shape(kind, colour, "small", spot[0], spot[1], radius)
    after = Scene(before.background, (*before.shapes, added))
    article = "an" if colour[0] in "aeiou" else "a"
    spec = EditSpec(EditKind.ADD, kind, colour)
    return EditTriple(before, f"add {article} {colour} {kind}", after, EditKind.ADD, spec)


def _remove(rng: np.random.Generator) -> EditTriple:
    added = _add(rng)
    kind = added.after.shapes[-1].kind
    spec = EditSpec(EditKind.REMOVE, kind)
    return EditTriple(added.after, f"remove the {kind}", added.before, EditKind.REMOVE, spec)


_EDIT_MAKERS = {
    EditKind.RECOLOUR: _recolour,
    EditKind.BACKGROUND: _background,
    EditKind.MOVE: _move,
    EditKind.RESIZE: _resize,
    EditKind.ADD: _add,
    EditKind.REMOVE: _remove,
}


def sample_edit(rng: np.random.Generator, kind: EditKind | None = None) -> EditTriple:
    """A random (before, instruction, after) triple, of the given kind or of any kind."""
    chosen = kind if kind is not None else EditKind(_pick(rng, [k.value for k in EditKind]))
    return _EDIT_MAKERS[chosen](rng)


def to_array(image: Image.Image) -> np.ndarray:
    """A picture as a float32 HxWx3 array in [-1, 1], the range the autoencoder works in."""
    return np.asarray(image, dtype=np.float32) / 127.5 - 1.0
