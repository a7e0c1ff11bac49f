"""The procedural scene generator: deterministic, covers its grammar, captions and edits read back."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tools.tiny import data
from tools.tiny.data import CaptionError, EditKind

TOKENIZER_VOCAB = Path(__file__).parents[2] / "inference" / "tiny" / "tokenizer" / "vocab.json"


def scenes(seed: int, n: int) -> list[data.Scene]:
    rng = np.random.default_rng(seed)
    return [data.sample_scene(rng) for _ in range(n)]


def test_same_seed_same_scenes_and_pixels() -> None:
    first, second = scenes(7, 20), scenes(7, 20)
    assert first == second
    assert all(
        np.array_equal(np.asarray(data.render(a)), np.asarray(data.render(b)))
        for a, b in zip(first, second, strict=True)
    )
    assert scenes(8, 20) != first


def test_render_is_64px_rgb_and_anti_aliased() -> None:
    image = data.render(scenes(1, 1)[0])
    assert image.size == (64, 64) and image.mode == "RGB"
    big = data.Scene("white", (data.Shape("circle", "black", "large", 0.5, 0.5, 0.3),))
    levels = np.unique(np.asarray(data.render(big))[..., 0])
    assert len(levels) > 4, "edges should have in-between shades"


def test_grammar_coverage() -> None:
    sample = scenes(3, 600)
    shapes = [s for scene in sample for s in scene.shapes]
    assert {s.kind for s in shapes} == set(data.SHAPES)
    assert {s.colour for s in shapes} == set(data.COLOURS)
    assert {s.size for s in shapes} == set(data.SIZES)
    assert {scene.background for scene in sample} == set(data.COLOURS)
    assert {scene.position for scene in sample} == {*data.POSITIONS, None}
    assert {len(scene.shapes) for scene in sample} == {1, 2, 3}
    assert len(data.SHAPES) >= 6 and len(data.COLOURS) >= 8


def test_palette_far_apart_and_shapes_contrast_with_background() -> None:
    for a in data.COLOURS:
        for b in data.COLOURS:
            if a != b:
                assert data.colour_distance(a, b) >= 100, (a, b)
    for scene in scenes(4, 300):
        assert all(
            data.colour_distance(s.colour, scene.background) >= data.MIN_CONTRAST for s in scene.shapes
        )


def test_shapes_inside_picture_and_apart() -> None:
    for scene in scenes(5, 300):
        for i, s in enumerate(scene.shapes):
            assert s.x - s.radius >= -0.02 and s.x + s.radius <= 1.02
            for t in scene.shapes[i + 1 :]:
                assert np.hypot(s.x - t.x, s.y - t.y) > s.radius + t.radius


def spec_of(scene: data.Scene) -> data.CaptionSpec:
    groups: dict[tuple[str, str, str], int] = {}
    for s in scene.shapes:
        groups[(s.kind, s.colour, s.size)] = groups.get((s.kind, s.colour, s.size), 0) + 1
    return data.CaptionSpec(
        background=scene.background,
        groups=tuple(data.GroupSpec(n, size, colour, kind) for (kind, colour, size), n in groups.items()),
        position=scene.position,
    )


def test_captions_parse_back_to_the_scene() -> None:
    for scene in scenes(6, 400):
        assert data.parse_caption(data.caption(scene)) == spec_of(scene)


def test_parse_accepts_synonyms_and_partial_prompts() -> None:
    spec = data.parse_caption("two big gray hearts in the center of a cyan background")
    assert spec == data.CaptionSpec("cyan", (data.GroupSpec(2, "large", "grey", "heart"),), "centre")
    assert data.parse_caption("a star").groups == (data.GroupSpec(1, None, None, "star"),)
    with pytest.raises(CaptionError):
        data.parse_caption("a sunset over the sea")


def test_captions_and_instructions_stay_inside_the_word_list() -> None:
    rng = np.random.default_rng(9)
    texts = [data.caption(s) for s in scenes(9, 300)] + [
        data.sample_edit(rng).instruction for _ in range(300)
    ]
    plurals = set(data.PLURALS.values())
    for text in texts:
        assert set(text.split()) <= data.VOCABULARY | plurals, text


def test_word_list_is_in_the_tokenizer_vocabulary() -> None:
    vocab = json.loads(TOKENIZER_VOCAB.read_text())
    missing = sorted(w for w in data.VOCABULARY if w + "</w>" not in vocab)
    assert not missing


@pytest.mark.parametrize("kind", list(EditKind))
def test_edit_triples_change_only_what_they_say(kind: EditKind) -> None:
    rng = np.random.default_rng(10)
    for _ in range(40):
        triple = data.sample_edit(rng, kind)
        before, after = triple.before, triple.after
        spec = data.parse_instruction(triple.instruction)
        assert spec.kind == kind == triple.kind
        if kind is EditKind.RECOLOUR:
            assert {s.colour for s in after.shapes} == {spec.value} != {s.colour for s in before.shapes}
            assert after.shapes == tuple(replace(s, colour=spec.value) for s in before.shapes)
        elif kind is EditKind.BACKGROUND:
            assert after == replace(before, background=spec.value) and before.background != spec.value
        elif kind is EditKind.MOVE:
            assert after.position == spec.value != before.position
            assert replace(after.shapes[0], x=0, y=0) == replace(before.shapes[0], x=0, y=0)
        elif kind is EditKind.RESIZE:
            assert after.shapes[0].size == spec.value != before.shapes[0].size
            assert (after.shapes[0].x, after.shapes[0].kind) == (before.shapes[0].x, before.shapes[0].kind)
        elif kind is EditKind.ADD:
            assert after.shapes[:-1] == before.shapes and after.shapes[-1].kind == spec.value
            assert after.shapes[-1].colour == spec.colour
        else:
            assert before.shapes[:-1] == after.shapes and before.shapes[-1].kind == spec.value
        assert after.background == before.background or kind is EditKind.BACKGROUND


def test_unreadable_instruction_is_a_clear_error() -> None:
    with pytest.raises(CaptionError, match="cannot read"):
        data.parse_instruction("make it sparkle")
