"""Many ways of saying one scene or one edit: the phrasings the tiny model trains on, and those it never sees.

`describe(rng, scene)` writes a training caption for a scene, drawn afresh every time it is called (the
trainer calls it every step), from sentence templates of several phrasing families, noun-phrase word
orders, synonyms, imperative openings, filler words (real ones, and made-up words that the tokenizer maps
to its unknown token), and dropped articles or sizes. `instruct(rng, triple)` does the same for an edit's
instruction. With `held_out=True` both draw only from templates, openings, fillers and synonyms that
training never uses: the evaluation's paraphrase set (`paraphrase`, `paraphrase_instruction`), reported
per family. A scene whose caption names no position is a single shape in the centre, or several shapes.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np

from tools.tiny import lexicon
from tools.tiny.data import (
    COUNT_WORDS,
    PLURALS,
    POSITIONS,
    EditKind,
    EditSpec,
    EditTriple,
    GroupSpec,
    Scene,
    _groups,
)

log = logging.getLogger(__name__)


class Family(StrEnum):
    """A way people phrase a prompt; the evaluation reports each separately."""

    POSITIONAL = "positional"
    ON = "on"
    NO_BACKGROUND = "no_background"
    COMMA_LIST = "comma_list"
    BACKGROUND_FIRST = "background_first"
    NO_ARTICLES = "no_articles"
    IMPERATIVE = "imperative"
    FILLER = "filler"
    WORD_ORDER = "word_order"
    SYNONYMS = "synonyms"


@dataclass(frozen=True)
class Template:
    """A sentence with slots {obj} (the shapes), {bg} (background colour), {bgn} ("background") and {p}
    (the position); `positional` templates name a position, the others only fit a centred single shape
    or several shapes."""

    text: str
    family: Family
    positional: bool


T = Template
SCENE_TEMPLATES: tuple[Template, ...] = (
    T("{obj} in the {p} of a {bg} {bgn}", Family.POSITIONAL, True),
    T("{obj} on the {p} of a {bg} {bgn}", Family.POSITIONAL, True),
    T("{obj} at the {p} of a {bg} {bgn}", Family.POSITIONAL, True),
    T("{obj} in the {p} on a {bg} {bgn}", Family.POSITIONAL, True),
    T("{obj} on a {bg} {bgn}", Family.ON, False),
    T("{obj} on {bg}", Family.ON, False),
    T("{obj} with a {bg} {bgn}", Family.ON, False),
    T("{obj}", Family.NO_BACKGROUND, False),
    T("{obj} in the {p}", Family.NO_BACKGROUND, True),
    T("{obj} on the {p} side", Family.NO_BACKGROUND, True),
    T("{obj}, {bg} {bgn}", Family.COMMA_LIST, False),
    T("{obj}, {p}, {bg} {bgn}", Family.COMMA_LIST, True),
    T("{obj}, {bg}", Family.COMMA_LIST, False),
    T("a {bg} {bgn} with {obj}", Family.BACKGROUND_FIRST, False),
    T("a {bg} {bgn} with {obj} in the {p}", Family.BACKGROUND_FIRST, True),
    T("{bg} {bgn}, {obj}", Family.BACKGROUND_FIRST, False),
    T("{bg} {bgn}, {obj} on the {p}", Family.BACKGROUND_FIRST, True),
)
HELD_OUT_SCENE_TEMPLATES: tuple[Template, ...] = (
    T("{obj} on a {bg} {bgn} in the {p}", Family.POSITIONAL, True),
    T("{obj} placed at the {p} of a {bg} {bgn}", Family.POSITIONAL, True),
    T("{obj} over a {bg} {bgn}", Family.ON, False),
    T("{obj} resting on a {bg} {bgn}", Family.ON, False),
    T("{obj} set against a {bg} {bgn}", Family.ON, False),
    T("just {obj}", Family.NO_BACKGROUND, False),
    T("{obj} near the {p}", Family.NO_BACKGROUND, True),
    T("{obj} - {bgn}: {bg}", Family.COMMA_LIST, False),
    T("{obj}; {p}; {bg}", Family.COMMA_LIST, True),
    T("on a {bg} {bgn}, {obj}", Family.BACKGROUND_FIRST, False),
    T("{bg} {bgn} featuring {obj} in the {p}", Family.BACKGROUND_FIRST, True),
)
del T

# One group of shapes: {n} count or article, then size, colour and shape in some order.
NOUN_PHRASES = (
    "{n} {size} {colour} {shape}",
    "{n} {colour} {size} {shape}",
    "{n} {size} {shape}, {colour}",
    "{n} {shape}, {colour}, {size}",
    "{n} {size} {shape} coloured {colour}",
)
HELD_OUT_NOUN_PHRASES = (
    "{n} {size} {shape} in {colour}",
    "{n} {size} {shape} that is {colour}",
)
OPENINGS = (
    "draw",
    "make",
    "create",
    "please draw",
    "please make",
    "show me",
    "generate",
    "render",
    "an image of",
    "a picture of",
    "paint",
    "draw me",
)
HELD_OUT_OPENINGS = ("can you draw", "i want", "give me", "a drawing of", "sketch", "could you make")
FILLER_PREFIXES = ("high quality,", "simple,", "flat icon,", "clean,", "detailed,", "minimal,")
FILLER_SUFFIXES = (", high quality", ", simple", ", flat style", ", detailed", ", minimal style", ", icon")
SHAPE_ADJECTIVES = ("bright", "solid", "single", "simple")
BACKGROUND_ADJECTIVES = ("plain", "solid", "clean", "simple")
HELD_OUT_FILLER_PREFIXES = ("masterpiece, best quality,", "ultra detailed, 4k,", "award winning,")
HELD_OUT_FILLER_SUFFIXES = (", trending on artstation", ", 8k uhd", ", sharp focus")
HELD_OUT_SHAPE_ADJECTIVES = ("vivid", "lovely", "glossy")
HELD_OUT_BACKGROUND_ADJECTIVES = ("smooth", "soft", "uniform")

# Training: how often each change is made to a caption.
P_CANONICAL_NOUN = 0.5
P_DROP_SIZE = 0.25
P_DROP_COLOUR = 0.03
P_SYNONYM = 0.25
P_NO_ARTICLES = 0.15
P_OPENING = 0.2
P_FILLER = 0.25
P_MADE_UP = 0.4
P_SHOUT = 0.1

# Words a synonym may stand in for when a caption is drawn (the "centred" kind are not nouns: they are
# only used where a template places them).
_SUBSTITUTABLE = {"centred", "centered"}


def _synonyms(held_out: bool) -> dict[str, list[str]]:
    table = lexicon.HELD_OUT_SYNONYMS if held_out else lexicon.TRAIN_SYNONYMS
    out: dict[str, list[str]] = {}
    for word, target in table.items():
        if word not in _SUBSTITUTABLE:
            out.setdefault(target, []).append(word)
    return out


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return str(options[int(rng.integers(len(options)))])


def _tidy(text: str) -> str:
    """Collapse the spaces an empty slot leaves and fix "a" before a vowel."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+,", ",", text)
    return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)


def made_up_word(rng: np.random.Generator) -> str:
    """A pronounceable word no vocabulary holds: the tokenizer reads it as its unknown token."""
    while True:
        letters = [
            _pick(rng, tuple("bdfgklmnprstvz")) if i % 2 == 0 else _pick(rng, tuple("aeiou"))
            for i in range(int(rng.integers(4, 8)))
        ]
        word = "".join(letters)
        if not lexicon.known(word) and word not in lexicon.SYNONYMS and word not in HELD_OUT_WORDS:
            return word


def _noun_phrase(rng: np.random.Generator, group: GroupSpec, layout: str, *, size: bool, colour: bool) -> str:
    noun = group.kind if group.count == 1 else PLURALS[group.kind]
    return layout.format(
        n=COUNT_WORDS[group.count],
        size=group.size if size and group.size else "",
        colour=group.colour if colour and group.colour else "",
        shape=noun,
    )


def _objects(rng: np.random.Generator, scene: Scene, layouts: tuple[str, ...], *, training: bool) -> str:
    layout = NOUN_PHRASES[0] if training and rng.random() < P_CANONICAL_NOUN else _pick(rng, layouts)
    size = not training or rng.random() >= P_DROP_SIZE
    colour = not training or rng.random() >= P_DROP_COLOUR
    return " and ".join(
        _noun_phrase(rng, g, layout, size=size, colour=colour).strip(" ,") for g in _groups(scene)
    )


def fits(template: Template, scene: Scene) -> bool:
    """A template without a position only describes a centred single shape, or several shapes."""
    if template.positional:
        return scene.position is not None
    return scene.position in (None, "centre")


def _fill(rng: np.random.Generator, template: Template, scene: Scene, obj: str) -> str:
    return template.text.format(obj=obj, bg=scene.background, bgn="background", p=scene.position or "")


def _substitute(rng: np.random.Generator, text: str, table: dict[str, list[str]], p: float) -> str:
    words = text.split(" ")
    for i, word in enumerate(words):
        bare = word.rstrip(",")
        if bare in table and rng.random() < p:
            words[i] = _pick(rng, table[bare]) + word[len(bare) :]
    return " ".join(words)


def _strip_articles(text: str) -> str:
    return re.sub(r"\b(a|an|the) ", "", text)


def _add_filler(rng: np.random.Generator, text: str, *, held_out: bool) -> str:
    prefixes = HELD_OUT_FILLER_PREFIXES if held_out else FILLER_PREFIXES
    suffixes = HELD_OUT_FILLER_SUFFIXES if held_out else FILLER_SUFFIXES
    shape_adj = HELD_OUT_SHAPE_ADJECTIVES if held_out else SHAPE_ADJECTIVES
    bg_adj = HELD_OUT_BACKGROUND_ADJECTIVES if held_out else BACKGROUND_ADJECTIVES
    if not held_out and rng.random() < P_MADE_UP:
        word = made_up_word(rng)
        words = text.split(" ")
        words.insert(int(rng.integers(len(words) + 1)), word)
        return " ".join(words)
    roll = int(rng.integers(4))
    if roll == 0:
        return f"{_pick(rng, prefixes)} {text}"
    if roll == 1:
        return f"{text}{_pick(rng, suffixes)}"
    if roll == 2 and " background" in text:
        return text.replace(" background", f" {_pick(rng, bg_adj)} background", 1)
    return re.sub(r"\b(a|an|one) ", rf"\1 {_pick(rng, shape_adj)} ", text, count=1)


def describe(rng: np.random.Generator, scene: Scene) -> str:
    """One training caption for the scene, drawn afresh from the training phrasings."""
    template = _pick_template(rng, SCENE_TEMPLATES, scene)
    text = _fill(rng, template, scene, _objects(rng, scene, NOUN_PHRASES, training=True))
    text = _substitute(rng, text, _synonyms(held_out=False), P_SYNONYM)
    if rng.random() < P_NO_ARTICLES:
        text = _strip_articles(text)
    if rng.random() < P_OPENING:
        text = f"{_pick(rng, OPENINGS)} {text}"
    if rng.random() < P_FILLER:
        text = _add_filler(rng, text, held_out=False)
    text = _tidy(text)
    if rng.random() < P_SHOUT:
        text = text.upper() + _pick(rng, ("", "!", "."))
    return text


def _pick_template(rng: np.random.Generator, templates: tuple[Template, ...], scene: Scene) -> Template:
    options = [t for t in templates if fits(t, scene)]
    return options[int(rng.integers(len(options)))]


def centred(scene: Scene) -> Scene:
    """The same single shape moved to the centre (what a prompt without a position asks for)."""
    shape = scene.shapes[0]
    old, new = POSITIONS[scene.position or "centre"], POSITIONS["centre"]
    moved = replace(shape, x=shape.x - old[0] + new[0], y=shape.y - old[1] + new[1])
    return replace(scene, shapes=(moved,), position="centre")


def paraphrase(rng: np.random.Generator, scene: Scene, family: Family) -> tuple[str, Scene]:
    """A held-out prompt of one family for a single-shape scene, and the scene it asks for (a prompt
    without a position asks for the shape in the centre)."""
    base = {Family.POSITIONAL, Family.ON, Family.NO_BACKGROUND, Family.COMMA_LIST, Family.BACKGROUND_FIRST}
    pool = HELD_OUT_SCENE_TEMPLATES if family in base or family is Family.NO_ARTICLES else SCENE_TEMPLATES
    # The other families change a prompt that names its background, so the background is judged too.
    options = [t for t in pool if (t.family == family if family in base else "{bg}" in t.text)]
    template = options[int(rng.integers(len(options)))]
    if not template.positional:
        scene = centred(scene)
    layouts = HELD_OUT_NOUN_PHRASES if family is Family.WORD_ORDER else NOUN_PHRASES[:1]
    text = _fill(rng, template, scene, _objects(rng, scene, layouts, training=False))
    if family is Family.NO_ARTICLES:
        text = _strip_articles(text)
    elif family is Family.IMPERATIVE:
        text = f"{_pick(rng, HELD_OUT_OPENINGS)} {text}"
    elif family is Family.FILLER:
        text = _add_filler(rng, text, held_out=True)
    elif family is Family.SYNONYMS:
        text = _force_synonym(rng, text)
    return _tidy(text), scene


def _force_synonym(rng: np.random.Generator, text: str) -> str:
    table = _synonyms(held_out=True)
    words = text.split(" ")
    spots = [i for i, w in enumerate(words) if w.rstrip(",") in table]
    if not spots:
        return text
    first = spots[int(rng.integers(len(spots)))]
    bare = words[first].rstrip(",")
    words[first] = _pick(rng, table[bare]) + words[first][len(bare) :]
    return _substitute(rng, " ".join(words), table, 0.5)


# ---------------------------------------------------------------- edit instructions

# {c} colour, {k} the shape's name, {p} position, {s} size.
INSTRUCTIONS: dict[EditKind, tuple[str, ...]] = {
    EditKind.RECOLOUR: (
        "make it {c}",
        "turn it {c}",
        "make the {k} {c}",
        "turn the {k} {c}",
        "change the colour of the {k} to {c}",
        "change its colour to {c}",
        "recolour the {k} {c}",
        "recolour it {c}",
        "colour it {c}",
        "paint the {k} {c}",
        "paint it {c}",
        "i want a {c} {k}",
        "{c} {k}",
        "change the {k} to {c}",
        "the {k} should be {c}",
        "make the {k} {c} please",
        "please make it {c}",
        "set the colour to {c}",
    ),
    EditKind.BACKGROUND: (
        "make the background {c}",
        "change the background to {c}",
        "turn the background {c}",
        "{c} background",
        "i want a {c} background",
        "set the background to {c}",
        "change the background colour to {c}",
        "background {c}",
        "paint the background {c}",
        "use a {c} background",
        "put it on a {c} background",
        "give it a {c} background",
        "the background should be {c}",
        "please make the background {c}",
    ),
    EditKind.MOVE: (
        "move it to the {p}",
        "move the {k} to the {p}",
        "put it in the {p}",
        "shift it to the {p}",
        "put the {k} on the {p}",
    ),
    EditKind.RESIZE: ("make it {s}", "make the {k} {s}", "turn it {s}", "make it {s} please"),
    EditKind.ADD: ("add a {c} {k}", "also draw a {c} {k}", "put a {c} {k} next to it", "add a {c} {k} too"),
    EditKind.REMOVE: ("remove the {k}", "delete the {k}", "take away the {k}", "get rid of the {k}"),
}
HELD_OUT_INSTRUCTIONS: dict[EditKind, tuple[str, ...]] = {
    EditKind.RECOLOUR: (
        "can you make the {k} {c}",
        "switch the {k} to {c}",
        "turn the {k} into a {c} one",
        "give the {k} a {c} colour",
        "colour the {k} in {c}",
        "i would like the {k} to be {c}",
        "make it {c} instead",
    ),
    EditKind.BACKGROUND: (
        "switch the background to {c}",
        "can you change the background to {c}",
        "recolour the background {c}",
        "i would like a {c} background",
        "swap the background for {c}",
        "a {c} background instead",
        "make the background colour {c}",
    ),
    EditKind.MOVE: ("place it at the {p}",),
    EditKind.RESIZE: ("resize it to {s}",),
    EditKind.ADD: ("insert a {c} {k}",),
    EditKind.REMOVE: ("erase the {k}",),
}
# Recolouring several shapes: there is no one shape to name.
GROUP_RECOLOURS = ("make them {c}", "turn them {c}", "make the shapes {c}", "make it {c}", "colour them {c}")


def _instruction_slots(spec: EditSpec, before: Scene) -> dict[str, str]:
    kind = before.shapes[0].kind if len(before.shapes) == 1 else "shape"
    if spec.kind in (EditKind.ADD, EditKind.REMOVE):
        kind = spec.value
    return {"c": spec.colour or spec.value, "k": kind, "p": spec.value, "s": spec.value}


def instruct(rng: np.random.Generator, triple: EditTriple, *, held_out: bool = False) -> str:
    """An instruction for the edit, drawn afresh from the training (or the held-out) phrasings."""
    table = HELD_OUT_INSTRUCTIONS if held_out else INSTRUCTIONS
    spec = triple.spec
    if spec is None:
        raise ValueError(f"no edit spec to phrase {triple.instruction!r} afresh from")
    kind = spec.kind
    options: tuple[str, ...]
    if kind is EditKind.RECOLOUR and len(triple.before.shapes) > 1 and not held_out:
        options = GROUP_RECOLOURS
    else:
        options = table[kind]
    text = _pick(rng, options).format(**_instruction_slots(spec, triple.before))
    text = _substitute(rng, text, _synonyms(held_out), 0.5 if held_out else P_SYNONYM)
    if not held_out and rng.random() < P_SHOUT:
        text = text.capitalize() + _pick(rng, ("!", ".", ""))
    return _tidy(text)


# Words only the held-out phrasings use; a training caption never holds one (made-up words avoid them too).
_HELD_OUT_TEXT = " ".join(
    [
        *HELD_OUT_OPENINGS,
        *HELD_OUT_FILLER_PREFIXES,
        *HELD_OUT_FILLER_SUFFIXES,
        *HELD_OUT_SHAPE_ADJECTIVES,
        *HELD_OUT_BACKGROUND_ADJECTIVES,
        *HELD_OUT_NOUN_PHRASES,
        *(t.text for t in HELD_OUT_SCENE_TEMPLATES),
        *(text for texts in HELD_OUT_INSTRUCTIONS.values() for text in texts),
    ]
)
HELD_OUT_WORDS: frozenset[str] = frozenset(
    w for w in re.findall(r"[a-z0-9]+", re.sub(r"\{\w+\}", " ", _HELD_OUT_TEXT)) if not lexicon.known(w)
) | frozenset(lexicon.HELD_OUT_SYNONYMS)
