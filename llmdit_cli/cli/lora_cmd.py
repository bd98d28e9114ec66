from __future__ import annotations

from typing import Annotated

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.output import Output

lora_app = typer.Typer(
    help="Inspect LoRA files and convert them between diffusers, ComfyUI and Kohya layouts.", no_args_is_help=True
)

LoraFileArg = Annotated[
    str, typer.Argument(help="A LoRA .safetensors file, or a PEFT adapter folder.", show_default=False)
]
FORMAT_HELP = (
    "diffusers: transformer.* lora_A/lora_B, strength folded into lora_B (loads at full strength in "
    "diffusers, ComfyUI and llmdit); comfyui: diffusion_model.* lora_A/lora_B with alpha tensors; "
    "kohya: lora_unet_* with the original checkpoint's names (fused qkv), lora_down/lora_up/alpha."
)


@lora_app.command("inspect")
@handle_errors
def inspect(file: LoraFileArg, json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False):
    """Show a LoRA file's layout, rank, alpha, target modules and the strength each loader applies.

    "strength" is relative to what the file means (its alpha tensors or adapter metadata): 1 is
    exact; any other number is how much stronger or weaker that loader makes it.
    """
    import json

    out = Output()
    info = _keys().summary(file)
    if json_out:
        out.data(json.dumps(info, indent=2, sort_keys=True))
        return
    for line in _lines(info):
        out.data(line)
    if any(v.get("loads") and v.get("ratio") != [1.0] for v in info["loaders"].values()):
        out.hint(
            f"a loader applies another strength than the file means: `llmdit lora convert {file} OUT "
            f"--to diffusers` writes a file every loader applies exactly"
        )


def _lines(info: dict) -> list[str]:
    rec = info["recorded"] or {}
    lines = [
        f"file: {info['file']}",
        f"layout: {info['layout']}",
        f"modules: {info['modules']}",
        f"targets: {', '.join(info['targets'])}",
        f"rank: {_join(info['rank'])}",
        f"alpha: {_join(info['alpha'])} (from {info['alpha_source']})",
        f"scale: {_join(info['scale'])}",
        f"dtype: {_join(info['dtype'])}",
    ]
    if rec:
        lines.append("recorded: " + ", ".join(f"{k} {v}" for k, v in sorted(rec.items())))
    lines.append("strength applied by each loader (1 = as the file means):")
    for loader, view in info["loaders"].items():
        value = _join(view["ratio"], "-") if view.get("loads") else "does not load"
        lines.append(f"  {loader}: {value}  ({view['note']})")
    return lines


def _join(values: list, sep: str = ", ") -> str:
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


@lora_app.command("convert")
@handle_errors
def convert(
    src: LoraFileArg,
    dst: Annotated[str, typer.Argument(help="Output .safetensors file.", show_default=False)],
    to: Annotated[str, typer.Option("--to", help=FORMAT_HELP, show_default=False)] = "diffusers",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No logs on stderr.")] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print a JSON object for the written file instead of its path.")
    ] = False,
):
    """Rewrite a LoRA file in another layout, keeping every module's weight change exactly.

    Reads diffusers/PEFT files (alpha from their adapter metadata), PEFT adapter folders, and
    Kohya/ComfyUI/LyCORIS-named files (alpha tensors; fused qkv). Prints the written path.

    Example: llmdit lora convert run/pytorch_lora_weights.safetensors my-lora.comfy.safetensors --to comfyui
    """
    keys = _keys()
    out = Output(quiet, json_out)
    out.stdout_is_binary = dst == "-"
    keys.check_format(to)  # before reading anything
    _check_destination(src, dst)
    lora = keys.read_lora(src)
    record = {
        "converted_from": lora.layout,
        **{k: v for k, v in (lora.info.get("llmdit") or {}).items() if k not in ("layout", "converted_from")},
    }
    keys.write_lora(lora, dst, to, record)
    out.log(f"{len(lora.pairs)} modules, {lora.layout} -> {to}")
    out.wrote(
        dst,
        "lora",
        prompt=None,
        seed=None,
        settings={
            "layout": to,
            "source": str(src),
            "source_layout": lora.layout,
            "modules": len(lora.pairs),
            "rank": lora.ranks(),
            **record,
        },
    )


def _keys():
    """The LoRA files these commands read and write: the default model family's (Z-Image)."""
    from llmdit_cli.families import DEFAULT_FAMILY, by_name

    return by_name(DEFAULT_FAMILY).lora_code()


def _check_destination(src, dst: str) -> None:
    """The converted file must not replace the one it is read from, and must be writable."""
    import os

    from llmdit_cli.artifacts import check_binary_target
    from llmdit_cli.errors import UsageError

    try:
        same = dst != "-" and os.path.exists(dst) and os.path.samefile(src, dst)
    except OSError:
        same = False
    if same:
        raise UsageError(f"{dst}: is the file being converted; give another output name")
    check_binary_target(dst)
