"""Watches a text-to-image fine-tune on tuning prompts apart from the evaluation's.

Run `python -m tools.tiny.generate_tuning [--model DIR] [--checkpoint STATE] [--n 60] [--per-family 6]`.
The tuning prompts are built as the evaluation's, from other generators and picture seeds: `--n` canonical
captions of single shapes (`data.caption`, as the fixed set) and `--per-family` prompts of each held-out
phrasing family (`evaluate._paraphrase_cases`), so a checkpoint picked here is not picked on the figures it
is then judged by. `--checkpoint` loads the EMA denoiser of a `tools.tiny.train` unet checkpoint
(`<out>/train-state/unet.pt`) into DIR's generate pipeline. One JSON line: background / colour / shape of
both sets, the held-out colour per family and the commonest mistakes. MODEL_CARD.md quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoPipelineForText2Image

from tools.tiny import data, edit_tuning, evaluate
from tools.tiny.diffusers_types import Pipeline
from tools.tiny.judge import Judge

CAPTION_SEED = 72_000
HELD_OUT_SEED = 72_002
# Picture seeds, apart from the evaluation's (1,000, 4,000 and 5,000 onwards).
CAPTION_PICTURES = 20_000
HELD_OUT_PICTURES = 22_000


def tuning_cases(n: int, per_family: int) -> tuple[list[evaluate.PromptCase], list[evaluate.PromptCase]]:
    """n canonical captions and `per_family` held-out prompts of each family, apart from the evaluation's."""
    rng = np.random.default_rng(CAPTION_SEED)
    scenes = [data.sample_single_scene(rng) for _ in range(n)]
    captions = [evaluate.PromptCase(data.caption(s), CAPTION_PICTURES + i, s) for i, s in enumerate(scenes)]
    held_out = evaluate._paraphrase_cases(np.random.default_rng(HELD_OUT_SEED), per_family, HELD_OUT_PICTURES)
    return captions, held_out


def load(model: Path, checkpoint: Path | None) -> Pipeline:
    return edit_tuning.load(model, checkpoint, AutoPipelineForText2Image, "generate")


def summary(score: evaluate.PromptScore) -> list[float | None]:
    return [evaluate._r(score.background), round(score.colour, 4), round(score.shape, 4)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=evaluate.DEFAULT_MODEL, help="folder holding generate/")
    parser.add_argument("--checkpoint", type=Path, default=None, help="a unet training checkpoint's EMA")
    parser.add_argument("--n", type=int, default=60, help="canonical captions")
    parser.add_argument("--per-family", type=int, default=6, help="held-out prompts of each family")
    parser.add_argument("--steps", type=int, default=evaluate.EvalOptions.steps)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.n < 1 or args.per_family < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--n, --per-family, --steps and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    clock = time.monotonic()
    pipe, judge = load(args.model, args.checkpoint), Judge()
    captions, held_out = tuning_cases(args.n, args.per_family)
    options = evaluate.EvalOptions(steps=args.steps)
    fixed = evaluate.draw(pipe, captions, judge, options)
    other = evaluate.draw(pipe, held_out, judge, options)
    families = evaluate.per_family(held_out, other.verdicts)
    print(
        json.dumps(
            {
                "captions": summary(fixed.score),
                "held_out": summary(other.score),
                "held_out_colour": {name: family["colour"] for name, family in families.items()},
                "mistakes": fixed.score.mistakes[:4] + other.score.mistakes[:4],
                "seconds": round(time.monotonic() - clock),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
