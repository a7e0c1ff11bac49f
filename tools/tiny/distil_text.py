"""Teach the bundled model's text encoder to read prompts as people write them, by distillation.

The shipped denoisers (text-to-image and edit) draw well from captions and instructions written in the
grammar they were trained on ("a large red circle in the centre of a white background", "make the
background green"), and poorly from anything else. Retraining them from scratch on many phrasings needs
the whole machine for hours; this script instead trains only a new text encoder (and its word-level
tokenizer, `lexicon.make_tokenizer`), with both denoisers frozen:

    student(phrasing) -> denoiser -> prediction   ~   teacher(canonical caption) -> denoiser -> prediction

For each picture a fresh phrasing is drawn from the training phrasings (`phrasing.describe` /
`phrasing.instruct`), and the student is pushed to make each frozen denoiser predict, for the same
noisy latent and step, what it predicts when the frozen shipped encoder reads the canonical caption of
the same scene (`data.caption`) or the canonical instruction of the same edit. A smaller term pulls the
prediction to the true noise, so where the teacher is wrong the student is not held to it. One student
serves both denoisers (each step has a caption half and an instruction half), so the two pipelines keep
sharing one encoder byte for byte. The student starts as a copy of the shipped encoder, each word's
embedding the mean of its old BPE pieces' embeddings, so on the grammar's own captions it starts where
the shipped model is.

Held-out templates, openings, fillers and synonyms (`phrasing.HELD_OUT_*`) are never drawn here: only
`describe` and `instruct(held_out=False)` write the student's text.

    python -m tools.tiny.distil_text --model inference/tiny/model --minutes 40 --threads 1 --out OUT
    python -m tools.tiny.evaluate --model OUT
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

from tools.tiny import data, lexicon, phrasing
from tools.tiny.diffusers_types import Denoiser, NoiseScheduler, Vae

log = logging.getLogger("tools.tiny.distil_text")

EDIT_MIX = {
    data.EditKind.RECOLOUR: 0.35,
    data.EditKind.BACKGROUND: 0.35,
    data.EditKind.MOVE: 0.075,
    data.EditKind.RESIZE: 0.075,
    data.EditKind.ADD: 0.075,
    data.EditKind.REMOVE: 0.075,
}


@dataclass
class Options:
    model: Path
    out: Path
    minutes: float
    steps: int | None
    threads: int
    batch: int
    lr: float
    truth_weight: float
    seed: int
    init: Path | None
    late_steps: float


@dataclass
class Teacher:
    tokenizer: Any  # whatever AutoTokenizer loads from the teacher's folder (word level or CLIP BPE)
    encoder: CLIPTextModel
    unet: Denoiser
    edit_unet: Denoiser
    vae: Vae


def load_teacher(model: Path) -> Teacher:
    def unet(folder: str) -> Denoiser:
        net: Denoiser = UNet2DConditionModel.from_pretrained(
            model / folder / "unet", torch_dtype=torch.float32
        )
        net.requires_grad_(False).eval()
        return net

    encoder = CLIPTextModel.from_pretrained(model / "generate" / "text_encoder", torch_dtype=torch.float32)
    encoder.requires_grad_(False).eval()
    vae: Vae = AutoencoderKL.from_pretrained(model / "generate" / "vae", torch_dtype=torch.float32)
    vae.requires_grad_(False).eval()
    return Teacher(
        tokenizer=AutoTokenizer.from_pretrained(model / "generate" / "tokenizer"),
        encoder=encoder,
        unet=unet("generate"),
        edit_unet=unet("edit"),
        vae=vae,
    )


def make_student(teacher: Teacher, tokenizer: PreTrainedTokenizerFast) -> CLIPTextModel:
    """The shipped encoder with a word-level vocabulary: each word starts as the mean of its old pieces."""
    old = teacher.encoder
    config = CLIPTextConfig(
        **{
            **old.config.to_dict(),
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    )
    student = CLIPTextModel(config)
    state = {k: v for k, v in old.state_dict().items() if "token_embedding" not in k}
    missing, unexpected = student.load_state_dict(state, strict=False)
    assert not unexpected and all("token_embedding" in k for k in missing), (missing, unexpected)
    old_embeddings, new_embeddings = old.get_input_embeddings(), student.get_input_embeddings()
    assert isinstance(old_embeddings, nn.Embedding) and isinstance(new_embeddings, nn.Embedding)
    old_table, new_table = old_embeddings.weight.detach(), new_embeddings.weight
    with torch.no_grad():
        for word, index in tokenizer.get_vocab().items():
            if word == lexicon.START:
                pieces = [teacher.tokenizer.bos_token_id]
            elif word == lexicon.END:
                pieces = [teacher.tokenizer.eos_token_id]
            elif word == lexicon.UNKNOWN:
                pieces = []
            else:
                pieces = teacher.tokenizer(word, add_special_tokens=False).input_ids
            new_table[index] = old_table[pieces].mean(dim=0) if pieces else old_table.mean(dim=0)
    return student


def token_ids(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    return tokenizer(
        texts, padding="max_length", max_length=lexicon.MAX_TOKENS, truncation=True, return_tensors="pt"
    ).input_ids


def encode(vae: Vae, images: list) -> torch.Tensor:
    pixels = torch.from_numpy(np.stack([data.to_array(im) for im in images])).permute(0, 3, 1, 2)
    with torch.no_grad():
        return vae.encode(pixels).latent_dist.mode()


@dataclass
class Batch:
    latents: torch.Tensor  # scaled target latents
    condition: torch.Tensor | None  # the edit's input picture latent (unscaled), or None
    teacher_text: list[str]
    student_text: list[str]


def caption_batch(rng: np.random.Generator, teacher: Teacher, n: int) -> Batch:
    scenes = [data.sample_scene(rng, centre_bias=True) for _ in range(n)]
    teacher_text, student_text = [], []
    for scene in scenes:
        if rng.random() < 0.08:  # the unconditional branch of classifier-free guidance stays as it was
            teacher_text.append("")
            student_text.append("")
            continue
        teacher_text.append(data.caption(scene))
        student_text.append(phrasing.describe(rng, scene))
    latents = encode(teacher.vae, [data.render(s) for s in scenes]) * teacher.vae.config.scaling_factor
    return Batch(latents, None, teacher_text, student_text)


def edit_batch(rng: np.random.Generator, teacher: Teacher, n: int) -> Batch:
    kinds = list(EDIT_MIX)
    weights = np.array(list(EDIT_MIX.values()))
    triples = [
        data.sample_edit(rng, kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]) for _ in range(n)
    ]
    teacher_text, student_text = [], []
    for triple in triples:
        if rng.random() < 0.08:
            teacher_text.append("")
            student_text.append("")
            continue
        teacher_text.append(triple.instruction)
        student_text.append(phrasing.instruct(rng, triple))
    before = encode(teacher.vae, [data.render(t.before) for t in triples])
    after = encode(teacher.vae, [data.render(t.after) for t in triples]) * teacher.vae.config.scaling_factor
    return Batch(after, before, teacher_text, student_text)


def distil_loss(
    student: CLIPTextModel,
    student_tokenizer: PreTrainedTokenizerFast,
    teacher: Teacher,
    unet: Denoiser,
    batch: Batch,
    *,
    scheduler: NoiseScheduler,
    truth_weight: float,
    late_steps: float = 1.0,
) -> torch.Tensor:
    noise = torch.randn_like(batch.latents)
    # With late_steps > 1 the noisier steps are drawn more often: there the layout and the colours are
    # decided, which is what the words choose; the last, quiet steps only sharpen edges.
    uniform = torch.rand(batch.latents.shape[0]) ** (1.0 / late_steps)
    steps = (uniform * (scheduler.config.num_train_timesteps - 1)).round().long()
    noisy = scheduler.add_noise(batch.latents, noise, steps)
    if batch.condition is not None:
        noisy = torch.cat([noisy, batch.condition], dim=1)
    with torch.no_grad():
        target = unet(
            noisy, steps, teacher.encoder(token_ids(teacher.tokenizer, batch.teacher_text))[0]
        ).sample
    states = student(token_ids(student_tokenizer, batch.student_text))[0]
    prediction = unet(noisy, steps, states).sample
    return F.mse_loss(prediction, target) + truth_weight * F.mse_loss(prediction, noise)


def noise_scheduler() -> NoiseScheduler:
    """The shipped denoisers' training schedule (Stable Diffusion's scaled-linear betas, epsilon prediction)."""
    return DDPMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
    )


def export(options: Options, student: CLIPTextModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Copy the shipped pipelines to `out` with the student encoder and the word-level tokenizer."""
    for part in ("generate", "edit"):
        folder = options.out / part
        if folder.exists():
            shutil.rmtree(folder)
        shutil.copytree(options.model / part, folder)
        shutil.rmtree(folder / "text_encoder")
        shutil.rmtree(folder / "tokenizer")
        student.save_pretrained(folder / "text_encoder", safe_serialization=True)
        tokenizer.save_pretrained(folder / "tokenizer")
        index_file = folder / "model_index.json"
        index = json.loads(index_file.read_text())
        index["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
        index_file.write_text(json.dumps(index, indent=2) + "\n")
    log.info("exported to %s", options.out)


def run(options: Options) -> dict[str, float]:
    torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    teacher = load_teacher(options.model)
    tokenizer = lexicon.make_tokenizer()
    if options.init is not None:  # go on from an earlier run's student (its exported generate/ folder)
        student = CLIPTextModel.from_pretrained(options.init / "generate" / "text_encoder")
    else:
        student = make_student(teacher, tokenizer)
    ema = copy.deepcopy(student).requires_grad_(False)
    scheduler = noise_scheduler()
    optimiser = torch.optim.AdamW(student.parameters(), lr=options.lr, weight_decay=0.0)
    budget = options.minutes * 60.0
    started = time.monotonic()
    step, losses = 0, []
    last_save = started
    while True:
        elapsed = time.monotonic() - started
        done = step / options.steps if options.steps else elapsed / budget
        if done >= 1.0:
            break
        lr = options.lr * (min(1.0, step / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * done))))
        for group in optimiser.param_groups:
            group["lr"] = lr
        half = options.batch // 2
        loss = distil_loss(
            student,
            tokenizer,
            teacher,
            teacher.unet,
            caption_batch(rng, teacher, half),
            scheduler=scheduler,
            truth_weight=options.truth_weight,
            late_steps=options.late_steps,
        )
        loss = loss + distil_loss(
            student,
            tokenizer,
            teacher,
            teacher.edit_unet,
            edit_batch(rng, teacher, half),
            scheduler=scheduler,
            truth_weight=options.truth_weight,
            late_steps=options.late_steps,
        )
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimiser.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), student.parameters(), strict=True):
                e.lerp_(p, 1 - 0.995)
        losses.append(float(loss.detach()))
        step += 1
        if step % 25 == 0:
            log.info(
                "step %d  %.1f min  loss %.4f  lr %.2e", step, elapsed / 60, float(np.mean(losses[-25:])), lr
            )
        if time.monotonic() - last_save > 300:
            export(options, ema, tokenizer)
            last_save = time.monotonic()
    export(options, ema, tokenizer)
    stats = {
        "steps": step,
        "minutes": round((time.monotonic() - started) / 60, 1),
        "loss": float(np.mean(losses[-50:])),
    }
    (options.out / "distil-stats.json").write_text(json.dumps(stats) + "\n")
    return stats


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path("inference/tiny/model"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=48)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--truth-weight", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument(
        "--init", type=Path, default=None, help="an earlier run's output folder to go on from"
    )
    parser.add_argument("--late-steps", type=float, default=1.0, help=">1 draws noisier steps more often")
    return Options(**vars(parser.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    options = parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(options)))


if __name__ == "__main__":
    main()
