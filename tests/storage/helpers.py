"""Small shared helpers for storage and quota tests: a movable clock and a tiny valid PNG."""

from __future__ import annotations

import io
import sqlite3
from dataclasses import dataclass

from PIL import Image

from storage.db import Params, SyncTx

T0 = 1_800_000_000.0


@dataclass
class Clock:
    """A clock the test moves by hand, so windows and expiries pass without waiting."""

    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def png_bytes(color: tuple[int, int, int] = (200, 40, 40), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def fetch_one(tx: SyncTx, sql: str, params: Params = ()) -> sqlite3.Row:
    """The row of a query that always has one (a count, a pragma, a row the test wrote)."""
    row = tx.fetchone(sql, params)
    assert row is not None, f"no row for {sql}"
    return row
