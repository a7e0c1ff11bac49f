"""The stored records the core hands to the layers above, named here so those layers never import storage.

They are defined once, with their tables, in `storage/`; the Discord layer and the cogs read them only
through the core's services.
"""

from __future__ import annotations

from storage.challenges import ChallengeRecord, EntryRecord, Phase, ResultRecord
from storage.generations import EXTENSIONS, GenerationRecord, ImageFormat, extension, image_format
from storage.guilds import MAX_IMAGES_PER_JOB, OUTPUT_FORMATS, GuildSettings, OutputFormat
from storage.jobs import JobRecord, JobState

__all__ = [
    "EXTENSIONS",
    "MAX_IMAGES_PER_JOB",
    "OUTPUT_FORMATS",
    "ChallengeRecord",
    "EntryRecord",
    "GenerationRecord",
    "GuildSettings",
    "ImageFormat",
    "JobRecord",
    "JobState",
    "OutputFormat",
    "Phase",
    "ResultRecord",
    "extension",
    "image_format",
]
