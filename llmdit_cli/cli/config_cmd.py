from __future__ import annotations

import typer

from llmdit_cli.cli.common import settings
from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import Annotated, ConfigOpt, ModelOpt, ProfileOpt
from llmdit_cli.cli.output import Output

config_app = typer.Typer(help="Show the resolved settings and where they come from.", no_args_is_help=True)


@config_app.command("show")
@handle_errors
def show(
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    model: ModelOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
):
    """Print every setting after layering defaults < config profile < LLMDIT_* env < flags.

    Settings left to the model family (size, steps, guidance, shift) show that family's value.
    """
    import json
    import os

    from llmdit_cli.families import identify_ref
    from llmdit_cli.workflows import fill_family_defaults

    out = Output()
    r = settings(config, profile, model=model)
    family, variant = identify_ref(r["model"])
    r = fill_family_defaults(r, family.defaults(variant), variant)
    if json_out:
        out.data(
            json.dumps(
                {
                    "config_file": str(r.config_path) if r.config_path else None,
                    "profile": r.profile,
                    "settings": {k: {"value": v, "source": r.sources[k]} for k, v in r.values.items()},
                },
                indent=2,
            )
        )
        return
    if r.config_path:
        out.data(f"# config file: {r.config_path}   profile: {r.profile}")
    else:  # say where it looked, so a user knows where to put one
        from llmdit_cli.config import default_config_path

        out.data(
            f"# config file: none at {os.environ.get('LLMDIT_CONFIG') or default_config_path()}   profile: {r.profile}"
        )
    width = max(len(k) for k in r.values)
    for key, value in r.values.items():
        out.data(f"{key:<{width}} = {json.dumps(value)}   # {r.sources[key]}")
