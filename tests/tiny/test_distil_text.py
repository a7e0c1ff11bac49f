"""The text-encoder distillation (tools/tiny/distil_text.py): its student starts where its teacher is, a step
moves only the student, and what it exports loads as the bundled pipelines do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPTextModel

from tools.tiny import distil_text, lexicon

MODEL = Path(__file__).resolve().parents[2] / "inference" / "tiny" / "model"


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def teacher() -> distil_text.Teacher:
    return distil_text.load_teacher(MODEL)


@torch.no_grad()
def test_the_student_starts_as_the_teacher(teacher: distil_text.Teacher) -> None:
    tokenizer = lexicon.make_tokenizer()
    student = distil_text.make_student(teacher, tokenizer)
    texts = ["a large red circle in the centre of a white background", "make the background green", ""]
    expected = teacher.encoder(distil_text.token_ids(teacher.tokenizer, texts))[0]
    got = student(distil_text.token_ids(tokenizer, texts))[0]
    torch.testing.assert_close(got, expected)


def test_a_step_trains_the_student_only_and_the_export_loads(
    teacher: distil_text.Teacher, tmp_path: Path
) -> None:
    tokenizer = lexicon.make_tokenizer()
    student = distil_text.make_student(teacher, tokenizer)
    before = [p.detach().clone() for p in student.parameters()]
    unet_before = [p.detach().clone() for p in teacher.unet.parameters()]
    rng = np.random.default_rng(0)
    scheduler = distil_text.noise_scheduler()
    loss = distil_text.distil_loss(
        student,
        tokenizer,
        teacher,
        teacher.edit_unet,
        distil_text.edit_batch(rng, teacher, 2),
        scheduler=scheduler,
        truth_weight=0.25,
        late_steps=2.0,
    ) + distil_text.distil_loss(
        student,
        tokenizer,
        teacher,
        teacher.unet,
        distil_text.caption_batch(rng, teacher, 2),
        scheduler=scheduler,
        truth_weight=0.25,
    )
    loss.backward()  # type: ignore[no-untyped-call]
    torch.optim.SGD(student.parameters(), lr=0.1).step()
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(unet_before, teacher.unet.parameters(), strict=True))
    assert all(p.grad is None for p in teacher.unet.parameters())

    options = distil_text.parse_args(["--model", str(MODEL), "--out", str(tmp_path)])
    distil_text.export(options, student, tokenizer)
    for part in ("generate", "edit"):
        loaded = CLIPTextModel.from_pretrained(tmp_path / part / "text_encoder")
        for a, b in zip(loaded.parameters(), student.parameters(), strict=True):
            torch.testing.assert_close(a, b.detach())
        shipped_tokenizer = AutoTokenizer.from_pretrained(tmp_path / part / "tokenizer")
        text = "Draw a zorblax RED ball, on a gray backdrop!"
        assert shipped_tokenizer(text).input_ids == tokenizer(text).input_ids
        assert lexicon.UNKNOWN in shipped_tokenizer.tokenize(text)
