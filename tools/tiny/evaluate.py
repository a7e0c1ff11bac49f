"""Measures how well the tiny models draw and edit what they are asked, judged from pixels alone.

Run `python -m tools.tiny.evaluate [--model DIR] [--n 100]`. A fixed list of prompts and seeds (the
same on every run) goes through `<DIR>/generate` and a fixed list of recolour and background edits of
rendered scenes through `<DIR>/edit` (skipped when there is no such folder: a text-to-image-only run), with
20 DPM-Solver++ steps at the bundled model's defaults (guidance 5; edits 6 with image guidance 2); the judge in
inference/tiny/judge.py reads each picture. It prints the figures, checks that different seeds differ
and the same seed repeats, and ends with one JSON line:
`{"background_acc", "colour_acc", "shape_acc", "edit_follow", "edit_keeps_shape", ...}`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionInstructPix2PixPipeline
from PIL import Image

from inference.settings import BUNDLED_MODEL_DEFAULTS
from inference.tiny import MODEL_DIR
from tools.tiny import data
from tools.tiny.judge import Judge, Verdict

log = logging.getLogger(__name__)

DEFAULT_MODEL = MODEL_DIR
PROMPT_SEED = 6_000
EDIT_SEED = 6_001
SEED_PROBE_SEED = 6_002
BATCH = 10
# Mean absolute difference (0-255) above which two pictures count as visibly different.
SEED_DISTANCE = 8.0


@dataclass(frozen=True)
class EvalOptions:
    """The command line, parsed."""

    model: Path = DEFAULT_MODEL
    n: int = 100
    steps: int = 20
    guidance: float = BUNDLED_MODEL_DEFAULTS.guidance
    edit_guidance: float = BUNDLED_MODEL_DEFAULTS.edit_guidance or BUNDLED_MODEL_DEFAULTS.guidance
    image_guidance: float = BUNDLED_MODEL_DEFAULTS.edit_image_guidance
    threads: int = 2
    sheet: Path | None = None


@dataclass(frozen=True)
class PromptCase:
    """One text-to-image check: the prompt, the seed, and the scene it was made from (the truth)."""

    prompt: str
    seed: int
    truth: data.Scene


@dataclass(frozen=True)
class EditCase:
    """One edit check: the picture's scene, the instruction, and the scene it should become."""

    triple: data.EditTriple
    seed: int


@dataclass(frozen=True)
class Scores:
    """The figures the issue asks for, plus the seed checks."""

    background_acc: float
    colour_acc: float
    shape_acc: float
    edit_follow: float | None
    edit_keeps_shape: float | None
    seeds_differ: bool
    same_seed_equal: bool
    seed_distance: float
    vae_colour_acc: float
    vae_shape_acc: float
    n: int


def prompt_cases(n: int) -> list[PromptCase]:
    """The fixed prompts: single shapes, so colour and shape are unambiguous, over every word of the grammar."""
    rng = np.random.default_rng(PROMPT_SEED)
    scenes = [data.sample_single_scene(rng) for _ in range(n)]
    return [PromptCase(data.caption(s), seed=1000 + i, truth=s) for i, s in enumerate(scenes)]


def edit_cases(n: int) -> list[EditCase]:
    """The fixed edits: half recolour, half background, each of a single-shape scene."""
    rng = np.random.default_rng(EDIT_SEED)
    cases = []
    for i in range(n):
        kind = data.EditKind.RECOLOUR if i % 2 == 0 else data.EditKind.BACKGROUND
        while len((triple := data.sample_edit(rng, kind)).before.shapes) != 1:
            pass
        cases.append(EditCase(triple, seed=2000 + i))
    return cases


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def generate(
    pipe: AutoPipelineForText2Image, prompts: list[str], seeds: list[int], options: EvalOptions
) -> list:
    images = []
    for start in range(0, len(prompts), BATCH):
        images += pipe(
            prompts[start : start + BATCH],
            num_inference_steps=options.steps,
            guidance_scale=options.guidance,
            generator=generators(seeds[start : start + BATCH]),
        ).images
    return images


def edit(pipe: StableDiffusionInstructPix2PixPipeline, cases: list[EditCase], options: EvalOptions) -> list:
    images = []
    for start in range(0, len(cases), BATCH):
        chunk = cases[start : start + BATCH]
        images += pipe(
            [c.triple.instruction for c in chunk],
            image=[data.render(c.triple.before) for c in chunk],
            num_inference_steps=options.steps,
            guidance_scale=options.edit_guidance,
            image_guidance_scale=options.image_guidance,
            generator=generators([c.seed for c in chunk]),
        ).images
    return images


@dataclass(frozen=True)
class PromptScore:
    """Accuracy on the prompts and the commonest mistakes, e.g. "colour: red -> orange" with its count."""

    background: float
    colour: float
    shape: float
    mistakes: tuple[tuple[str, int], ...]


def score_prompts(cases: list[PromptCase], verdicts: list[Verdict]) -> PromptScore:
    hits = np.zeros(3)
    errors: Counter[str] = Counter()
    for case, verdict in zip(cases, verdicts, strict=True):
        truth = case.truth.shapes[0]
        checks = (
            verdict.background == case.truth.background,
            verdict.colour == truth.colour,
            verdict.shape == truth.kind,
        )
        hits += checks
        for name, ok, want, got in zip(
            ("background", "colour", "shape"),
            checks,
            (case.truth.background, truth.colour, truth.kind),
            (verdict.background, verdict.colour, verdict.shape),
            strict=True,
        ):
            if not ok:
                errors[f"{name}: {want} -> {got}"] += 1
    background, colour, shape = (hits / max(len(cases), 1)).tolist()
    return PromptScore(background, colour, shape, tuple(errors.most_common(8)))


def score_edits(cases: list[EditCase], verdicts: list[Verdict]) -> tuple[float, float]:
    follow = keep = 0
    for case, verdict in zip(cases, verdicts, strict=True):
        spec = data.parse_instruction(case.triple.instruction)
        seen = verdict.background if spec.kind is data.EditKind.BACKGROUND else verdict.colour
        follow += seen == spec.value
        keep += verdict.shape == case.triple.before.shapes[0].kind
    total = max(len(cases), 1)
    return follow / total, keep / total


@torch.no_grad()
def reconstruct(pipe: AutoPipelineForText2Image, scenes: list[data.Scene]) -> list[Image.Image]:
    """The scenes' pictures through the autoencoder and back: the best the denoiser could hope to draw."""
    images = [data.render(s) for s in scenes]
    tensor = torch.from_numpy(np.stack([data.to_array(im) for im in images])).permute(0, 3, 1, 2)
    decoded = pipe.vae.decode(pipe.vae.encode(tensor).latent_dist.mode()).sample
    return pipe.image_processor.postprocess(decoded, output_type="pil")


def pixel_distance(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float32) - np.asarray(b, dtype=np.float32)).mean())


def seed_prompts(n: int = 5) -> list[str]:
    """Prompts that leave the layout to the seed: two or three alike shapes "on" a background, no place named.

    A single-shape prompt names the shape's size and place, so a model that follows it draws nearly the same
    picture from every seed (only the training data's small jitter is left); the seed check needs freedom.
    """
    rng = np.random.default_rng(SEED_PROBE_SEED)
    prompts: list[str] = []
    while len(prompts) < n:
        scene = data.sample_scene(rng)
        if scene.position is None and len({(s.kind, s.colour, s.size) for s in scene.shapes}) == 1:
            prompts.append(data.caption(scene))
    return prompts


def seed_checks(pipe: AutoPipelineForText2Image, options: EvalOptions) -> tuple[float, float]:
    """The smallest distance between two seeds of one prompt, and the largest between two runs of one seed."""
    prompts = seed_prompts()
    seeds = list(range(3000, 3000 + len(prompts)))
    first = generate(pipe, prompts, seeds, options)
    again = generate(pipe, prompts, seeds, options)
    other = generate(pipe, prompts, [s + 500 for s in seeds], options)
    differ = min(pixel_distance(a, b) for a, b in zip(first, other, strict=True))
    same = max(pixel_distance(a, b) for a, b in zip(first, again, strict=True))
    return differ, same


def contact_sheet(images: list, path: Path, columns: int = 10) -> None:
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (64 * columns, 64 * rows), "white")
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * 64, (i // columns) * 64))
    sheet.save(path)


def load_pipelines(
    model: Path,
) -> tuple[AutoPipelineForText2Image, StableDiffusionInstructPix2PixPipeline | None]:
    """The text-to-image pipeline (required) and the edit pipeline (None when it was not trained yet)."""
    if not (model / "generate" / "model_index.json").exists():
        raise FileNotFoundError(f"no generate pipeline in {model}: train with python -m tools.tiny.train")
    generate_pipe = AutoPipelineForText2Image.from_pretrained(model / "generate", torch_dtype=torch.float32)
    generate_pipe.set_progress_bar_config(disable=True)
    if not (model / "edit" / "model_index.json").exists():
        log.warning("no edit pipeline in %s: the edit figures are skipped", model)
        return generate_pipe, None
    edit_pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
        model / "edit", torch_dtype=torch.float32
    )
    edit_pipe.set_progress_bar_config(disable=True)
    return generate_pipe, edit_pipe


@dataclass(frozen=True)
class Report:
    """The scores, and the commonest mistakes of the full model and of the autoencoder alone."""

    scores: Scores
    mistakes: tuple[tuple[str, int], ...]
    autoencoder_mistakes: tuple[tuple[str, int], ...]


def evaluate(options: EvalOptions) -> Report:
    generate_pipe, edit_pipe = load_pipelines(options.model)
    judge = Judge()
    prompts, edits = prompt_cases(options.n), edit_cases(options.n)
    images = generate(generate_pipe, [c.prompt for c in prompts], [c.seed for c in prompts], options)
    drawn = score_prompts(prompts, [judge.judge(im) for im in images])
    edited = edit(edit_pipe, edits, options) if edit_pipe is not None else []
    follow, keep = score_edits(edits, [judge.judge(im) for im in edited]) if edited else (None, None)
    differ, same = seed_checks(generate_pipe, options)
    round_trips = reconstruct(generate_pipe, [c.truth for c in prompts])
    autoencoder = score_prompts(prompts, [judge.judge(im) for im in round_trips])
    if options.sheet is not None:
        contact_sheet(images, options.sheet)
        if edited:
            contact_sheet(
                edited, options.sheet.with_name(options.sheet.stem + "-edit" + options.sheet.suffix)
            )
    scores = Scores(
        background_acc=round(drawn.background, 4),
        colour_acc=round(drawn.colour, 4),
        shape_acc=round(drawn.shape, 4),
        edit_follow=None if follow is None else round(follow, 4),
        edit_keeps_shape=None if keep is None else round(keep, 4),
        seeds_differ=differ > SEED_DISTANCE,
        same_seed_equal=same == 0.0,
        seed_distance=round(differ, 2),
        vae_colour_acc=round(autoencoder.colour, 4),
        vae_shape_acc=round(autoencoder.shape, 4),
        n=options.n,
    )
    return Report(scores, drawn.mistakes, autoencoder.mistakes)


def _mistakes(mistakes: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{what} ({count})" for what, count in mistakes) or "none"


def parse_args(argv: list[str] | None = None) -> EvalOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="folder holding generate/ and edit/"
    )
    parser.add_argument("--n", type=int, default=100, help="prompts, and edits, to judge")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=EvalOptions.guidance)
    parser.add_argument("--edit-guidance", type=float, default=EvalOptions.edit_guidance)
    parser.add_argument("--image-guidance", type=float, default=EvalOptions.image_guidance)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sheet", type=Path, default=None, help="save the generated pictures as a PNG grid")
    args = parser.parse_args(argv)
    if args.n < 5 or args.steps < 1 or args.threads < 1:
        parser.error("--n must be at least 5, --steps and --threads at least 1")
    # Every option's destination is named after its EvalOptions field.
    return EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)})


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(options.threads)
    try:
        report = evaluate(options)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    scores = report.scores
    print(
        f"text-to-image, {scores.n} prompts: background {scores.background_acc:.0%}, "
        f"colour {scores.colour_acc:.0%}, shape {scores.shape_acc:.0%}"
    )
    if scores.edit_follow is None or scores.edit_keeps_shape is None:
        print("edits: no edit pipeline, skipped")
    else:
        print(
            f"edits, {scores.n} instructions: followed {scores.edit_follow:.0%}, "
            f"shape kept {scores.edit_keeps_shape:.0%}"
        )
    print(
        f"seeds: two seeds differ by at least {scores.seed_distance:.1f}/255 (need > {SEED_DISTANCE}); "
        f"same seed repeats exactly: {scores.same_seed_equal}"
    )
    print(f"commonest mistakes: {_mistakes(report.mistakes)}")
    print(
        f"autoencoder round trip: colour {scores.vae_colour_acc:.0%}, shape {scores.vae_shape_acc:.0%}; "
        f"mistakes: {_mistakes(report.autoencoder_mistakes)}"
    )
    print(json.dumps(asdict(scores)))


if __name__ == "__main__":
    main()
