"""One output object: data on stdout, logs / progress / hints on stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager


def plain_value(value) -> str:
    """A value as the YAML-like views print it: JSON's spelling (true, null, [1, 2]), text as it
    is unless it would read as something else there (empty, a JSON word or number, edge spaces,
    several lines): then quoted."""
    import json

    if not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    try:
        json.loads(value)
        ambiguous = True  # "true", "12", "null", "[1]" would read as those values
    except ValueError:
        ambiguous = value != value.strip() or not value or "\n" in value
    return json.dumps(value, ensure_ascii=False) if ambiguous else value


def _flags(message: str) -> str:
    from llmdit_cli.cli.errors import in_flags

    return in_flags(message) if "\x1f" in message else message


class Output:
    """`json=True`: each written file is reported as one JSON object (a line) instead of its path."""

    def __init__(self, quiet: bool = False, json: bool = False):
        self.quiet = quiet
        self.json = json
        self._console = None
        self.stdout_is_binary = False  # set once a binary stream went to stdout

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True, highlight=False)
        return self._console

    def data(self, line: str) -> None:
        """A line of data (e.g. a written path) on stdout, or stderr once stdout carries binary data."""
        if self.stdout_is_binary:
            self.log(line)
        else:
            print(line, file=sys.stdout, flush=True)

    def wrote(self, path: str, kind: str, **fields) -> None:
        """Report a written file: its path (human mode; nothing for stdout) or a JSON record with
        `path`, `kind` and `fields` (prompt, seed, settings, ...)."""
        if not self.json:
            if path != "-":
                self.data(path)
            return
        import json

        line = json.dumps({"path": path, "kind": kind, **fields}, sort_keys=True, default=str)
        # With binary data on stdout the records go to stderr, whatever --quiet says.
        print(line, file=sys.stderr if self.stdout_is_binary else sys.stdout, flush=True)

    def log(self, message: str) -> None:
        if not self.quiet:
            self.console.print(_flags(message), markup=False)

    def hint(self, message: str) -> None:
        """A hint from the CLI or the library; settings the library names by key show as flags."""
        if not self.quiet:
            self.console.print(f"hint: {_flags(message)}", style="dim", markup=False)

    @contextmanager
    def progress(self, description: str, total: int):
        """A Rich progress bar with elapsed time and ETA on stderr; yields `advance(done, total, info="")`."""
        if self.quiet:
            yield lambda done, total_, info="": None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total, info="")
            yield lambda done, total_, info="": bar.update(task, completed=done, total=total_, info=info)

    @contextmanager
    def status(self, message: str):
        if self.quiet:
            yield
            return
        with self.console.status(message):
            yield
