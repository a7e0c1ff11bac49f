"""A fixed few of bench/tools_inpaint.py's cases on the bundled model, through the worker's engine: vary region
shows what was asked and keeps the rest, zoom out keeps the centre and paints the border, pan extends the
canvas. The 100-case figures are the bench's (MODEL_CARD.md, "Inpainting"); this keeps them from rotting."""

from __future__ import annotations

import pytest

from bench.tools_inpaint import load_engine, measure_inpaint


@pytest.mark.timeout(600)
def test_the_first_cases_of_the_bench_pass() -> None:
    figures = measure_inpaint(load_engine(), cases=8)
    assert figures["cases"] == {"region": 8, "zoom": 4, "pan": 2}
    assert figures["region_follow"] >= 0.75
    assert figures["region_outside_mad"] <= 2
    assert figures["zoom_keep_mad"] < 4
    assert figures["zoom_border_background"] >= 0.75 and figures["zoom_border_noise"] < 20
    assert figures["pan_extends"] == 1.0
