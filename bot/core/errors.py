"""The errors whose messages are written for the person who asked: raised by the core, shown by any front end."""

from __future__ import annotations

from bot.core.i18n import LocalisedError


class BrushfireError(LocalisedError):
    """The root of every error whose message is written for the person who ran the command.

    Raised with an English template marked for the catalogue and its fields, never a finished sentence:
    `InvalidInput(N_("The seed must be between 0 and {max}, not {seed}."), max=..., seed=...)`. It knows
    nothing of Discord: the command tree (`bot.errors`) unwraps it from discord.py's `CommandInvokeError`
    and shows it in the member's language. Nothing is charged when one of these is raised before the job
    is submitted.
    """


class InvalidInput(BrushfireError):
    """A prompt, seed, count, strength or option the user typed is out of bounds."""


class BlockedContent(BrushfireError):
    """The prompt matches one of the server's blocked words or patterns."""


class UnknownStyle(BrushfireError):
    """The style named is not one of the presets."""


class BadAttachment(BrushfireError):
    """An attachment that is not a usable PNG, JPEG or WebP image, or is over the limits."""


class ChannelNotAllowed(BrushfireError):
    """The server limits brushfire to some channels and this is not one of them."""


class NotPermitted(BrushfireError):
    """The user may not do this (an admin command, or a button on someone else's job)."""


class QuotaRefused(BrushfireError):
    """Not enough credits (the message says what is left and when the next returns), or blocked."""


class WorkerDown(BrushfireError):
    """The inference worker cannot be reached or refused the job; the reservation is refunded."""


class JobNotFound(BrushfireError):
    """A button or command names a job the database does not know (or no longer has images for)."""


class JobFailed(BrushfireError):
    """The job ran but did not produce a result; the reservation is refunded."""
