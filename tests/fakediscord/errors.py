"""Discord's error answers (status, JSON code and message) as exceptions the fake's routes raise."""

import logging
from typing import Any

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error Discord answers with: HTTP `status` and a JSON body `{"code", "message"}`."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.errors:
            data["errors"] = self.errors
        return data


class FakeDiscordError(Exception):
    """A test drove the fake wrongly (unknown command or option, nothing connected, timeout)."""


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_webhook() -> ApiError:
    return ApiError(404, 10015, "Unknown Webhook")


def invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


def unknown_interaction() -> ApiError:
    return ApiError(404, 10062, "Unknown interaction")


def already_acknowledged() -> ApiError:
    return ApiError(400, 40060, "Interaction has already been acknowledged.")


def cannot_dm() -> ApiError:
    return ApiError(403, 50007, "Cannot send messages to this user")


def invalid_form(field: str, problem: str) -> ApiError:
    errors = {field: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": problem}]}}
    return ApiError(400, 50035, f"Invalid Form Body: {field}: {problem}", errors)


def empty_message() -> ApiError:
    return ApiError(400, 50006, "Cannot send an empty message")


def too_large() -> ApiError:
    return ApiError(413, 40005, "Request entity too large")


class RateLimited(ApiError):
    """A 429 as Discord sends it (with `Via`, so discord.py waits `retry_after` and retries)."""

    def __init__(self, retry_after: float = 0.05) -> None:
        super().__init__(429, 0, "You are being rate limited.")
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return super().body() | {"retry_after": self.retry_after, "global": False}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after), "Via": "1.1 google", "X-RateLimit-Scope": "user"}


def unauthorized() -> ApiError:
    return ApiError(401, 0, "401: Unauthorized")
