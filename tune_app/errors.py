"""Exception types for errors a user can cause.

Every message says what is wrong *and* what to change. The CLI prints the
message on one line and exits with status 2.
"""

from __future__ import annotations


class TuneAppError(Exception):
    """Base class for user-facing errors (bad input, impossible requests)."""


class SpaceError(TuneAppError):
    """A search-space file or SearchSpace is malformed."""


class ConfigError(TuneAppError):
    """A bad strategy, scheduler, option, budget or resource request."""


class TaskError(TuneAppError):
    """A task cannot be found, built or fed with data."""


class TrackingError(TuneAppError):
    """The MLflow tracking store cannot be used."""
