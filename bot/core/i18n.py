"""The core's side of localisation: texts for members are marked English templates with fields, never
finished sentences, so the front end can show them in each reader's language (`bot.i18n` translates)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


def N_(text: str) -> str:
    """Mark an English text for the catalogue where it is written; it is translated later, where the
    reader's language is known (the core raises and returns texts that the Discord layer translates)."""
    return text


@dataclass(frozen=True, slots=True)
class Message:
    """A text for a member before it is in their language: the English template and its `{fields}`.

    A field's value may itself be a Message (e.g. "the {what} is empty" with what=N_("prompt")): it is
    translated into the same language first. Any other value (a prompt, a name, a number) is left as it is.
    """

    template: str
    params: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, text: str | Message, /, **params: object) -> Message:
        return text if isinstance(text, Message) else cls(text, params)

    def __str__(self) -> str:
        """The English text (for logs, the command line and anyone without a catalogue)."""
        fields = {k: str(v) if isinstance(v, Message) else v for k, v in self.params.items()}
        return self.template.format(**fields) if fields else self.template


class LocalisedError(Exception):
    """An error whose message is written for a member: it keeps the English template and its fields
    so that the front end shows it in the member's language; `message` is the English text (for logs)."""

    def __init__(self, text: str | Message, /, **params: object) -> None:
        self.text = Message.of(text, **params)
        self.message = str(self.text)
        super().__init__(self.message)
