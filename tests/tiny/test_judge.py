"""The pixel judge reads background, colour and shape from the generator's pictures, clean or degraded."""

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.judge import Judge
from tools.tiny import data


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge()


def single_scene(rng: np.random.Generator) -> data.Scene:
    while len((scene := data.sample_scene(rng)).shapes) != 1:
        pass
    return scene


def degrade(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Roughly what a slightly soft autoencoder gives back: blur, JPEG artefacts and a little noise."""
    image = image.filter(ImageFilter.GaussianBlur(0.8))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=75)
    pixels = np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) + rng.normal(0, 4, (64, 64, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def accuracy(judge: Judge, n: int, seed: int, degraded: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    hits = np.zeros(3)
    for _ in range(n):
        scene = single_scene(rng)
        image = data.render(scene)
        verdict = judge.judge(degrade(image, rng) if degraded else image)
        truth = scene.shapes[0]
        hits += [
            verdict.background == scene.background,
            verdict.colour == truth.colour,
            verdict.shape == truth.kind,
        ]
    return hits / n


def test_clean_single_shapes_nearly_always_right(judge: Judge) -> None:
    background, colour, shape = accuracy(judge, 500, seed=11, degraded=False)
    assert background >= 0.98 and colour >= 0.98 and shape >= 0.98


def test_blurred_noisy_single_shapes_mostly_right(judge: Judge) -> None:
    background, colour, shape = accuracy(judge, 300, seed=12, degraded=True)
    assert background >= 0.98 and colour >= 0.97 and shape >= 0.93


def test_multi_shape_scenes_find_each_shape(judge: Judge) -> None:
    rng = np.random.default_rng(13)
    found = total = 0
    for _ in range(150):
        scene = data.sample_scene(rng)
        if len(scene.shapes) == 1:
            continue
        verdict = judge.judge(data.render(scene))
        assert verdict.background == scene.background
        assert len(verdict.blobs) == len(scene.shapes)
        truth = sorted((s.kind, s.colour) for s in scene.shapes)
        seen = sorted((b.shape, b.colour) for b in verdict.blobs)
        found += sum(t in seen for t in truth)
        total += len(truth)
    assert found / total >= 0.95


def test_blob_position_and_size_follow_the_scene(judge: Judge) -> None:
    scene = data.Scene("white", (data.Shape("square", "red", "large", 0.3, 0.5, 0.26),), "left")
    blob = judge.judge(data.render(scene)).blobs[0]
    assert blob.x == pytest.approx(0.3, abs=0.03) and blob.y == pytest.approx(0.5, abs=0.03)
    assert blob.width == pytest.approx(2 * 0.26 * 0.85, abs=0.05)


def test_empty_picture_has_no_shape(judge: Judge) -> None:
    verdict = judge.judge(Image.new("RGB", (64, 64), data.PALETTE["green"]))
    assert (
        verdict.background == "green"
        and verdict.blobs == ()
        and verdict.shape is None
        and verdict.colour is None
    )
