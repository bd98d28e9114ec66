"""The root of the `llmdit` command: it only registers commands."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli import __version__
from llmdit_cli.cli.config_cmd import config_app
from llmdit_cli.cli.decode import decode
from llmdit_cli.cli.encode import encode
from llmdit_cli.cli.generate import generate, img2img
from llmdit_cli.cli.inspect import inspect
from llmdit_cli.cli.lora_cmd import lora_app
from llmdit_cli.cli.train import train

app = typer.Typer(
    name="llmdit",
    help="Text-to-image with Z-Image: every stage runs alone, piped into the next, or in batch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"llmdit {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Print the version and exit.")] = None):
    """Text-to-image with Z-Image: every stage runs alone, piped into the next, or in batch."""


app.command("encode")(encode)
app.command("generate")(generate)
app.command("img2img")(img2img)
app.command("decode")(decode)
app.command("inspect")(inspect)
app.command("train")(train)
app.add_typer(config_app, name="config")
app.add_typer(lora_app, name="lora")


def main() -> None:
    """Entry point. Usage errors from parsing become one line, like every other llmdit error."""
    import sys

    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print("llmdit: error: interrupted", file=sys.stderr)
        code = 130
    except typer.TyperException as exc:
        message = getattr(exc, "format_message", lambda: str(exc))()
        print(f"llmdit: error: {message} (see `llmdit COMMAND --help`)", file=sys.stderr)
        code = getattr(exc, "exit_code", 2)
    sys.exit(code if isinstance(code, int) else 0)
