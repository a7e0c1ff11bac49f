"""All repositories over one database, built together so the bot can hold them as one typed attribute."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from storage.audit import AuditRepo
from storage.db import Database
from storage.generations import GenerationsRepo
from storage.guilds import GuildsRepo
from storage.jobs import JobsRepo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Repositories:
    """Quota policy and the ledger are reached through `bot.core.quotas.service.QuotaService`, not from here."""

    guilds: GuildsRepo
    jobs: JobsRepo
    generations: GenerationsRepo
    audit: AuditRepo

    @classmethod
    def build(cls, db: Database, clock: Callable[[], float] = time.time) -> Repositories:
        return cls(
            guilds=GuildsRepo(db, clock),
            jobs=JobsRepo(db, clock),
            generations=GenerationsRepo(db, clock),
            audit=AuditRepo(db),
        )
