"""`python -m tools.tiny.generate_tuning`: tuning prompts apart from the evaluation's, one JSON line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tools.tiny import evaluate, generate_tuning, phrasing


def test_tuning_prompts_are_apart_from_the_evaluations() -> None:
    captions, held_out = generate_tuning.tuning_cases(100, 10)
    assert len(captions) == 100 and len(held_out) == 10 * len(phrasing.Family)
    judged = evaluate.prompt_cases(100) + evaluate.paraphrase_cases(30)
    on, positional = evaluate.on_form_cases(50)
    judged += on + positional
    assert not {c.seed for c in captions + held_out} & {c.seed for c in judged}
    # Scenes repeat by chance in a grammar this small; a tuning case is never an evaluation case.
    assert not {(c.prompt, c.truth) for c in captions + held_out} & {(c.prompt, c.truth) for c in judged}
    assert {c.family for c in held_out} == {f.value for f in phrasing.Family}
    assert all(c.family == "caption" for c in captions)


def test_prints_one_json_line_and_reads_a_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = {"ema": {"unet": generate_tuning.load(evaluate.DEFAULT_MODEL, None).unet.state_dict()}}
    torch.save(state, tmp_path / "unet.pt")
    argv = ["--n", "2", "--per-family", "1", "--steps", "2"]
    generate_tuning.main(argv)
    generate_tuning.main([*argv, "--checkpoint", str(tmp_path / "unet.pt")])
    first, second = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    # The checkpoint holds the bundled denoiser itself, so it draws exactly the same pictures.
    assert {k: v for k, v in first.items() if k != "seconds"} == {
        k: v for k, v in second.items() if k != "seconds"
    }
    assert len(first["held_out_colour"]) == len(phrasing.Family)
    assert all(0.0 <= x <= 1.0 for x in first["captions"] + first["held_out"] if x is not None)
    with pytest.raises(SystemExit):
        generate_tuning.main(["--n", "0"])
