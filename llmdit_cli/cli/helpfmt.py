"""`--help` that reads at 80 columns.

Typer's options table gives a switch's negative form (`--no-cache`) a column of its own and shows
types as `<bool>` or `<list[str]>`; with names like `--gradient-checkpointing-offload` that leaves
too little room at 80 columns and Rich cuts option names to `--gradient-checkp…`. Commands
registered with `CompactHelp` show the negative form in the switch's help instead, no type for a
switch, and a list's element type (the help says to repeat the option). Only the help changes:
the options parse as declared.
"""

from __future__ import annotations

from contextlib import contextmanager

import typer.core


class CompactHelp(typer.core.TyperCommand):
    """A command whose help table has no column for negative switches."""

    def format_help(self, ctx, formatter) -> None:
        with _compacted(self.get_params(ctx), ctx):
            super().format_help(ctx, formatter)


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
