"""`--help` that reads at 80 columns.

Typer's options table gives a switch's negative form (`--no-cache`) a column of its own and shows
types as `<bool>` or `<list[str]>`; with names like `--gradient-checkpointing-offload` that leaves
too little room at 80 columns and Rich cuts option names to `--gradient-checkp…`. Commands
registered with `CompactHelp` show the negative form in the switch's help instead, no type for a
switch, and a list's element type (the help says to repeat the option). Only the help changes:
the options parse as declared.

Help is plain text, shown as written. Typer's Rich help keeps every single line break of a
docstring's later paragraphs and then wraps each line again, so a docstring wrapped at 100
columns came out at 80 as a line and a fragment, a line and a fragment; and it reads help as
Rich markup, so `[rewriter]` vanished. `CompactHelp` hands Typer the docstring with each
paragraph joined into one line (`reflow`: list items, indented code lines and `\b` paragraphs
keep their lines) and every help text with its brackets escaped.
"""

from __future__ import annotations

import inspect
import re
from contextlib import contextmanager

import typer.core

# A line that stays a line of its own: a list item ("- x", "* x", "1. x") ...
_ITEM = re.compile(r"\s*(?:[-*\u2022]|\d+[.)])\s+\S")
# ... or a code line: indented, or a shell prompt.
_CODE = re.compile(r"\s|\$ ")


def reflow(text: str) -> str:
    """`text` (a docstring) with the lines of each paragraph joined into one, for the terminal to
    wrap at its width. List items and code lines (indented, or starting `$ `) keep their lines (a
    list item's indented continuation lines join it), and a paragraph whose first line is `\\b`
    (Click's mark) is kept as written, without the mark. What follows a line `\\f` is dropped."""
    text = inspect.cleandoc(text or "").partition("\f")[0]
    paragraphs = []
    for para in re.split(r"\n[ \t]*\n", text.strip("\n")):
        if para.startswith("\b"):
            # Typer reflows the first paragraph itself unless it keeps the mark.
            paragraphs.append(para if not paragraphs else para[1:].lstrip("\n"))
            continue
        paragraphs.append(_joined(para))
    return "\n\n".join(paragraphs)


def _joined(para: str) -> str:
    """One paragraph's lines joined: prose into one line, a list item's continuation (indented to
    its text) into the item; code lines and a deeper-indented block under an item stay."""
    lines: list[str] = []
    kinds: list[str] = []
    text_at = 0  # where the last item's text starts
    for line in para.splitlines():
        item = _ITEM.match(line)
        kind = "item" if item else "code" if _CODE.match(line) else "text"
        indent = len(line) - len(line.lstrip())
        # Prose joins prose; an item takes only lines indented to its text (an unindented line
        # after a list is the paragraph going on, not the last item).
        joins = kinds and (
            (kind == "text" and kinds[-1] == "text") or (kind == "code" and kinds[-1] == "item" and indent == text_at)
        )
        if joins:
            lines[-1] = f"{lines[-1].rstrip()} {line.strip()}"
            continue
        lines.append(line.rstrip())
        kinds.append(kind)
        if item:
            text_at = item.end() - 1
    return "\n".join(lines)


class CompactHelp(typer.core.TyperCommand):
    """A command whose help table has no column for negative switches, and whose help text is
    reflowed to the terminal's width and never read as Rich markup."""

    def format_help(self, ctx, formatter) -> None:
        params = self.get_params(ctx)
        with _compacted(params, ctx), _plain(self, params):
            super().format_help(ctx, formatter)


@contextmanager
def _plain(command, params: list):
    """While Typer's Rich help renders: the docstring reflowed, and no help text read as markup."""
    if not (typer.core.HAS_RICH and command.rich_markup_mode == "rich"):
        yield
        return
    from rich.markup import escape

    saved = [(p, p.help) for p in params if getattr(p, "help", None)]
    doc = command.help
    try:
        if doc:
            command.help = escape(reflow(doc))
        for p, help_text in saved:
            p.help = escape(help_text)
        yield
    finally:
        command.help = doc
        for p, help_text in saved:
            p.help = help_text


@contextmanager
def _compacted(params: list, ctx):
    saved = [(p, list(getattr(p, "secondary_opts", [])), p.help, p.metavar) for p in params]
    try:
        for p in params:
            _compact(p, ctx)
        yield
    finally:
        for p, secondary, help_text, metavar in saved:
            if hasattr(p, "secondary_opts"):
                p.secondary_opts = secondary
            p.help, p.metavar = help_text, metavar


def _compact(param, ctx) -> None:
    if getattr(param, "is_flag", False):
        negative = [o for o in getattr(param, "secondary_opts", []) if o.startswith("--")]
        param.secondary_opts = []
        if negative and negative[0] not in (param.help or ""):
            # A long negative form would be one word wider than the help column.
            off = f"{negative[0]}: off." if len(negative[0]) <= 24 else "Prefix --no- to switch off."
            param.help = f"{(param.help or '').rstrip()} {off}".strip()
        param.metavar = param.metavar or ""
        return
    if param.metavar is None and getattr(param, "multiple", False):
        shown = param.display_type(ctx) or ""
        if shown.startswith("<list[") and shown.endswith("]>"):
            param.metavar = f"<{shown[6:-2]}>"
