"""The persistent buttons as discord.py builds them: custom_ids within Discord's limits, parsed back to the job."""

# Async: discord.py 2.6 builds a View only inside a running event loop (as the bot always does).

from __future__ import annotations

import re
from typing import Any

import discord
import pytest

from bot.challenge_posts import submit_picker
from bot.views import DYNAMIC_ITEMS, progress_view, result_view
from inference.vocabulary import JobId

JOB = JobId("0123456789abcdef0123456789abcdef")


def rows(view: discord.ui.View) -> list[dict[str, Any]]:
    return view.to_components()


@pytest.mark.parametrize("count", [1, 2, 4, 8])
@pytest.mark.parametrize("from_upload", [False, True])
async def test_result_buttons_fit_discord_and_name_the_job(count: int, from_upload: bool) -> None:
    view = result_view(JOB, list(range(count)), from_upload=from_upload)
    components = rows(view)
    ids = [c["custom_id"] for row in components for c in row["components"]]
    assert len(components) <= 5 and all(len(row["components"]) <= 5 for row in components)
    assert len(ids) == len(set(ids)) and all(len(i) <= 100 and JOB in i for i in ids)
    actions = {i.split(":")[1] for i in ids}
    assert ("reroll" in actions) is not from_upload and ("submit" in actions) is not from_upload
    # Every id is matched back by exactly one of the registered DynamicItem templates.
    for custom_id in ids:
        matching = [
            item for item in DYNAMIC_ITEMS if re.fullmatch(item.__discord_ui_compiled_template__, custom_id)
        ]
        assert len(matching) == 1, custom_id


async def test_progress_and_picker_views() -> None:
    assert [c["custom_id"] for c in rows(progress_view(JOB))[0]["components"]] == [f"brushfire:cancel:{JOB}"]
    picker = rows(submit_picker(JOB, [0, 1, 2]))
    assert [c["custom_id"] for row in picker for c in row["components"]] == [
        f"brushfire:submit:{JOB}:{n}" for n in range(3)
    ]
