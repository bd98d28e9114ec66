"""`decompose` (Qwen-Image-Layered) and `edit-layer` (Qwen-Image-Edit-Plus): an image split into
RGBA layers in a folder, and the layers edited, restacked and exported (`layerstack.py`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.common import model_flags, settings
from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    G_GEN,
    G_MODEL,
    G_OUT,
    ConfigOpt,
    CpuOffloadOpt,
    DeviceOpt,
    DitDeviceOpt,
    DtypeOpt,
    JsonOpt,
    ProfileOpt,
    QuietOpt,
    TextEncoderDeviceOpt,
    VaeDeviceOpt,
)
from llmdit_cli.cli.output import Output

G_STACK = "Stack"

ImageArg = Annotated[str, typer.Argument(help="Image to split into layers ('-' for stdin).", show_default=False)]
LayersOpt = Annotated[
    Optional[str],
    typer.Option(
        "--layers",
        "-l",
        help="Number of layers, 2 to 10 (default 4), or auto: one per colour region of the image, 2 to 8.",
        rich_help_panel=G_GEN,
        show_default=False,
    ),
]
ResolutionOpt = Annotated[
    Optional[int],
    typer.Option(
        "--resolution",
        help="Working size bucket: 640 (recommended, default) or 1024 pixels a side, at the image's aspect ratio.",
        rich_help_panel=G_GEN,
    ),
]
LayerStepsOpt = Annotated[
    Optional[int],
    typer.Option(
        "--steps", "-s", help="Denoising steps (default: 50 decompose, 40 edit-layer).", rich_help_panel=G_GEN
    ),
]
TrueCfgOpt = Annotated[
    Optional[float],
    typer.Option(
        "--true-cfg-scale",
        help="True classifier-free guidance scale (default 4.0); 1 or less runs without the negative prompt.",
        rich_help_panel=G_GEN,
    ),
]
LayerNegativeOpt = Annotated[
    Optional[str],
    typer.Option("--negative-prompt", "-n", help="Negative prompt for true CFG (default ' ').", rich_help_panel=G_GEN),
]
LayerSeedOpt = Annotated[
    Optional[int],
    typer.Option("--seed", help="Seed. Default: a random seed (printed and recorded).", rich_help_panel=G_GEN),
]
PromptOpt = Annotated[
    Optional[str],
    typer.Option(
        "--prompt",
        "-p",
        help="What the image shows. Default: the model's own caption of the image (up to 512 tokens).",
        rich_help_panel=G_GEN,
    ),
]
CfgNormalizeOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--cfg-normalize/--no-cfg-normalize",
        help="Rescale the guided prediction to the norm of the conditional one (default on, as the model card runs).",
        show_default=False,
        rich_help_panel=G_GEN,
    ),
]
CaptionLanguageOpt = Annotated[
    Optional[str],
    typer.Option(
        "--caption-language", help="Language of the automatic caption: en (default) or zh.", rich_help_panel=G_GEN
    ),
]
LayeredModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--layered-model",
        help="Hub id or local folder of a Qwen-Image-Layered model. Default: Qwen/Qwen-Image-Layered.",
        rich_help_panel=G_MODEL,
    ),
]
EditModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--edit-model",
        help="Hub id or local folder of a Qwen-Image-Edit-Plus model (Qwen/Qwen-Image-Edit-2509, default, or -2511).",
        rich_help_panel=G_MODEL,
    ),
]
FolderOutOpt = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        help="New (or empty) folder for the layers. Default: IMAGE-NAME-layers.",
        rich_help_panel=G_OUT,
    ),
]
LayeredLatentsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--save-latents",
        help="Also write the layered latents to this .safetensors file ('-' for stdout); `llmdit decode` turns it into the layers.",
        rich_help_panel=G_OUT,
    ),
]
LayersDirArg = Annotated[str, typer.Argument(help="A layer folder from `llmdit decompose`.", show_default=False)]
InstructionArg = Annotated[
    Optional[str], typer.Argument(help='What to change in the layer, e.g. "make it blue".', show_default=False)
]
LayerOpt = Annotated[
    Optional[int], typer.Option("--layer", help="The layer to edit (0 = layer_00.png).", rich_help_panel=G_GEN)
]
RecomposeOpt = Annotated[
    bool, typer.Option("--recompose", help="Rebuild composite.png from the layers.", rich_help_panel=G_STACK)
]
OrderOpt = Annotated[
    Optional[str],
    typer.Option("--order", help="New stack order, bottom first, e.g. 2,0,1.", rich_help_panel=G_STACK),
]
HideOpt = Annotated[
    Optional[list[int]],
    typer.Option("--hide", help="Leave layer N out of the composite; repeat for several.", rich_help_panel=G_STACK),
]
ShowOpt = Annotated[
    Optional[list[int]],
    typer.Option("--show", help="Put hidden layer N back; repeat for several.", rich_help_panel=G_STACK),
]
ExportOpt = Annotated[
    Optional[str],
    typer.Option(
        "--export",
        help="Also write the stack as one file: ora (OpenRaster, for GIMP and Krita) or tiff (one page per visible layer).",
        rich_help_panel=G_OUT,
    ),
]
ExportPathOpt = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        help="Path of the --export file. Default: LAYERS_DIR/layers.ora (.tiff).",
        rich_help_panel=G_OUT,
    ),
]


@handle_errors
def decompose(
    image: ImageArg,
    output: FolderOutOpt = None,
    layers: LayersOpt = None,
    resolution: ResolutionOpt = None,
    prompt: PromptOpt = None,
    caption_language: CaptionLanguageOpt = None,
    steps: LayerStepsOpt = None,
    true_cfg_scale: TrueCfgOpt = None,
    negative_prompt: LayerNegativeOpt = None,
    cfg_normalize: CfgNormalizeOpt = None,
    seed: LayerSeedOpt = None,
    save_latents: LayeredLatentsOpt = None,
    layered_model: LayeredModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    cpu_offload: CpuOffloadOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Split an image into RGBA layers with Qwen-Image-Layered.

    Writes a folder: layer_00.png (bottom) ... as RGBA PNGs, composite.png
    (the layers stacked) and layers.json (order, size, settings, the source
    image's SHA-256). Edit the layers with `llmdit edit-layer`. On CUDA the
    model's components wait on the CPU between uses unless --cpu-offload
    says otherwise (the transformer alone is ~41 GB in bf16).

    Example: llmdit decompose photo.png --layers 4 -o photo-layers/
    """
    from pathlib import Path

    from llmdit_cli.artifacts import check_binary_target, read_bytes, write_layered_latents_file
    from llmdit_cli.engine import DecomposeRequest, Engine
    from llmdit_cli.layerstack import check_target_folder, sha256_of
    from llmdit_cli.pngmeta import image_from_bytes
    from llmdit_cli.workflows import latents_identity

    out = Output(quiet, json_out)
    out.stdout_is_binary = save_latents == "-"
    placement = model_flags(None, dtype, device, text_encoder_device, dit_device, vae_device, cpu_offload)
    r = _layer_settings(
        config,
        profile,
        "layered.model",
        placement,
        layered_layers=_layer_count(layers),
        layered_resolution=resolution,
        layered_caption_language=caption_language,
        layered_steps=steps,
        layered_true_cfg_scale=true_cfg_scale,
        layered_negative_prompt=negative_prompt,
        layered_cfg_normalize=cfg_normalize,
        layered_model=layered_model,
    )
    data, name = read_bytes(image, "an image")
    picture = image_from_bytes(data, name).convert("RGBA")
    folder = output or f"{'image' if image == '-' else Path(image).stem}-layers"
    check_target_folder(folder)
    if save_latents:
        check_binary_target(save_latents)
    seed = _seed(seed, out)
    engine = Engine()
    req = DecomposeRequest(r, picture, seed, prompt or "", keep_latents=bool(save_latents))
    result = engine.decompose(req, out)
    source = {"file": name, "sha256": sha256_of(data), "size": list(picture.size)}
    if save_latents:
        handle, _ = engine.model(r, "layer decomposition")
        width, height = result.layers[0].size
        params = {"settings": result.settings, "source": source}
        write_layered_latents_file(save_latents, result.latents, latents_identity(handle), height, width, params)
        out.wrote(save_latents, "layered-latents", settings=result.settings)
    _write_folder(out, folder, result.layers, result.settings, source)


def _write_folder(out: Output, folder: str, layers: list, record_settings: dict, source: dict) -> None:
    from llmdit_cli import __version__
    from llmdit_cli.layerstack import new_record, write_new_folder

    record = new_record(len(layers), layers[0].size, record_settings, source, __version__)
    path = write_new_folder(folder, layers, record)
    out.wrote(str(path), "layers", layers=[e["file"] for e in record["layers"]], settings=record_settings)


def decode_layered(stage, output: str | None, r, out: Output) -> None:
    """`llmdit decode` of a layered latents file: the layer folder `decompose` would have written."""
    from pathlib import Path

    from llmdit_cli.engine import Engine, LayersDecodeRequest
    from llmdit_cli.layerstack import check_target_folder

    folder = output or f"{'latents' if stage.source == 'stdin' else Path(stage.source).name.split('.')[0]}-layers"
    check_target_folder(folder)
    layers = Engine().decode_layers(LayersDecodeRequest(r, stage.tensors()["latents"], stage.source), out)
    _write_folder(out, folder, layers, stage.params.get("settings", {}), stage.params.get("source", {}))


@handle_errors
def edit_layer(
    layers_dir: LayersDirArg,
    instruction: InstructionArg = None,
    layer: LayerOpt = None,
    steps: LayerStepsOpt = None,
    true_cfg_scale: TrueCfgOpt = None,
    negative_prompt: LayerNegativeOpt = None,
    seed: LayerSeedOpt = None,
    recompose: RecomposeOpt = False,
    order: OrderOpt = None,
    hide: HideOpt = None,
    show: ShowOpt = None,
    export: ExportOpt = None,
    output: ExportPathOpt = None,
    edit_model: EditModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    cpu_offload: CpuOffloadOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Edit a layer of a `decompose` folder with Qwen-Image-Edit-Plus, or restack.

    With --layer N and an instruction, the layer's colours are edited (true
    CFG) and its alpha is put back exactly; the old file stays as
    layer_0N.v1.png (.v2, ...) and layers.json records the edit. --order,
    --hide and --show change the stack. The composite is rebuilt after every
    change (--recompose alone just rebuilds it). --export writes one layered
    file that GIMP and Krita open.

    Example: llmdit edit-layer photo-layers/ --layer 1 "make it blue"
    """
    from llmdit_cli.engine import Engine
    from llmdit_cli.layerstack import export as write_export
    from llmdit_cli.layerstack import locked, read_stack, restack

    out = Output(quiet, json_out)
    out.stdout_is_binary = output == "-"
    stack = read_stack(layers_dir)
    new_order = _check_stack_args(stack, instruction, layer, recompose, order, hide or [], show or [], export, output)
    r = None
    if instruction is not None:
        placement = model_flags(None, dtype, device, text_encoder_device, dit_device, vae_device, cpu_offload)
        r = _layer_settings(
            config,
            profile,
            "layered.edit_model",
            placement,
            layered_steps=steps,
            layered_true_cfg_scale=true_cfg_scale,
            layered_negative_prompt=negative_prompt,
            layered_edit_model=edit_model,
        )
        stack.image(layer)  # the layer readable before the model is fetched
    with locked(stack.folder):
        stack = read_stack(layers_dir)  # as it is now that this process holds the lock
        if instruction is not None:
            _edit(Engine(), stack, layer, instruction, r, _seed(seed, out), out)
        restack(stack, new_order, hide or [], show or [])
        images = stack.images()
        out.wrote(str(stack.write_composite(images)), "composite", order=stack.order, hidden=stack.hidden)
        if export:
            path = output or str(stack.folder / f"layers.{export}")
            write_export(stack, images, export, path)
            out.wrote(path, export)


def _check_stack_args(stack, instruction, layer, recompose, order, hide, show, export, output) -> list[int] | None:
    """Every edit-layer argument checked against the stack before anything loads; the new order."""
    from llmdit_cli.errors import UsageError
    from llmdit_cli.layerstack import EXPORTS, parse_order

    if (instruction is None) != (layer is None):
        raise UsageError('an edit needs both --layer N and an instruction, e.g. --layer 1 "make it blue"')
    if not (instruction or recompose or order or hide or show or export):
        raise UsageError(
            "nothing to do: give --layer N and an instruction, or --recompose, --order, --hide, --show, --export"
        )
    if instruction is not None and not instruction.strip():
        raise UsageError("the instruction is empty")
    if export is not None and export not in EXPORTS:
        raise UsageError(f"--export {export}: expected one of {', '.join(EXPORTS)}")
    if output and not export:
        raise UsageError("-o names the --export file; give --export ora or --export tiff")
    for flag, indices in (("--layer", [] if layer is None else [layer]), ("--hide", hide), ("--show", show)):
        for i in indices:
            stack.check_index(i, flag)
    both = sorted(set(hide) & set(show))
    if both:
        raise UsageError(f"--hide {both[0]} and --show {both[0]}: give one of them")
    return parse_order(order, stack.count) if order else None


def _edit(engine, stack, i: int, instruction: str, r, seed: int, out: Output) -> None:
    """Layer `i`'s RGB edited, its alpha put back exactly, the file replaced with its old version kept."""
    kept, record = engine.edit_stack_layer(stack, i, instruction, r, seed, out)
    out.log(f"layer {i}: previous version kept as {kept}")
    out.wrote(str(stack.path(i)), "layer", layer=i, kept=kept, settings=record)


def _seed(seed: int | None, out: Output) -> int:
    from llmdit_cli.workflows import seeds_for

    if seed is None:
        seed = seeds_for(None, 1)[0]
        out.log(f"seed {seed} (random; pass --seed to choose)")
    return seed


def _layer_count(text: str | None) -> int | str | None:
    """--layers: a whole number (the settings check its range) or auto."""
    from llmdit_cli.errors import UsageError

    if text is None or text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--layers {text}: expected a number of layers (2 to 10) or auto") from None


def _layer_settings(config, profile, model_key: str, placement: dict, **flags):
    """Settings for a layer command, run by the model that setting `model_key` names."""
    from llmdit_cli.workflows import layer_plan

    return layer_plan(settings(config, profile, **placement, **flags), model_key)
