"""Where images go (output path planning; console output is `cli/output.py`): one path, a folder,
'-', or a pattern with {index}, {seed}, {slug}."""

from __future__ import annotations

from pathlib import Path

from llmdit_cli.artifacts import STDIO, check_binary_target
from llmdit_cli.errors import UsageError
from llmdit_cli.prompts import slug

DEFAULT_PATTERN = "{slug}-{seed}.png"
FOLDER_PATTERN = "{index:03d}_{seed}_{slug}.png"


def plan_paths(output: str | None, items: list[tuple[int, int, str]]) -> list[str]:
    """One path per (index, seed, prompt); checks everything before any work is done."""
    n = len(items)
    if output is not None and not output.strip():
        raise UsageError(f"-o {output!r}: give a file name, a folder or a pattern")
    if output == STDIO:
        if n != 1:
            raise UsageError(f"-o -: {n} images cannot go to stdout; give a pattern or a folder")
        check_binary_target(output)
        return [STDIO]
    if output is None:
        pattern = DEFAULT_PATTERN
    elif output.endswith(("/", "\\")) or _is_dir(output):
        pattern = str(Path(output) / FOLDER_PATTERN)
    elif "{" in output:
        pattern = output
    elif n > 1:
        raise UsageError(f"-o {output}: {n} images need a folder or a pattern with {{index}}, {{seed}} or {{slug}}")
    else:
        return _writable([output])
    try:
        paths = [pattern.format(index=i, seed=s, slug=slug(p)) for i, s, p in items]
    except (KeyError, IndexError, ValueError) as exc:
        raise UsageError(f"-o {pattern}: bad pattern ({exc}); use {{index}}, {{seed}}, {{slug}}") from None
    if len(set(paths)) != len(paths):
        raise UsageError(f"-o {pattern}: several images would get the same name; add {{index}}")
    return _writable(paths)


def _writable(paths: list[str]) -> list[str]:
    for path in paths:
        check_binary_target(path)
    return paths


def _is_dir(path: str) -> bool:
    try:
        return Path(path).is_dir()
    except OSError:  # not searchable: `check_binary_target` says so, naming the path
        return False
