"""Chooses edit sampler defaults, and watches an edit fine-tune, on tuning edits apart from the evaluation's.

Run `python -m tools.tiny.edit_tuning [--model DIR] [--checkpoint STATE] [--setting G/IG/STEPS ...] [--n 60]
[--vae]`. The tuning edits are built as the evaluation's (single-shape recolours and background edits, half
each; `evaluate._single_shape_edits`) from other generators and picture seeds, once in the training
instruction form and once in the held-out phrasings, so a default picked here is not picked on the figures
it is then judged by. `--checkpoint` loads the EMA denoiser of a `tools.tiny.train` edit checkpoint
(`<out>/train-state/edit.pt`) into DIR's edit pipeline; `--vae` first checks that the autoencoder alone
keeps the shape's colour of the background edits' target pictures. One JSON line per setting: fixed
follows / keeps shape / keeps the shape's colour / keeps the background, held-out follows and keeps, and
the colours a background edit moved the shape to, and the fixed edits followed per kind. MODEL_CARD.md quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusionInstructPix2PixPipeline

from tools.tiny import data, evaluate, phrasing
from tools.tiny.diffusers_types import Pipeline
from tools.tiny.judge import Judge

FIXED_SEED = 71_000
HELD_OUT_SEED = 71_001
# Picture seeds, apart from the evaluation's (2,000 and 7,000 onwards).
FIXED_PICTURES = 9_000
HELD_OUT_PICTURES = 9_500


@dataclass(frozen=True)
class Setting:
    guidance: float
    image_guidance: float
    steps: int


def parse_setting(text: str) -> Setting:
    """`G/IG/STEPS`, e.g. `6/2/20`."""
    try:
        guidance, image_guidance, steps = text.split("/")
        setting = Setting(float(guidance), float(image_guidance), int(steps))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not GUIDANCE/IMAGE_GUIDANCE/STEPS, e.g. 6/2/20"
        ) from None
    if setting.guidance < 0 or setting.image_guidance < 1 or setting.steps < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: guidance >= 0, image guidance >= 1, steps >= 1")
    return setting


def tuning_cases(n: int) -> tuple[list[evaluate.EditCase], list[evaluate.EditCase]]:
    """n edits in the training instruction form and n in the held-out phrasings, apart from the evaluation's."""
    fixed = evaluate._single_shape_edits(np.random.default_rng(FIXED_SEED), n, seed=FIXED_PICTURES)
    rng = np.random.default_rng(HELD_OUT_SEED)
    held_out = [
        replace(case, instruction=phrasing.instruct(rng, case.triple, held_out=True))
        for case in evaluate._single_shape_edits(rng, n, seed=HELD_OUT_PICTURES)
    ]
    return fixed, held_out


def colour_drift(cases: Sequence[evaluate.EditCase], colours: Sequence[str | None]) -> dict[str, int]:
    """What a background edit turned the shape's colour into, where it changed it ("yellow->orange": 2)."""
    drift: Counter[str] = Counter()
    for case, colour in zip(cases, colours, strict=True):
        spec, was = case.triple.spec, case.triple.before.shapes[0].colour
        if spec is not None and spec.kind is data.EditKind.BACKGROUND and colour != was:
            drift[f"{was}->{colour}"] += 1
    return dict(drift)


def follow_by_kind(cases: Sequence[evaluate.EditCase], verdicts: Sequence) -> dict[str, float]:
    """How often each kind of edit was followed ("recolour": 0.9, "background": 1.0): a fine-tune can trade
    one for the other and leave the overall share nearly as it was."""
    out = {}
    for kind in dict.fromkeys(c.triple.spec.kind for c in cases if c.triple.spec is not None):
        mine = [
            (c, v)
            for c, v in zip(cases, verdicts, strict=True)
            if c.triple.spec and c.triple.spec.kind is kind
        ]
        out[str(kind)] = round(evaluate.score_edits([c for c, _ in mine], [v for _, v in mine]).follow, 4)
    return out


def load(
    model: Path,
    checkpoint: Path | None,
    pipeline: Pipeline = StableDiffusionInstructPix2PixPipeline,
    folder: str = "edit",
) -> Pipeline:
    """`model/folder` as `pipeline` (a pipeline class), with the EMA denoiser of a training `checkpoint` in it if one is given."""
    pipe = pipeline.from_pretrained(model / folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    if checkpoint is not None:
        state = torch.load(checkpoint, weights_only=False)
        pipe.unet.load_state_dict(state["ema"]["unet"])
    return pipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=evaluate.DEFAULT_MODEL, help="folder holding edit/")
    parser.add_argument("--checkpoint", type=Path, default=None, help="an edit training checkpoint's EMA")
    parser.add_argument("--setting", type=parse_setting, action="append", help="G/IG/STEPS (repeatable)")
    parser.add_argument("--n", type=int, default=60, help="edits of each form (half background edits)")
    parser.add_argument("--vae", action="store_true", help="check the autoencoder's round trip first")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.n < 2 or args.threads < 1:
        parser.error("--n must be at least 2, --threads at least 1")
    torch.set_num_threads(args.threads)
    pipe, judge = load(args.model, args.checkpoint), Judge()
    fixed, held_out = tuning_cases(args.n)
    if args.vae:
        background = [c for c in fixed if c.triple.spec and c.triple.spec.kind is data.EditKind.BACKGROUND]
        round_trips = evaluate.reconstruct(pipe, [c.triple.after for c in background])
        kept = [
            judge.judge(im).colour == c.triple.before.shapes[0].colour
            for im, c in zip(round_trips, background, strict=True)
        ]
        print(json.dumps({"vae_keeps_shape_colour": round(float(np.mean(kept)), 4), "n": len(kept)}))
    defaults = evaluate.EvalOptions()
    for setting in args.setting or [Setting(defaults.edit_guidance, defaults.image_guidance, defaults.steps)]:
        clock = time.monotonic()
        options = replace(
            defaults,
            edit_guidance=setting.guidance,
            image_guidance=setting.image_guidance,
            steps=setting.steps,
        )
        verdicts = [judge.judge(im) for im in evaluate.edit(pipe, fixed, options)]
        score = evaluate.score_edits(fixed, verdicts)
        _, other = evaluate.edit_scores(pipe, held_out, judge, options)
        assert other is not None  # a pipeline was given
        print(
            json.dumps(
                {
                    "guidance": setting.guidance,
                    "image_guidance": setting.image_guidance,
                    "steps": setting.steps,
                    "follow": round(score.follow, 4),
                    "follow_by_kind": follow_by_kind(fixed, verdicts),
                    "keeps_shape": round(score.keeps_shape, 4),
                    "keeps_colour": evaluate._r(score.keeps_shape_colour),
                    "keeps_background": evaluate._r(score.keeps_background),
                    "held_out_follow": round(other.follow, 4),
                    "held_out_keeps_shape": round(other.keeps_shape, 4),
                    "held_out_keeps_colour": evaluate._r(other.keeps_shape_colour),
                    "drift": colour_drift(fixed, [v.colour for v in verdicts]),
                    "seconds": round(time.monotonic() - clock),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
