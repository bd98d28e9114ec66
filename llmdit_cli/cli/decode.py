from __future__ import annotations

from typing import Annotated

import typer

from llmdit_cli.cli.common import model_flags, settings
from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    ConfigOpt,
    DecodeModelOpt,
    DeviceOpt,
    DtypeOpt,
    JsonOpt,
    OutputOpt,
    ProfileOpt,
    QuietOpt,
    VaeDeviceOpt,
    VaeTileOverlapOpt,
    VaeTileSizeOpt,
    VaeTilingOpt,
)
from llmdit_cli.cli.output import Output

LatentsArg = Annotated[
    str,
    typer.Argument(
        help="A latents file from --save-latents of generate or decompose ('-' for stdin).", show_default=False
    ),
]


@handle_errors
def decode(
    latents: LatentsArg,
    output: OutputOpt = None,
    model: DecodeModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    vae_tiling: VaeTilingOpt = None,
    vae_tile_size: VaeTileSizeOpt = None,
    vae_tile_overlap: VaeTileOverlapOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Decode a latents file to PNG images with the model's VAE.

    The model defaults to the one recorded in the file; the PNGs carry the settings that made the
    latents, so they match what `generate` would have written directly. Layered latents
    (`decompose --save-latents`) become the layer folder `decompose` writes (-o names the folder).

    Example: llmdit decode circle.latents.safetensors -o circle.png
    """
    from llmdit_cli.artifacts import read_stage, write_bytes_atomic
    from llmdit_cli.engine import DecodeRequest, Engine
    from llmdit_cli.errors import InputError
    from llmdit_cli.paths import plan_paths
    from llmdit_cli.pngmeta import png_bytes

    out = Output(quiet, json_out)
    out.stdout_is_binary = output == "-"
    stage = read_stage(latents)
    if stage.kind == "embeds":
        raise InputError(
            f"{stage.source}: holds embeds, but latents are expected here (give it to `llmdit generate --from-embeds`)"
        )
    r = settings(
        config,
        profile,
        **model_flags(model or stage.meta.get("llmdit.model") or None, dtype, device, None, None, vae_device, None),
        vae_tiling=vae_tiling,
        vae_tile_size=vae_tile_size,
        vae_tile_overlap=vae_tile_overlap,
    )
    if stage.kind == "layered-latents":
        from llmdit_cli.cli.layers_cmd import decode_layered

        return decode_layered(stage, output, r, out)
    tensor = stage.tensors()["latents"]  # parse_stage checked it is there and 4-D
    images = stage.params.get("images") or [{} for _ in range(tensor.shape[0])]
    paths = plan_paths(output, [(i, s.get("seed", 0), s.get("prompt", "image")) for i, s in enumerate(images)])
    decoded = Engine().decode(DecodeRequest(r, tensor, stage.source), out)
    for img, settings_record, path in zip(decoded, images, paths):
        write_bytes_atomic(path, png_bytes(img, settings_record))
        out.wrote(
            path,
            "image",
            prompt=settings_record.get("prompt"),
            seed=settings_record.get("seed"),
            settings=settings_record,
        )
