from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import TemplatesDirOpt
from llmdit_cli.cli.output import Output

templates_app = typer.Typer(help="Prompt templates: list them, show one.", no_args_is_help=True)

CategoryOpt = Annotated[
    Optional[str], typer.Option("--category", "-c", help="Only this category (photography, portrait, rewriter, ...).")
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@templates_app.command("list")
@handle_errors
def list_templates(
    category: CategoryOpt = None,
    search: Annotated[
        Optional[str],
        typer.Option("--search", "-s", help="Only templates whose name or description holds this text."),
    ] = None,
    no_header: Annotated[bool, typer.Option("--no-header", help="Leave out the header row (for scripts).")] = False,
    templates_dir: TemplatesDirOpt = None,
    json_out: JsonFlag = False,
):
    """List the templates: built-ins and those in --templates-dir folders (which override built-ins by name).

    Example: llmdit templates list --category portrait --search neon
    """
    import json

    from llmdit_cli.errors import UsageError
    from llmdit_cli.prompt_templates import BUILTIN, available

    out = Output()
    every = available(_folders(templates_dir))
    found = [t for t in every.values() if category is None or category.lower() == t.meta.category.lower()]
    if category and not found:
        known = sorted({t.meta.category for t in every.values()})
        raise UsageError(f"--category {category}: no such category (there are: {', '.join(known)})")
    if search:
        needle = search.lower()
        found = [t for t in found if needle in t.name.lower() or needle in t.meta.description.lower()]
        if not found:
            out.hint(f"--search {search}: no template's name or description holds it")
    if json_out:
        rows = [
            {
                **t.meta.model_dump(exclude={"thinking_content", "assistant_content"}),
                "source": "built-in" if BUILTIN in t.source.parents else str(t.source),
                "sha256": t.sha256,
            }
            for t in found
        ]
        out.data(json.dumps(rows, indent=2))
        return
    width = max((len(t.name) for t in found), default=len("NAME"))
    if not no_header:
        out.data(f"{'NAME':<{width}}  {'CATEGORY':<18} DESCRIPTION")
    for t in found:
        out.data(f"{t.name:<{width}}  {t.meta.category:<18} {t.meta.description}")


@templates_app.command("show")
@handle_errors
def show(
    name: Annotated[str, typer.Argument(help="Template name.", show_default=False)],
    templates_dir: TemplatesDirOpt = None,
):
    """Print a template: its fields, then the system prompt it puts before your prompt.

    Example: llmdit templates show general-enhancer
    """
    from llmdit_cli.cli.output import plain_value
    from llmdit_cli.errors import UsageError
    from llmdit_cli.prompt_templates import find

    try:
        t = find(name, _folders(templates_dir))
    except UsageError as exc:  # the name is this command's argument, not a --template flag
        raise UsageError(exc.render(lambda key: "template")) from None
    out = Output()
    for key, value in t.meta.model_dump().items():
        if value is not None:
            out.data(f"{key}: {plain_value(value)}")
    out.data(f"source: {t.source}")
    out.data("")
    out.data(t.system)


def _folders(flag: list[str] | None) -> list[str]:
    """The user's template folders: --templates-dir, else the config file's `templates.dir` / env."""
    from llmdit_cli.cli.common import settings

    return list(settings(None, None, templates_dir=flag or None).settings.templates.dir)
