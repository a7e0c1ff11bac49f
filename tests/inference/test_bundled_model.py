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
from inference.protocol import BatchItem, GeneratedImage, JobKind, JobRequest
from inference.settings import EngineSettings
from inference.tiny import data
from tests.judge import Judge, Verdict

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
    kind = JobKind.GENERATE if image is None else JobKind.EDIT
    steps, guidance, width, height = engine.defaults(kind)
    request = JobRequest(idempotency_key=job_id, user="ana", prompt=prompt, count=1, kind=kind)
    return BatchItem(
        job_id=job_id,
        request=request,
        seed=seed,
        width=width,
        height=height,
        steps=steps,
        guidance=guidance,
        strength=None,
        init_image=image,
    )


def pictures(engine: DiffusersEngine, items: list[BatchItem]) -> list[Image.Image]:
    results: list[list[GeneratedImage]] = engine.run_batch(items, lambda _update: None, lambda: False)
    return [Image.open(io.BytesIO(images[0].png)).convert("RGB") for images in results]


def distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def test_runs_at_the_bundled_defaults(engine: DiffusersEngine) -> None:
    assert engine.model_name == "brushfire/tiny"
    assert engine.has_edit_model
    assert engine.defaults(JobKind.GENERATE) == (20, 5.0, 64, 64)


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


def test_edit_follows_the_instruction_and_keeps_the_shape(engine: DiffusersEngine, judge: Judge) -> None:
    before = data.Scene("blue", (data.Shape("circle", "yellow", "large", 0.5, 0.5, 0.26),), "centre")
    instruction = "make the background black"
    spec = data.parse_instruction(instruction)
    assert spec.kind is data.EditKind.BACKGROUND

    (edited,) = pictures(engine, [item(engine, "e", instruction, 6, image=data.render(before))])

    verdict = judge.judge(edited)
    assert verdict.background == spec.value, verdict
    assert verdict.shape == before.shapes[0].kind, verdict
