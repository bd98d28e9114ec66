"""Exception types that carry a one-line, user-facing message, and how messages name settings.

Library code raises these; the CLI layer (`cli/errors.py`) turns any exception into one line on
stderr and an exit code. A library message names a setting by its key, marked with `setting()`
(`generation.steps`, `slg.layers`, `model`); each front end renders the marks in its own terms:
the CLI as flags (`--steps`), a server as its request fields. `str(exc)` shows the plain keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable

_MARK = "\x1f"
_MARKED = re.compile(f"{_MARK}([^{_MARK}]+){_MARK}")


def setting(key: str) -> str:
    """A setting's key, marked so that a front end can rename it (see `render`)."""
    return f"{_MARK}{key}{_MARK}"


def render(text: str, name: Callable[[str], str] | None = None) -> str:
    """`text` with every marked setting key replaced by `name(key)` (default: the key itself)."""
    return _MARKED.sub(lambda m: (name or str)(m.group(1)), text)


def marked_keys(text: str) -> list[str]:
    """The setting keys marked in `text`, in order."""
    return _MARKED.findall(text)


class LlmditError(Exception):
    """Base for errors whose message is fit to show a user as is."""

    exit_code = 1

    def render(self, name: Callable[[str], str] | None = None) -> str:
        return render(str(self.args[0]) if self.args else "", name)

    def __str__(self) -> str:
        return self.render()


class UsageError(LlmditError):
    """A flag or argument value is wrong."""

    exit_code = 2


class InputError(LlmditError):
    """An input file or stream is missing, unreadable or of the wrong kind."""


class WriteError(InputError, OSError):
    """A file could not be written (its path named in the message); still an OSError, so code that
    goes on without a file it could not write (a cache) goes on as before."""


class ConfigError(LlmditError):
    """The config file or environment holds a bad value."""

    exit_code = 2


class ModelError(LlmditError):
    """A model reference cannot be resolved or loaded, or does not fit the input."""


class UnsupportedLora(InputError):
    """A file in a layout the family's LoRA reader does not convert (LoKr, DoRA, text-encoder weights, unknown
    key names); `llmdit generate --lora` then leaves it to diffusers' own loader."""
