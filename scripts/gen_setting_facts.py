"""Write the generated settings tables (run after changing a setting's default, choices, help
text or help panel):

- llmdit_cli/cli/setting_facts.py: the defaults and choices `--help` shows, from config.py;
- llmdit_cli/setting_help.py: each setting's help text and help panel as the CLI shows them, for
  what is not the CLI (the server's `/v1/llmdit/settings`, the studio page's sections)."""

import typing
from pathlib import Path
from pprint import pformat

from llmdit_cli.config import setting_facts

ROOT = Path(__file__).resolve().parents[1] / "llmdit_cli"
OUT = ROOT / "cli" / "setting_facts.py"
HELP_OUT = ROOT / "setting_help.py"
HEAD = '''"""Generated from config.py by scripts/gen_setting_facts.py; do not edit. Per flag name: the
setting's built-in default and its choices, for `--help` texts (`options.setting_option`)."""

'''
HELP_HEAD = '''"""Generated from the CLI's options by scripts/gen_setting_facts.py; do not edit. Per flag name:
the setting's help text and the help panel it is listed under (`PANELS`: the order `llmdit
generate --help` shows them, then the layer commands')."""

'''
LAYERED_PANEL = "Layers (decompose, edit-layer)"


def render() -> str:
    return HEAD + "FACTS = " + pformat(setting_facts(), width=100, sort_dicts=True) + "\n"


def option_help() -> tuple[dict[str, dict[str, str]], list[str]]:
    """Per flag name, {help, panel}; and the panels in `generate --help` order, layers last."""
    from llmdit_cli.cli import layers_cmd
    from llmdit_cli.cli.app import app  # noqa: F401 - registers every command's options
    from llmdit_cli.cli.generate import generate
    from llmdit_cli.cli.options import SETTING_OPTIONS

    aliases = dict(SETTING_OPTIONS)
    aliases.update(
        layered_layers=layers_cmd.LayersOpt,
        layered_resolution=layers_cmd.ResolutionOpt,
        layered_steps=layers_cmd.LayerStepsOpt,
        layered_true_cfg_scale=layers_cmd.TrueCfgOpt,
        layered_negative_prompt=layers_cmd.LayerNegativeOpt,
        layered_cfg_normalize=layers_cmd.CfgNormalizeOpt,
        layered_caption_language=layers_cmd.CaptionLanguageOpt,
        layered_model=layers_cmd.LayeredModelOpt,
        layered_edit_model=layers_cmd.EditModelOpt,
    )
    table = {}
    for name, alias in aliases.items():
        opt = typing.get_args(alias)[1]
        panel = LAYERED_PANEL if name.startswith("layered_") else opt.rich_help_panel
        table[name] = {"help": opt.help or "", "panel": panel or ""}
    panels = []
    for param in typing.get_type_hints(generate, include_extras=True).values():
        args = typing.get_args(param)
        panel = getattr(args[1], "rich_help_panel", None) if len(args) > 1 else None
        if panel and panel not in panels:
            panels.append(panel)
    return table, [*panels, LAYERED_PANEL]


def render_help() -> str:
    table, panels = option_help()
    return (
        HELP_HEAD
        + "PANELS = "
        + pformat(panels, width=100)
        + "\n\nHELP = "
        + pformat(table, width=100, sort_dicts=True)
        + "\n"
    )


if __name__ == "__main__":
    import subprocess

    OUT.write_text(render())
    HELP_OUT.write_text(render_help())
    subprocess.run(["ruff", "format", "-q", str(OUT), str(HELP_OUT)], check=False)  # as CI checks them
    print(OUT, HELP_OUT)
