"""The pixel judge for tests: re-exports the one implementation in inference/tiny/judge.py."""

import logging

from tools.tiny.judge import Blob, Judge, Verdict, nearest_colour

log = logging.getLogger(__name__)

__all__ = ["Blob", "Judge", "Verdict", "nearest_colour"]
