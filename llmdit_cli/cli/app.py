"""The root of the `llmdit` command: it only registers commands.

`main()` (the `llmdit` entry point) registers just the command being invoked when argv names one,
so `llmdit generate --help` neither imports nor converts the other commands' options (that work
is most of what help costs above Typer's own floor, see benchmarks/README.md). `app`, the full
tree, is built on first access for tests, completions and `llmdit --help`.
"""

from __future__ import annotations

import importlib
from typing import Annotated, Optional

import typer

from llmdit_cli import __version__

HELP = "Text-to-image with Z-Image and Qwen-Image: every stage runs alone, piped into the next, or in batch."
# name -> (module, attribute, is a group of subcommands)
COMMANDS = {
    "rewrite": ("llmdit_cli.cli.rewrite", "rewrite", False),
    "encode": ("llmdit_cli.cli.encode", "encode", False),
    "generate": ("llmdit_cli.cli.generate", "generate", False),
    "img2img": ("llmdit_cli.cli.generate", "img2img", False),
    "decode": ("llmdit_cli.cli.decode", "decode", False),
    "decompose": ("llmdit_cli.cli.layers_cmd", "decompose", False),
    "edit-layer": ("llmdit_cli.cli.layers_cmd", "edit_layer", False),
    "inspect": ("llmdit_cli.cli.inspect", "inspect", False),
    "train": ("llmdit_cli.cli.train", "train", False),
    "sweep": ("llmdit_cli.cli.sweep", "sweep", False),
    "compare": ("llmdit_cli.cli.compare", "compare", False),
    "serve": ("llmdit_cli.cli.serve", "serve", False),
    "config": ("llmdit_cli.cli.config_cmd", "config_app", True),
    "lora": ("llmdit_cli.cli.lora_cmd", "lora_app", True),
    "templates": ("llmdit_cli.cli.templates_cmd", "templates_app", True),
    "cache": ("llmdit_cli.cli.cache_cmd", "cache_app", True),
    "history": ("llmdit_cli.cli.history_cmd", "history_app", True),
}


def _version(value: bool) -> None:
    if value:
        print(f"llmdit {__version__}")
        raise typer.Exit()


def root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
):
    """Text-to-image with Z-Image and Qwen-Image: every stage runs alone, piped into the next, or in batch."""


def build_app(only: str | None = None, listing: bool = False) -> typer.Typer:
    """The command tree: every command, or only `only`. `listing`: the commands with their help
    but without their options, which is all `llmdit --help` shows (and half of what it costs)."""
    tree = typer.Typer(
        name="llmdit",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    tree.callback()(root)
    for name, (module, attr, group) in COMMANDS.items():
        if only not in (None, name):
            continue
        target = getattr(importlib.import_module(module), attr)
        if group:
            _compact_help(target)
            tree.add_typer(target, name=name)
        elif listing:
            tree.command(name, help=target.__doc__)(_listed)
        else:
            from llmdit_cli.cli.helpfmt import CompactHelp

            tree.command(name, cls=CompactHelp)(target)
    return tree


def _compact_help(group: typer.Typer) -> None:
    """A group's commands get the 80-column help too (cli/helpfmt.py)."""
    from llmdit_cli.cli.helpfmt import CompactHelp

    for info in group.registered_commands:
        # Typer fills in TyperCommand for a command registered without a class of its own.
        if info.cls in (None, typer.core.TyperCommand):
            info.cls = CompactHelp


def _listed() -> None:
    """Stands in for a command in the listing; main() never runs it (a named command is built whole)."""


def __getattr__(name: str):
    if name == "app":
        globals()["app"] = build_app()
        return globals()["app"]
    raise AttributeError(name)


def _invoked(argv: list[str]) -> str | None:
    """The command argv names first, if it is one of ours (options before it are the root's)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def _help_command(exc: BaseException) -> str:
    """`llmdit generate --help` for an error in parsing `generate` (the root's for one of the root)."""
    names = []
    ctx = getattr(exc, "ctx", None)
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["llmdit", *reversed(names), "--help"])


def main() -> None:
    """Entry point. Usage errors from parsing become one line, like every other llmdit error."""
    import sys

    name = _invoked(sys.argv[1:])
    tree = build_app(name) if name else build_app(listing=True)
    try:
        code = tree(standalone_mode=False)
    except SystemExit as exc:
        # Rich and Click exit 1 when help goes into a pipe whose reader is gone (`--help | head
        # -1`); a closed reader is not an error for a command-line tool. Any other exit (ours
        # raise theirs `from None`) stands as it is.
        broken = isinstance(exc.__context__, BrokenPipeError) and not exc.__suppress_context__
        if not (exc.code == 1 and broken):
            raise
        code = 0
    except typer.Abort:
        print("llmdit: error: interrupted", file=sys.stderr)
        code = 130
    except typer.TyperException as exc:
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        print(f"llmdit: error: {message.rstrip('.')} (see `{_help_command(exc)}`)", file=sys.stderr)
        code = getattr(exc, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)
