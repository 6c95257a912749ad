"""Exception types for errors a user can cause.

Every message says what is wrong *and* what to change. The CLI prints the
message on one line and exits with status 2.
"""

from __future__ import annotations

MAX_MESSAGE = 1000  # characters: an echoed input must not flood the terminal


class TuneAppError(Exception):
    """Base class for user-facing errors (bad input, impossible requests).

    The message is cut to :data:`MAX_MESSAGE` characters (an error that quotes a
    huge input value stays one readable line).
    """

    def __init__(self, message: str = "", *args: object) -> None:
        text = str(message)
        if len(text) > MAX_MESSAGE:
            text = f"{text[:MAX_MESSAGE]}... ({len(text) - MAX_MESSAGE:,} more characters)"
        super().__init__(text, *args)


class SpaceError(TuneAppError):
    """A search-space file or SearchSpace is malformed."""


class ConfigError(TuneAppError):
    """A bad strategy, scheduler, option, budget or resource request."""


class TaskError(TuneAppError):
    """A task cannot be found, built or fed with data."""


class TrackingError(TuneAppError):
    """The MLflow tracking store cannot be used."""
