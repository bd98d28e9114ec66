"""Exception types that carry a one-line, user-facing message.

Library code raises these; the CLI layer (`cli/errors.py`) turns any exception into one line on
stderr and an exit code.
"""


class LlmditError(Exception):
    """Base for errors whose message is fit to show a user as is."""

    exit_code = 1


class UsageError(LlmditError):
    """A flag or argument value is wrong."""

    exit_code = 2


class InputError(LlmditError):
    """An input file or stream is missing, unreadable or of the wrong kind."""


class ConfigError(LlmditError):
    """The config file or environment holds a bad value."""

    exit_code = 2


class ModelError(LlmditError):
    """A model reference cannot be resolved or loaded, or does not fit the input."""
