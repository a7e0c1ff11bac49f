"""The bundled trained tiny model, loaded by default: the prompt and the edit instruction reach the picture.

These run the default settings (no `model`, so inference/tiny/model/{generate,edit}) at the bundled
defaults (20 steps, guidance 5) and read the pictures with the pixel judge. Prompts and seeds are fixed;
each is one the model is expected to draw right (large shapes, strong contrast).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.engine import DiffusersEngine
from inference.engine_api import BatchItem, GeneratedImage, KindDefaults
from inference.settings import EngineSettings
from inference.vocabulary import JobKind
from tests.inference.items import make_item, open_png
from tests.judge import Judge, Verdict
from tools.tiny import data

PROMPT = "a large yellow star in the centre of a blue background"
SEED = 2
# A prompt that leaves the layout to the seed (a fully specified one should give nearly one picture).
OPEN_PROMPT = "two large yellow stars on a blue background"
# Mean absolute difference (0-255) above which two pictures count as visibly different.
SEED_DISTANCE = 8.0


@pytest.fixture(scope="module")
def engine() -> DiffusersEngine:
    """The engine as a fresh install runs it offline: nothing configured but the CPU."""
    return DiffusersEngine.load(EngineSettings(device="cpu", cpu_threads=1))


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge()


def item(
    engine: DiffusersEngine, job_id: str, prompt: str, seed: int, image: Image.Image | None = None
) -> BatchItem:
    """A one-picture job at the engine's own defaults for its kind, as the bot sends it."""
    kind = JobKind.GENERATE if image is None else JobKind.EDIT
    d = engine.defaults(kind)
    steps, guidance, width, height = d.steps, d.guidance, d.width, d.height
    return make_item(
        job_id,
        seed,
        prompt=prompt,
        kind=kind,
        image=image,
        steps=steps,
        guidance=guidance,
        size=(width, height),
    )


def pictures(engine: DiffusersEngine, items: list[BatchItem]) -> list[Image.Image]:
    results: list[list[GeneratedImage]] = engine.run_batch(items, lambda _update: None, lambda: False)
    return [Image.open(io.BytesIO(images[0].png)).convert("RGB") for images in results]


def distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_runs_at_the_bundled_defaults(engine: DiffusersEngine) -> None:
    assert engine.model_name == "brushfire/tiny"
    assert engine.has_edit_model
    assert engine.defaults(JobKind.GENERATE) == KindDefaults(steps=20, guidance=5.0, width=64, height=64)
    assert engine.defaults(JobKind.EDIT) == KindDefaults(steps=20, guidance=3.0, width=64, height=64)


def test_bundled_edit_model_shares_the_autoencoder_and_text_encoder(engine: DiffusersEngine) -> None:
    """Both bundled pipelines were trained over one autoencoder and one frozen text encoder, so the engine
    keeps a single copy of each."""
    edit, generate = engine._pipes.edit, engine._pipes.generate
    assert edit is not None
    assert edit.vae is generate.vae and edit.text_encoder is generate.text_encoder


def test_draws_what_the_prompt_asks_and_seeds_behave(engine: DiffusersEngine, judge: Judge) -> None:
    wanted = data.parse_caption(PROMPT)
    first, again = pictures(engine, [item(engine, "a", PROMPT, SEED), item(engine, "b", PROMPT, SEED)])
    open_a, open_b = pictures(
        engine, [item(engine, "c", OPEN_PROMPT, SEED), item(engine, "d", OPEN_PROMPT, SEED + 1)]
    )

    verdict: Verdict = judge.judge(first)
    assert (verdict.background, verdict.colour, verdict.shape) == (
        wanted.background,
        wanted.groups[0].colour,
        wanted.groups[0].kind,
    ), verdict
    assert np.array_equal(np.asarray(first), np.asarray(again))  # the same seed, the same picture
    assert distance(open_a, open_b) > SEED_DISTANCE


@pytest.mark.parametrize(
    ("kind", "colour", "background", "instruction"),
    [
        ("circle", "yellow", "blue", "make the background black"),
        ("star", "yellow", "blue", "make it red"),
        ("heart", "green", "white", "turn the heart purple"),
    ],
)
def test_edit_follows_the_instruction_and_keeps_the_shape(
    engine: DiffusersEngine, judge: Judge, kind: str, colour: str, background: str, instruction: str
) -> None:
    before = data.Scene(background, (data.Shape(kind, colour, "large", 0.5, 0.5, 0.26),), "centre")
    spec = data.parse_instruction(instruction)

    (edited,) = pictures(engine, [item(engine, "e", instruction, 6, image=data.render(before))])

    verdict = judge.judge(edited)
    if spec.kind is data.EditKind.BACKGROUND:
        assert (verdict.background, verdict.colour) == (spec.value, colour), verdict
    else:
        assert (verdict.background, verdict.colour) == (background, spec.value), verdict
    assert verdict.shape == kind, verdict


def test_prompts_are_normalised_before_the_model_reads_them(engine: DiffusersEngine) -> None:
    """Case, punctuation, curly quotes, invisible characters and synonyms change nothing."""
    shouted = "A LARGE \u201cYELLOW\u201d STAR\u200b, IN THE CENTER OF A BLUE BACKDROP!"
    plain, loud = pictures(engine, [item(engine, "a", PROMPT, SEED), item(engine, "b", shouted, SEED)])
    assert np.array_equal(np.asarray(plain), np.asarray(loud))


def png_texts(engine: DiffusersEngine, items: list[BatchItem]) -> list[dict[str, str]]:
    results = engine.run_batch(items, lambda _update: None, lambda: False)
    return [dict(open_png(images[0]).text) for images in results]


def test_png_chunks_name_the_model_that_made_each_picture(engine: DiffusersEngine) -> None:
    (made,) = png_texts(engine, [item(engine, "g", PROMPT, SEED)])
    before = data.render(
        data.Scene("blue", (data.Shape("star", "yellow", "large", 0.5, 0.5, 0.26),), "centre")
    )
    (edited,) = png_texts(engine, [item(engine, "e", "make it red", SEED, image=before)])
    assert made["model"] == "brushfire/tiny"
    assert edited["model"] == "brushfire/tiny-edit" and edited["kind"] == "edit"


# Written the ways people write, not the training captions' way; none of these exact strings is a template.
PEOPLE_PROMPTS = [
    ("a red circle on a white background", "white", "red", "circle"),
    # (Not green on black: the pair is 147 apart in RGB, under the 150 the training scenes keep, so that
    # picture is outside the model's world; tools/tiny/data.py MIN_CONTRAST.)
    ("A YELLOW SQUARE ON A BLACK BACKGROUND!", "black", "yellow", "square"),
    ("draw a big blue star on a plain yellow backdrop", "yellow", "blue", "star"),
    ("\u201cpink heart\u201d,\u200b  black background.", "black", "pink", "heart"),
    ("high quality, an orange triangle on a blue background", "blue", "orange", "triangle"),
]


@pytest.mark.parametrize(("prompt", "background", "colour", "shape"), PEOPLE_PROMPTS)
def test_draws_prompts_as_people_write_them(
    engine: DiffusersEngine, judge: Judge, prompt: str, background: str, colour: str, shape: str
) -> None:
    """No position named and one shape asked for: one shape, in the centre, of the asked colour and kind."""
    (picture,) = pictures(engine, [item(engine, "p", prompt, SEED)])
    verdict = judge.judge(picture)
    assert (verdict.background, verdict.colour, verdict.shape) == (background, colour, shape), verdict
    assert len(verdict.blobs) == 1, verdict
    assert abs(verdict.blobs[0].x - 0.5) < 0.15 and abs(verdict.blobs[0].y - 0.5) < 0.15, verdict


def test_edit_follows_a_paraphrased_instruction(engine: DiffusersEngine, judge: Judge) -> None:
    before = data.Scene("blue", (data.Shape("star", "yellow", "large", 0.5, 0.5, 0.26),), "centre")
    (edited,) = pictures(
        engine, [item(engine, "e", "I want a green background", 6, image=data.render(before))]
    )
    verdict = judge.judge(edited)
    assert (verdict.background, verdict.shape) == ("green", "star"), verdict


# One case of issue 14's edit_keeps_colour (0.94 over the evaluation's 50 background edits with the `ftB`
# fine-tune and edit guidance 3, target 0.90: MODEL_CARD.md); this yellow star kept its colour only after `ft2`.
def test_a_background_edit_keeps_the_shape_colour(engine: DiffusersEngine, judge: Judge) -> None:
    before = data.Scene("blue", (data.Shape("star", "yellow", "large", 0.5, 0.5, 0.26),), "centre")
    (edited,) = pictures(
        engine, [item(engine, "e", "I want a green background", 6, image=data.render(before))]
    )
    assert judge.judge(edited).colour == "yellow"
