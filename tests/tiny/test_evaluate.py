"""`python -m tools.tiny.evaluate` on the bundled model: the figures the model card reports, last line JSON."""

from __future__ import annotations

import json

import pytest

from tools.tiny import evaluate

FIGURES = {"background_acc", "colour_acc", "shape_acc", "edit_follow", "edit_keeps_shape"}


def test_prints_the_figures_as_one_json_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate.main(["--n", "5", "--steps", "3", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert report.keys() >= FIGURES
    assert all(0.0 <= report[k] <= 1.0 for k in FIGURES)
    assert report["n"] == 5 and report["same_seed_equal"] is True


def test_fixed_cases_are_the_same_on_every_run() -> None:
    assert evaluate.prompt_cases(5) == evaluate.prompt_cases(5)
    assert [c.triple.instruction for c in evaluate.edit_cases(4)] == [
        c.triple.instruction for c in evaluate.edit_cases(4)
    ]
    kinds = {c.triple.kind for c in evaluate.edit_cases(4)}
    assert kinds == {evaluate.data.EditKind.RECOLOUR, evaluate.data.EditKind.BACKGROUND}
    assert all(" on " in p and p.split()[0] in ("two", "three") for p in evaluate.seed_prompts())


def test_a_missing_model_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(SystemExit, match="nothing"):
        evaluate.main(["--model", str(tmp_path / "nothing"), "--n", "5"])
