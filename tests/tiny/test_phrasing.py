"""Training phrasings vary as people write, never use the held-out ones, and say what the scene holds."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tools.tiny import data, lexicon, phrasing
from tools.tiny.phrasing import Family

SAMPLES = 4000


SLOTS = {
    "obj": r"[a-z0-9 ]+?",
    "bg": "(?:" + "|".join(data.COLOURS) + ")",
    "c": "(?:" + "|".join(data.COLOURS) + ")",
    "p": "(?:" + "|".join(data.POSITIONS) + ")",
    "bgn": "background",
    "k": r"[a-z]+",
    "s": "(?:small|large)",
    "x": r"[a-z0-9 ]+?",
}


def _pattern(template: str) -> re.Pattern[str]:
    """A held-out template as a regex over normalised text: each slot matches what it may hold."""
    text = lexicon.normalise(re.sub(r"\{(\w+)\}", r" slot\1 ", template))
    pattern = re.escape(text)
    for name, regex in sorted(SLOTS.items(), key=lambda kv: -len(kv[0])):
        pattern = pattern.replace(f"slot{name}", regex)
    return re.compile("^" + pattern + "$")


@pytest.fixture(scope="module")
def captions() -> list[tuple[data.Scene, str]]:
    rng = np.random.default_rng(1)
    scenes = [data.sample_scene(rng) for _ in range(SAMPLES)]
    return [(s, phrasing.describe(rng, s)) for s in scenes]


@pytest.fixture(scope="module")
def instructions() -> list[tuple[data.EditTriple, str]]:
    rng = np.random.default_rng(2)
    triples = [data.sample_edit(rng) for _ in range(SAMPLES)]
    return [(t, phrasing.instruct(rng, t)) for t in triples]


def test_training_captions_never_use_a_held_out_template_or_word(
    captions: list[tuple[data.Scene, str]],
) -> None:
    held = [_pattern(t.text) for t in phrasing.HELD_OUT_SCENE_TEMPLATES]
    held += [_pattern(f"{o} {{x}}") for o in phrasing.HELD_OUT_OPENINGS]
    for _, caption in captions:
        text = lexicon.normalise(caption)
        # Held-out words are checked on the raw text: a synonym is rewritten away by the normaliser.
        raw = set(re.findall(r"[a-z0-9]+", caption.lower()))
        assert not raw & phrasing.HELD_OUT_WORDS, caption
        assert not any(p.match(text) for p in held), caption


def test_training_instructions_never_use_a_held_out_phrasing(
    instructions: list[tuple[data.EditTriple, str]],
) -> None:
    held = [_pattern(t) for texts in phrasing.HELD_OUT_INSTRUCTIONS.values() for t in texts]
    for _, instruction in instructions:
        raw = set(re.findall(r"[a-z0-9]+", instruction.lower()))
        assert not raw & phrasing.HELD_OUT_WORDS, instruction
        assert not any(p.match(lexicon.normalise(instruction)) for p in held), instruction


def test_held_out_patterns_do_match_their_own_prompts() -> None:
    """The check above is only worth something if a held-out prompt is caught by it."""
    rng = np.random.default_rng(3)
    for template in phrasing.HELD_OUT_SCENE_TEMPLATES:
        scene = data.sample_single_scene(rng)
        if not template.positional:
            scene = phrasing.centred(scene)
        obj = "a red circle"
        text = template.text.format(obj=obj, bg=scene.background, bgn="background", p=scene.position)
        assert _pattern(template.text).match(lexicon.normalise(text)), text


def test_training_uses_every_family_and_the_common_forms(captions: list[tuple[data.Scene, str]]) -> None:
    texts = [lexicon.normalise(c) for _, c in captions]
    assert any(re.fullmatch(r"an? (small |large )?\w+ \w+ on an? \w+ background", t) for t in texts)
    assert any(t.startswith(("draw ", "make ", "please ")) for t in texts), "imperative openings"
    assert any(t.startswith(("high quality", "simple", "detailed")) for t in texts), "filler first"
    assert any("background with" in t for t in texts), "background first"
    assert any(" a " not in f" {t} " and " the " not in f" {t} " for t in texts), "no articles"
    assert any("background" not in t for t in texts), "no background named"
    commas = [c for _, c in captions if "," in c]
    assert len(commas) > SAMPLES // 10, "comma lists and word-order variants"
    unknown = [w for t in texts for w in t.split() if not lexicon.known(w)]
    assert unknown, "made-up filler words, which the tokenizer reads as unknown"
    assert len(set(texts)) > SAMPLES * 0.8, "phrasings vary"


def test_one_shape_with_no_place_named_is_a_centred_shape(captions: list[tuple[data.Scene, str]]) -> None:
    places = set(data.POSITIONS)
    for scene, caption in captions:
        words = set(lexicon.normalise(caption).split())
        if len(scene.shapes) == 1 and scene.position != "centre":
            assert scene.position in words, caption
        if len(scene.shapes) > 1:
            assert not words & places, caption
    centred = [c for s, c in captions if s.position == "centre"]
    assert any(not set(lexicon.normalise(c).split()) & places for c in centred)


def test_captions_name_what_the_scene_holds(captions: list[tuple[data.Scene, str]]) -> None:
    for scene, caption in captions[:1000]:
        words = lexicon.normalise(caption).split()
        for shape in scene.shapes:
            assert shape.kind in words or data.PLURALS[shape.kind] in words, caption
        if "background" in words:
            assert scene.background in words, caption


def test_instructions_say_what_to_change(instructions: list[tuple[data.EditTriple, str]]) -> None:
    for triple, instruction in instructions:
        words = lexicon.normalise(instruction).split()
        spec = triple.spec
        assert spec is not None
        if spec.kind is data.EditKind.BACKGROUND:
            assert spec.value in words and "background" in words, instruction
        elif spec.kind is data.EditKind.RECOLOUR:
            assert spec.value in words and "background" not in words, instruction
        elif spec.kind in (data.EditKind.MOVE, data.EditKind.RESIZE):
            assert spec.value in words, instruction


@pytest.mark.parametrize("family", list(Family))
def test_paraphrases_of_each_family_ask_for_the_scene(family: Family) -> None:
    rng = np.random.default_rng(4)
    for _ in range(30):
        prompt, truth = phrasing.paraphrase(rng, data.sample_single_scene(rng), family)
        words = lexicon.normalise(prompt).split()
        shape = truth.shapes[0]
        assert shape.kind in words and shape.colour in words, prompt
        if family is not Family.NO_BACKGROUND:
            assert truth.background in words, prompt
        if truth.position != "centre":
            assert truth.position in words, prompt


def test_made_up_words_are_unknown_and_never_held_out() -> None:
    rng = np.random.default_rng(5)
    words = {phrasing.made_up_word(rng) for _ in range(500)}
    assert not any(lexicon.known(w) for w in words)
    assert not words & phrasing.HELD_OUT_WORDS
