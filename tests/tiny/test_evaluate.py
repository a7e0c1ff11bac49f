"""`python -m tools.tiny.evaluate` on the bundled model: the figures the model card reports, last line JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tools.tiny import data, evaluate, phrasing
from tools.tiny.judge import Blob, Verdict

FIGURES = {
    "background_acc",
    "colour_acc",
    "shape_acc",
    "edit_follow",
    "edit_keeps_shape",
    "para_background_acc",
    "para_colour_acc",
    "para_shape_acc",
    "para_edit_follow",
    "edit_keeps_colour",
    "on_form_acc",
    "positional_form_acc",
}


def test_prints_the_figures_as_one_json_line_last(capsys: pytest.CaptureFixture[str]) -> None:
    evaluate.main(["--n", "5", "--per-family", "1", "--steps", "3", "--threads", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    report = json.loads(lines[-1])
    assert report.keys() >= FIGURES
    assert all(0.0 <= report[k] <= 1.0 for k in FIGURES)
    assert report["n"] == 5 and report["same_seed_equal"] is True
    assert report["para_n"] == len(phrasing.Family)
    assert set(report["para_families"]) == {f.value for f in phrasing.Family}
    assert report["para_families"]["no_background"]["background"] is None


def test_fixed_cases_are_the_same_on_every_run() -> None:
    assert evaluate.prompt_cases(5) == evaluate.prompt_cases(5)
    assert [c.triple.instruction for c in evaluate.edit_cases(4)] == [
        c.triple.instruction for c in evaluate.edit_cases(4)
    ]
    kinds = {c.triple.kind for c in evaluate.edit_cases(4)}
    assert kinds == {data.EditKind.RECOLOUR, data.EditKind.BACKGROUND}
    assert all(" on " in p and p.split()[0] in ("two", "three") for p in evaluate.seed_prompts())


def test_paraphrase_sets_are_fixed_held_out_and_cover_every_family() -> None:
    cases = evaluate.paraphrase_cases(3)
    assert cases == evaluate.paraphrase_cases(3)
    assert {c.family for c in cases} == {f.value for f in phrasing.Family}
    assert {c.prompt for c in cases}.isdisjoint(c.prompt for c in evaluate.prompt_cases(100))
    edits = evaluate.paraphrase_edit_cases(6)
    assert [c.text for c in edits] == [c.text for c in evaluate.paraphrase_edit_cases(6)]
    assert all(c.text != c.triple.instruction for c in edits)


def test_on_and_positional_forms_ask_for_the_same_centred_scenes() -> None:
    on, positional = evaluate.on_form_cases(5)
    assert [c.truth for c in on] == [c.truth for c in positional]
    assert all(c.truth.position == "centre" for c in on)
    assert all(" on a" in c.prompt and "centre" not in c.prompt for c in on)
    assert all("in the centre of" in c.prompt for c in positional)


def _verdict(background: str, colour: str, shape: str) -> Verdict:
    """What the judge would report for one centred shape."""
    return Verdict(background, (Blob(colour, shape, 100, 0.5, 0.5, 0.3, 0.3, 0.9),))


def test_edit_scores_count_the_colour_an_edit_did_not_name() -> None:
    cases = evaluate.edit_cases(4)
    verdicts = []
    for case in cases:
        before, spec = case.triple.before, case.triple.spec
        assert spec is not None, "an edit case always says what it changes"
        shape = before.shapes[0]
        if spec.kind is data.EditKind.BACKGROUND:
            # Followed, but the shape changed colour as well.
            verdicts.append(_verdict(spec.value, "white" if shape.colour != "white" else "black", shape.kind))
        else:
            verdicts.append(_verdict(before.background, spec.value, shape.kind))
    score = evaluate.score_edits(cases, verdicts)
    assert score.follow == 1.0 and score.keeps_shape == 1.0
    assert score.keeps_shape_colour == 0.0 and score.keeps_background == 1.0


def test_a_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="nothing"):
        evaluate.main(["--model", str(tmp_path / "nothing"), "--n", "5"])
