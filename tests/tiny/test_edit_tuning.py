"""`python -m tools.tiny.edit_tuning`: tuning edits apart from the evaluation's, one JSON line per setting."""

from __future__ import annotations

import argparse
import json

import pytest

from tools.tiny import data, edit_tuning, evaluate
from tools.tiny.judge import Judge


def test_tuning_edits_are_apart_from_the_evaluations() -> None:
    fixed, held_out = edit_tuning.tuning_cases(40)
    assert len(fixed) == len(held_out) == 40
    tuning = {(c.triple.before, c.triple.after, c.seed) for c in fixed + held_out}
    judged = {(c.triple.before, c.triple.after, c.seed) for c in evaluate.edit_cases(100)}
    judged |= {(c.triple.before, c.triple.after, c.seed) for c in evaluate.paraphrase_edit_cases(100)}
    assert not tuning & judged
    assert not {c.seed for c in fixed + held_out} & {c.seed for c in evaluate.edit_cases(100)}
    kinds = [c.triple.spec.kind for c in fixed if c.triple.spec is not None]
    assert kinds.count(data.EditKind.BACKGROUND) == kinds.count(data.EditKind.RECOLOUR) == 20
    assert all(c.instruction for c in held_out) and not any(c.instruction for c in fixed)


def test_settings_are_parsed_or_refused() -> None:
    assert edit_tuning.parse_setting("6/2.5/20") == edit_tuning.Setting(6.0, 2.5, 20)
    for bad in ("6/2", "a/b/c", "6/0.5/20", "6/2/0"):
        with pytest.raises(argparse.ArgumentTypeError):
            edit_tuning.parse_setting(bad)


def test_colour_drift_counts_only_background_edits_that_moved_the_colour() -> None:
    fixed, _ = edit_tuning.tuning_cases(4)
    kept = [c.triple.before.shapes[0].colour for c in fixed]
    assert edit_tuning.colour_drift(fixed, kept) == {}
    moved = ["red" if c != "red" else "blue" for c in kept]
    drift = edit_tuning.colour_drift(fixed, moved)
    assert sum(drift.values()) == 2  # two of the four are background edits; recolours are not counted


def test_prints_one_json_line_per_setting(capsys: pytest.CaptureFixture[str]) -> None:
    edit_tuning.main(["--n", "2", "--setting", "6/2/2", "--setting", "4/2.5/2", "--vae"])
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert lines[0]["n"] == 1 and 0.0 <= lines[0]["vae_keeps_shape_colour"] <= 1.0
    assert [(r["guidance"], r["image_guidance"], r["steps"]) for r in lines[1:]] == [
        (6.0, 2.0, 2),
        (4.0, 2.5, 2),
    ]
    assert all(0.0 <= r["follow"] <= 1.0 and 0.0 <= r["held_out_follow"] <= 1.0 for r in lines[1:])
    assert all(set(r["follow_by_kind"]) == {"recolour", "background"} for r in lines[1:])


def test_follow_by_kind_splits_the_fixed_edits() -> None:
    fixed, _ = edit_tuning.tuning_cases(4)
    # Judged as if every picture were left as it was: no recolour is followed, a background edit neither.
    verdicts = [Judge().judge(data.render(c.triple.before)) for c in fixed]
    assert edit_tuning.follow_by_kind(fixed, verdicts) == {"recolour": 0.0, "background": 0.0}
    verdicts = [Judge().judge(data.render(c.triple.after)) for c in fixed]
    assert edit_tuning.follow_by_kind(fixed, verdicts) == {"recolour": 1.0, "background": 1.0}
