"""The bot's error tree. Each is rendered once for Slack (bot/blocks.py) and once for the console.

    GardenBotError                    message_key + params, translated where it is shown
    ├── UsageError                    bad or missing arguments; the reply carries the usage line
    ├── NotAllowed                    the asker's role or the approver rules refuse it
    ├── NotFound                      no such backup, job, approval, incident
    ├── Conflict                      already running, already decided, expired
    ├── StoreUnavailable              the bot's own PostgreSQL or Redis cannot be reached
    ├── TargetUnreachable             the operated system (garden_dx, its Redis, its API) cannot be reached
    ├── RunbookFailed                 the operation ran and failed
    └── ConfigError                   bad configuration at start-up (names the key)

Anything else that escapes is unexpected: the operator sees a short correlation id, the log the traceback.
"""

from __future__ import annotations

from typing import Any


class GardenBotError(Exception):
    """Base of every error the bot renders to an operator."""

    exit_code = 1
    status = "failed"

    def __init__(self, message_key: str, /, **params: Any) -> None:
        super().__init__(message_key)
        self.message_key = message_key
        self.params = params

    def __str__(self) -> str:
        if not self.params:
            return self.message_key
        details = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.message_key} ({details})"


class UsageError(GardenBotError):
    """The request could not be understood; the usage line of the command goes with it."""

    exit_code = 2
    status = "refused"

    def __init__(self, message_key: str, /, *, usage: str = "", **params: Any) -> None:
        super().__init__(message_key, **params)
        self.usage = usage


class NotAllowed(GardenBotError):
    exit_code = 2
    status = "refused"


class NotFound(GardenBotError):
    exit_code = 2
    status = "refused"


class Conflict(GardenBotError):
    exit_code = 2
    status = "refused"


class StoreUnavailable(GardenBotError):
    """The bot's own store is down: read-only commands go on, mutating ones are refused."""

    exit_code = 2
    status = "refused"


class TargetUnreachable(GardenBotError):
    exit_code = 1
    status = "failed"


class RunbookFailed(GardenBotError):
    exit_code = 1
    status = "failed"


class ConfigError(Exception):
    """Start-up stops on this with one line naming the key."""

    def __init__(self, key: str, expected: str) -> None:
        super().__init__(f"configuration error: {key}: {expected}")
        self.key = key
        self.expected = expected
