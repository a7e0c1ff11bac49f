"""Measures how well the tiny models draw and edit what they are asked, judged from pixels alone.

Run `python -m tools.tiny.evaluate [--model DIR] [--n 100] [--per-family 30]` (or `python -m
inference.tiny.evaluate`). Fixed sets, the same on every run: prompts in the caption form ("a large red
circle in the left of a blue background") through `<DIR>/generate`, and recolour and background edits of
rendered scenes through `<DIR>/edit` (skipped when there is no such folder). Then the held-out paraphrase
set: for each phrasing family (tools/tiny/phrasing.py) prompts built only from templates, openings, fillers
and synonyms that training never uses, and edits phrased the same way; the "on" form against the positional
form on the same centred scenes; and whether an edit keeps the colour it was not asked to change. All at
20 DPM-Solver++ steps and the bundled defaults (guidance 5; edits 3 with image guidance 2); the judge in
tools/tiny/judge.py reads each picture. It prints the figures, checks that different seeds differ and the
same seed repeats, and ends with one JSON line: `{"background_acc", "colour_acc", "shape_acc",
"edit_follow", "edit_keeps_shape", "para_background_acc", "para_colour_acc", "para_shape_acc",
"para_edit_follow", "edit_keeps_colour", ..., "para_families": {...}}`.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoPipelineForText2Image, StableDiffusionInstructPix2PixPipeline
from PIL import Image

from inference.settings import BUNDLED_MODEL_DEFAULTS
from inference.tiny import MODEL_DIR
from tools.tiny import data, phrasing
from tools.tiny.diffusers_types import Pipeline
from tools.tiny.judge import Judge, Verdict

log = logging.getLogger(__name__)

DEFAULT_MODEL = MODEL_DIR
PROMPT_SEED = 6_000
EDIT_SEED = 6_001
SEED_PROBE_SEED = 6_002
PARAPHRASE_SEED = 6_003
PARAPHRASE_EDIT_SEED = 6_004
ON_FORM_SEED = 6_005
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
    per_family: int = 30


@dataclass(frozen=True)
class PromptCase:
    """One text-to-image check: the prompt, the seed, the scene it asks for (the truth), its phrasing
    family, and whether it names the background (a prompt that does not leaves it to the model)."""

    prompt: str
    seed: int
    truth: data.Scene
    family: str = "caption"
    names_background: bool = True


@dataclass(frozen=True)
class EditCase:
    """One edit check: the picture's scene, the instruction, and the scene it should become."""

    triple: data.EditTriple
    seed: int
    instruction: str = ""

    @property
    def text(self) -> str:
        return self.instruction or self.triple.instruction


@dataclass(frozen=True)
class Scores:
    """The figures the issue asks for, plus the seed checks."""

    background_acc: float
    colour_acc: float
    shape_acc: float
    edit_follow: float | None
    edit_keeps_shape: float | None
    para_background_acc: float
    para_colour_acc: float
    para_shape_acc: float
    para_edit_follow: float | None
    # A background edit keeps the shape's colour.
    edit_keeps_colour: float | None
    # Where the one shape sits, against where the prompt asks (a prompt with no place asks for the centre).
    position_acc: float
    para_position_acc: float
    # Pictures in which the judge sees exactly one shape, as every paraphrase prompt asks.
    para_one_shape: float
    para_edit_keeps_shape: float | None
    para_edit_keeps_colour: float | None
    # A recolour keeps the background.
    edit_keeps_background: float | None
    # Mean of background, colour and shape accuracy on the same centred scenes, asked both ways.
    on_form_acc: float
    positional_form_acc: float
    on_vs_positional_points: float
    seeds_differ: bool
    same_seed_equal: bool
    seed_distance: float
    vae_colour_acc: float
    vae_shape_acc: float
    n: int
    para_n: int
    # Per phrasing family: background (None where the family names none), colour, shape, position.
    para_families: dict[str, dict[str, float | None]]


def prompt_cases(n: int) -> list[PromptCase]:
    """The fixed prompts: single shapes, so colour and shape are unambiguous, over every word of the grammar."""
    rng = np.random.default_rng(PROMPT_SEED)
    scenes = [data.sample_single_scene(rng) for _ in range(n)]
    return [PromptCase(data.caption(s), seed=1000 + i, truth=s) for i, s in enumerate(scenes)]


def paraphrase_cases(per_family: int) -> list[PromptCase]:
    """The held-out set: for every phrasing family, single shapes asked for in words training never used."""
    return _paraphrase_cases(np.random.default_rng(PARAPHRASE_SEED), per_family, seed=4000)


def _paraphrase_cases(rng: np.random.Generator, per_family: int, seed: int) -> list[PromptCase]:
    cases: list[PromptCase] = []
    for family in phrasing.Family:
        for _ in range(per_family):
            prompt, truth = phrasing.paraphrase(rng, data.sample_single_scene(rng), family)
            named = family is not phrasing.Family.NO_BACKGROUND
            cases.append(PromptCase(prompt, seed + len(cases), truth, family.value, named))
    return cases


def on_form_cases(n: int) -> tuple[list[PromptCase], list[PromptCase]]:
    """The same centred single shapes asked "on a ... background" and "in the centre of a ... background"."""
    rng = np.random.default_rng(ON_FORM_SEED)
    on, positional = [], []
    for i in range(n):
        scene = phrasing.centred(data.sample_single_scene(rng))
        shape = scene.shapes[0]
        article = "an" if scene.background[0] in "aeiou" else "a"
        thing = f"a {shape.size} {shape.colour} {shape.kind}"
        on.append(PromptCase(f"{thing} on {article} {scene.background} background", 5000 + i, scene, "on"))
        where = f"in the centre of {article} {scene.background} background"
        positional.append(PromptCase(f"{thing} {where}", 5000 + i, scene, "positional"))
    return on, positional


def paraphrase_edit_cases(n: int) -> list[EditCase]:
    """Recolour and background edits in the held-out instruction phrasings."""
    rng = np.random.default_rng(PARAPHRASE_EDIT_SEED)
    return [
        replace(case, instruction=phrasing.instruct(rng, case.triple, held_out=True))
        for case in _single_shape_edits(rng, n, seed=7000)
    ]


def _single_shape_edits(rng: np.random.Generator, n: int, seed: int) -> list[EditCase]:
    """Half recolours, half background edits, each of a single-shape scene."""
    cases = []
    for i in range(n):
        kind = data.EditKind.RECOLOUR if i % 2 == 0 else data.EditKind.BACKGROUND
        while len((triple := data.sample_edit(rng, kind)).before.shapes) != 1:
            pass
        cases.append(EditCase(triple, seed=seed + i))
    return cases


def edit_cases(n: int) -> list[EditCase]:
    """The fixed edits: half recolour, half background, each of a single-shape scene."""
    return _single_shape_edits(np.random.default_rng(EDIT_SEED), n, seed=2000)


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def generate(pipe: Pipeline, prompts: list[str], seeds: list[int], options: EvalOptions) -> list:
    images = []
    for start in range(0, len(prompts), BATCH):
        images += pipe(
            prompts[start : start + BATCH],
            num_inference_steps=options.steps,
            guidance_scale=options.guidance,
            generator=generators(seeds[start : start + BATCH]),
        ).images
    return images


def edit(pipe: Pipeline, cases: list[EditCase], options: EvalOptions) -> list:
    images = []
    for start in range(0, len(cases), BATCH):
        chunk = cases[start : start + BATCH]
        images += pipe(
            [c.text for c in chunk],
            image=[data.render(c.triple.before) for c in chunk],
            num_inference_steps=options.steps,
            guidance_scale=options.edit_guidance,
            image_guidance_scale=options.image_guidance,
            generator=generators([c.seed for c in chunk]),
        ).images
    return images


@dataclass(frozen=True)
class PromptScore:
    """Accuracy on the prompts and the commonest mistakes, e.g. "colour: red -> orange" with its count.
    `background` is None when no prompt named one; `one_shape` is the share of pictures with one shape."""

    background: float | None
    colour: float
    shape: float
    position: float
    one_shape: float
    mistakes: tuple[tuple[str, int], ...]

    @property
    def mean(self) -> float:
        """Background, colour and shape accuracy together (background left out where none was named)."""
        return float(np.mean([p for p in (self.background, self.colour, self.shape) if p is not None]))


def position_of(verdict: Verdict) -> str | None:
    """The named place nearest to the largest shape's centre."""
    if not verdict.blobs:
        return None
    blob = verdict.blobs[0]
    return min(
        data.POSITIONS,
        key=lambda p: float(np.hypot(blob.x - data.POSITIONS[p][0], blob.y - data.POSITIONS[p][1])),
    )


def score_prompts(cases: list[PromptCase], verdicts: list[Verdict]) -> PromptScore:
    hits: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for case, verdict in zip(cases, verdicts, strict=True):
        truth = case.truth.shapes[0]
        checks = {
            "colour": (truth.colour, verdict.colour),
            "shape": (truth.kind, verdict.shape),
            "position": (case.truth.position, position_of(verdict)),
        }
        if case.names_background:
            checks["background"] = (case.truth.background, verdict.background)
        for name, (want, got) in checks.items():
            hits[name] += want == got
            if want != got:
                errors[f"{name}: {want} -> {got}"] += 1
        hits["one_shape"] += len(verdict.blobs) == 1
    total, named = max(len(cases), 1), sum(c.names_background for c in cases)
    return PromptScore(
        background=hits["background"] / named if named else None,
        colour=hits["colour"] / total,
        shape=hits["shape"] / total,
        position=hits["position"] / total,
        one_shape=hits["one_shape"] / total,
        mistakes=tuple(errors.most_common(8)),
    )


@dataclass(frozen=True)
class EditScore:
    """Share of edits that did what they were asked and kept the shape; a background edit's keeping of the
    shape's colour, and a recolour's keeping of the background (None without edits of that kind)."""

    follow: float
    keeps_shape: float
    keeps_shape_colour: float | None
    keeps_background: float | None


def score_edits(cases: list[EditCase], verdicts: list[Verdict]) -> EditScore:
    hits: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for case, verdict in zip(cases, verdicts, strict=True):
        spec, before = case.triple.spec, case.triple.before
        if spec is None:
            raise ValueError(f"edit {case.text!r} carries no spec")
        background_edit = spec.kind is data.EditKind.BACKGROUND
        hits["follow"] += (verdict.background if background_edit else verdict.colour) == spec.value
        hits["keeps_shape"] += verdict.shape == before.shapes[0].kind
        if background_edit:
            kinds["background"] += 1
            hits["keeps_shape_colour"] += verdict.colour == before.shapes[0].colour
        else:
            kinds["recolour"] += 1
            hits["keeps_background"] += verdict.background == before.background
    total = max(len(cases), 1)
    return EditScore(
        follow=hits["follow"] / total,
        keeps_shape=hits["keeps_shape"] / total,
        keeps_shape_colour=hits["keeps_shape_colour"] / kinds["background"] if kinds["background"] else None,
        keeps_background=hits["keeps_background"] / kinds["recolour"] if kinds["recolour"] else None,
    )


@torch.no_grad()
def reconstruct(pipe: Pipeline, scenes: list[data.Scene]) -> list[Image.Image]:
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


def seed_checks(pipe: Pipeline, options: EvalOptions) -> tuple[float, float]:
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


def load_pipelines(model: Path) -> tuple[Pipeline, Pipeline | None]:
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
    """The scores, and the commonest mistakes of the full model (fixed and paraphrase sets) and of the
    autoencoder alone."""

    scores: Scores
    mistakes: tuple[tuple[str, int], ...]
    paraphrase_mistakes: tuple[tuple[str, int], ...]
    autoencoder_mistakes: tuple[tuple[str, int], ...]


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass(frozen=True)
class Drawn:
    """What the text-to-image model drew for a list of prompts, and how the judge scored it."""

    images: list
    score: PromptScore
    verdicts: list[Verdict]


def draw(pipe: Pipeline, cases: list[PromptCase], judge: Judge, options: EvalOptions) -> Drawn:
    images = generate(pipe, [c.prompt for c in cases], [c.seed for c in cases], options)
    verdicts = [judge.judge(im) for im in images]
    return Drawn(images, score_prompts(cases, verdicts), verdicts)


def per_family(cases: list[PromptCase], verdicts: list[Verdict]) -> dict[str, dict[str, float | None]]:
    out = {}
    for family in dict.fromkeys(c.family for c in cases):
        mine = [(c, v) for c, v in zip(cases, verdicts, strict=True) if c.family == family]
        score = score_prompts([c for c, _ in mine], [v for _, v in mine])
        out[family] = {
            "background": _r(score.background),
            "colour": _r(score.colour),
            "shape": _r(score.shape),
            "position": _r(score.position),
            "one_shape": _r(score.one_shape),
        }
    return out


def edit_scores(
    pipe: Pipeline | None,
    cases: list[EditCase],
    judge: Judge,
    options: EvalOptions,
) -> tuple[list, EditScore | None]:
    if pipe is None:
        return [], None
    edited = edit(pipe, cases, options)
    return edited, score_edits(cases, [judge.judge(im) for im in edited])


def evaluate(options: EvalOptions) -> Report:
    generate_pipe, edit_pipe = load_pipelines(options.model)
    judge = Judge()
    prompts = prompt_cases(options.n)
    fixed = draw(generate_pipe, prompts, judge, options)
    paraphrases = paraphrase_cases(options.per_family)
    para = draw(generate_pipe, paraphrases, judge, options)
    on_cases, positional_cases = on_form_cases(max(options.n // 2, 5))
    on, positional = (
        draw(generate_pipe, on_cases, judge, options),
        draw(generate_pipe, positional_cases, judge, options),
    )
    edited, edits = edit_scores(edit_pipe, edit_cases(options.n), judge, options)
    _, para_edits = edit_scores(edit_pipe, paraphrase_edit_cases(options.n), judge, options)
    differ, same = seed_checks(generate_pipe, options)
    round_trips = reconstruct(generate_pipe, [c.truth for c in prompts])
    autoencoder = score_prompts(prompts, [judge.judge(im) for im in round_trips])
    if options.sheet is not None:
        contact_sheet(fixed.images, options.sheet)
        contact_sheet(
            para.images, options.sheet.with_name(options.sheet.stem + "-para" + options.sheet.suffix)
        )
        if edited:
            contact_sheet(
                edited, options.sheet.with_name(options.sheet.stem + "-edit" + options.sheet.suffix)
            )
    scores = Scores(
        background_acc=round(fixed.score.background or 0.0, 4),
        colour_acc=round(fixed.score.colour, 4),
        shape_acc=round(fixed.score.shape, 4),
        edit_follow=_r(edits.follow if edits else None),
        edit_keeps_shape=_r(edits.keeps_shape if edits else None),
        para_background_acc=round(para.score.background or 0.0, 4),
        para_colour_acc=round(para.score.colour, 4),
        para_shape_acc=round(para.score.shape, 4),
        para_edit_follow=_r(para_edits.follow if para_edits else None),
        edit_keeps_colour=_r(edits.keeps_shape_colour if edits else None),
        position_acc=round(fixed.score.position, 4),
        para_position_acc=round(para.score.position, 4),
        para_one_shape=round(para.score.one_shape, 4),
        para_edit_keeps_shape=_r(para_edits.keeps_shape if para_edits else None),
        para_edit_keeps_colour=_r(para_edits.keeps_shape_colour if para_edits else None),
        edit_keeps_background=_r(edits.keeps_background if edits else None),
        on_form_acc=round(on.score.mean, 4),
        positional_form_acc=round(positional.score.mean, 4),
        on_vs_positional_points=round(100 * (on.score.mean - positional.score.mean), 1),
        seeds_differ=differ > SEED_DISTANCE,
        same_seed_equal=same == 0.0,
        seed_distance=round(differ, 2),
        vae_colour_acc=round(autoencoder.colour, 4),
        vae_shape_acc=round(autoencoder.shape, 4),
        n=options.n,
        para_n=len(paraphrases),
        para_families=per_family(paraphrases, para.verdicts),
    )
    return Report(scores, fixed.score.mistakes, para.score.mistakes, autoencoder.mistakes)


def _mistakes(mistakes: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{what} ({count})" for what, count in mistakes) or "none"


def parse_args(argv: list[str] | None = None) -> EvalOptions:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="folder holding generate/ and edit/"
    )
    parser.add_argument("--n", type=int, default=100, help="prompts, and edits, to judge")
    parser.add_argument(
        "--per-family",
        type=int,
        default=EvalOptions.per_family,
        help="held-out paraphrases per phrasing family",
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=EvalOptions.guidance)
    parser.add_argument("--edit-guidance", type=float, default=EvalOptions.edit_guidance)
    parser.add_argument("--image-guidance", type=float, default=EvalOptions.image_guidance)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sheet", type=Path, default=None, help="save the generated pictures as PNG grids")
    args = parser.parse_args(argv)
    if args.n < 5 or args.per_family < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--n must be at least 5, --per-family, --steps and --threads at least 1")
    # Every option's destination is named after its EvalOptions field.
    return EvalOptions(**{f.name: getattr(args, f.name) for f in fields(EvalOptions)})


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def print_report(report: Report) -> None:
    scores = report.scores
    print(
        f"text-to-image, {scores.n} fixed prompts: background {scores.background_acc:.0%}, "
        f"colour {scores.colour_acc:.0%}, shape {scores.shape_acc:.0%}, place {scores.position_acc:.0%}"
    )
    print(
        f"held-out paraphrases, {scores.para_n} prompts: background {scores.para_background_acc:.0%}, "
        f"colour {scores.para_colour_acc:.0%}, shape {scores.para_shape_acc:.0%}, "
        f"place {scores.para_position_acc:.0%}, one shape drawn {scores.para_one_shape:.0%}"
    )
    for family, figures in scores.para_families.items():
        print(f"  {family:17} " + ", ".join(f"{k} {_percent(v)}" for k, v in figures.items()))
    print(
        f'"on" form {scores.on_form_acc:.0%} vs "in the centre of" {scores.positional_form_acc:.0%} '
        f"({scores.on_vs_positional_points:+.1f} points)"
    )
    if scores.edit_follow is None:
        print("edits: no edit pipeline, skipped")
    else:
        print(
            f"edits, {scores.n} fixed instructions: followed {_percent(scores.edit_follow)}, "
            f"shape kept {_percent(scores.edit_keeps_shape)}, background edits keep the shape's colour "
            f"{_percent(scores.edit_keeps_colour)}, recolours keep the background "
            f"{_percent(scores.edit_keeps_background)}"
        )
        print(
            f"edits, {scores.n} held-out phrasings: followed {_percent(scores.para_edit_follow)}, "
            f"shape kept {_percent(scores.para_edit_keeps_shape)}, "
            f"shape colour kept {_percent(scores.para_edit_keeps_colour)}"
        )
    print(
        f"seeds: two seeds differ by at least {scores.seed_distance:.1f}/255 (need > {SEED_DISTANCE}); "
        f"same seed repeats exactly: {scores.same_seed_equal}"
    )
    print(f"commonest mistakes: {_mistakes(report.mistakes)}")
    print(f"commonest mistakes on paraphrases: {_mistakes(report.paraphrase_mistakes)}")
    print(
        f"autoencoder round trip: colour {scores.vae_colour_acc:.0%}, shape {scores.vae_shape_acc:.0%}; "
        f"mistakes: {_mistakes(report.autoencoder_mistakes)}"
    )
    print(json.dumps(asdict(scores)))


def main(argv: list[str] | None = None) -> None:
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(options.threads)
    try:
        report = evaluate(options)
    except FileNotFoundError as error:
        raise SystemExit(f"error: {error}") from None
    print_report(report)


if __name__ == "__main__":
    main()
