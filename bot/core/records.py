"""The stored records the core hands to the layers above, named here so those layers never import storage.

They are defined once, with their tables, in `storage/`; the Discord layer and the cogs read them only
through the core's services.
"""

from __future__ import annotations

from storage.challenges import ChallengeRecord, EntryRecord, Phase, ResultRecord
from storage.generations import GenerationRecord
from storage.guilds import MAX_IMAGES_PER_JOB, GuildSettings
from storage.jobs import JobRecord, JobState

__all__ = [
    "MAX_IMAGES_PER_JOB",
    "ChallengeRecord",
    "EntryRecord",
    "GenerationRecord",
    "GuildSettings",
    "JobRecord",
    "JobState",
    "Phase",
    "ResultRecord",
]
