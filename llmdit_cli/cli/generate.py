from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.common import settings
from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    G_PROMPT,
    REMOTE_KEY_ENV,
    AssistantOpt,
    AttentionBackendOpt,
    BatchSizeOpt,
    CacheDirOpt,
    CacheOpt,
    CaptionFillOpt,
    CaptionLengthOpt,
    CfgNormOpt,
    CfgTruncOpt,
    CompileOpt,
    ConfigOpt,
    ControlImageOpt,
    ControlModelOpt,
    ControlScaleOpt,
    CpuOffloadOpt,
    DeviceOpt,
    DitDeviceOpt,
    DtypeOpt,
    DypeBaseResOpt,
    DypeExponentOpt,
    DypeMethodOpt,
    DypeOpt,
    DypeScaleOpt,
    DypeStartSigmaOpt,
    EnableThinkingOpt,
    EncoderUrlOpt,
    FileOpt,
    FromEmbedsOpt,
    GuidanceOpt,
    HeightOpt,
    HiddenLayerOpt,
    JsonOpt,
    LongPromptModeOpt,
    LoraOpt,
    MaskOpt,
    MaxLengthOpt,
    ModelOpt,
    NegativeOpt,
    NumImagesOpt,
    OutputOpt,
    ProfileOpt,
    PromptsArg,
    QuantizeOpt,
    QuietOpt,
    RemoteKeyEnvOpt,
    SaveLatentsOpt,
    SeedOpt,
    ShiftOpt,
    SlgLayersOpt,
    SlgOpt,
    SlgScaleOpt,
    SlgStartOpt,
    SlgStopOpt,
    StepCacheOpt,
    StepCacheThresholdOpt,
    StepsOpt,
    StrengthOpt,
    SystemPromptOpt,
    TemplateOpt,
    TemplatesDirOpt,
    TextEncoderDeviceOpt,
    ThinkingOpt,
    TransformerFileOpt,
    VaeDeviceOpt,
    VaeTileOverlapOpt,
    VaeTileSizeOpt,
    VaeTilingOpt,
    VlAlphaOpt,
    VlBlendModeOpt,
    VlDeviceOpt,
    VlHiddenLayerOpt,
    VlImageOpt,
    VlModelOpt,
    VlTokensOpt,
    WidthOpt,
)
from llmdit_cli.cli.output import Output

FromPngOpt = Annotated[
    Optional[str],
    typer.Option(
        "--from-png",
        help="Regenerate from the settings stored in a PNG made by llmdit (flags given override them).",
        rich_help_panel=G_PROMPT,
    ),
]
ImageOpt = Annotated[Optional[str], typer.Option("--image", "-i", help="Input image.", rich_help_panel=G_PROMPT)]
FromLatentsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--from-latents",
        help="Start from a latents file (from --save-latents; '-' for stdin) instead of an image.",
        rich_help_panel=G_PROMPT,
    ),
]


# `generate` and `img2img` take every setting option (`options.SETTING_OPTIONS`; a test checks
# none is missing), then the config and output switches. `ctx.params` is every parameter by name.


@handle_errors
def generate(
    ctx: typer.Context,
    prompts: PromptsArg = None,
    file: FileOpt = None,
    from_embeds: FromEmbedsOpt = None,
    from_png: FromPngOpt = None,
    output: OutputOpt = None,
    save_latents: SaveLatentsOpt = None,
    seed: SeedOpt = None,
    num_images: NumImagesOpt = 1,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    cpu_offload: CpuOffloadOpt = None,
    loras: LoraOpt = None,
    negative_prompt: NegativeOpt = None,
    system_prompt: SystemPromptOpt = None,
    thinking_content: ThinkingOpt = None,
    enable_thinking: EnableThinkingOpt = None,
    assistant_content: AssistantOpt = None,
    template: TemplateOpt = None,
    templates_dir: TemplatesDirOpt = None,
    cache: CacheOpt = None,
    cache_dir: CacheDirOpt = None,
    long_prompt_mode: LongPromptModeOpt = None,
    caption_length: CaptionLengthOpt = None,
    caption_fill: CaptionFillOpt = None,
    hidden_layer: HiddenLayerOpt = None,
    max_length: MaxLengthOpt = None,
    vl_image: VlImageOpt = None,
    vl_alpha: VlAlphaOpt = None,
    vl_blend_mode: VlBlendModeOpt = None,
    vl_model: VlModelOpt = None,
    vl_hidden_layer: VlHiddenLayerOpt = None,
    vl_tokens: VlTokensOpt = None,
    vl_device: VlDeviceOpt = None,
    control_model: ControlModelOpt = None,
    control_image: ControlImageOpt = None,
    control_scale: ControlScaleOpt = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    guidance_scale: GuidanceOpt = None,
    cfg_normalization: CfgNormOpt = None,
    cfg_truncation: CfgTruncOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    slg: SlgOpt = None,
    slg_scale: SlgScaleOpt = None,
    slg_layers: SlgLayersOpt = None,
    slg_start: SlgStartOpt = None,
    slg_stop: SlgStopOpt = None,
    dype: DypeOpt = None,
    dype_method: DypeMethodOpt = None,
    dype_scale: DypeScaleOpt = None,
    dype_exponent: DypeExponentOpt = None,
    dype_start_sigma: DypeStartSigmaOpt = None,
    dype_base_resolution: DypeBaseResOpt = None,
    attention_backend: AttentionBackendOpt = None,
    compile: CompileOpt = None,
    batch_size: BatchSizeOpt = None,
    step_cache: StepCacheOpt = None,
    step_cache_threshold: StepCacheThresholdOpt = None,
    vae_tiling: VaeTilingOpt = None,
    vae_tile_size: VaeTileSizeOpt = None,
    vae_tile_overlap: VaeTileOverlapOpt = None,
    quantize: QuantizeOpt = None,
    transformer_file: TransformerFileOpt = None,
    encoder_url: EncoderUrlOpt = None,
    api_key_env: RemoteKeyEnvOpt = REMOTE_KEY_ENV,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Generate images from prompts (encoded in-process) or from an embeds file.

    Each prompt is made once per seed. Output PNGs carry every setting, so
    `llmdit generate --from-png IMG` makes the same image again.

    Example: llmdit generate "a red circle on a blue background" --model demo --seed 7 -o circle.png
    """
    _render("txt2img", {**ctx.params, "image": None, "from_latents": None})


@handle_errors
def img2img(
    ctx: typer.Context,
    prompts: PromptsArg = None,
    image: ImageOpt = None,
    from_latents: FromLatentsOpt = None,
    strength: StrengthOpt = None,
    file: FileOpt = None,
    from_embeds: FromEmbedsOpt = None,
    output: OutputOpt = None,
    save_latents: SaveLatentsOpt = None,
    seed: SeedOpt = None,
    num_images: NumImagesOpt = 1,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    cpu_offload: CpuOffloadOpt = None,
    loras: LoraOpt = None,
    negative_prompt: NegativeOpt = None,
    system_prompt: SystemPromptOpt = None,
    thinking_content: ThinkingOpt = None,
    enable_thinking: EnableThinkingOpt = None,
    assistant_content: AssistantOpt = None,
    template: TemplateOpt = None,
    templates_dir: TemplatesDirOpt = None,
    cache: CacheOpt = None,
    cache_dir: CacheDirOpt = None,
    long_prompt_mode: LongPromptModeOpt = None,
    caption_length: CaptionLengthOpt = None,
    caption_fill: CaptionFillOpt = None,
    hidden_layer: HiddenLayerOpt = None,
    max_length: MaxLengthOpt = None,
    vl_image: VlImageOpt = None,
    vl_alpha: VlAlphaOpt = None,
    vl_blend_mode: VlBlendModeOpt = None,
    vl_model: VlModelOpt = None,
    vl_hidden_layer: VlHiddenLayerOpt = None,
    vl_tokens: VlTokensOpt = None,
    vl_device: VlDeviceOpt = None,
    control_model: ControlModelOpt = None,
    control_image: ControlImageOpt = None,
    control_scale: ControlScaleOpt = None,
    mask: MaskOpt = None,
    steps: StepsOpt = None,
    shift: ShiftOpt = None,
    guidance_scale: GuidanceOpt = None,
    cfg_normalization: CfgNormOpt = None,
    cfg_truncation: CfgTruncOpt = None,
    width: WidthOpt = None,
    height: HeightOpt = None,
    slg: SlgOpt = None,
    slg_scale: SlgScaleOpt = None,
    slg_layers: SlgLayersOpt = None,
    slg_start: SlgStartOpt = None,
    slg_stop: SlgStopOpt = None,
    dype: DypeOpt = None,
    dype_method: DypeMethodOpt = None,
    dype_scale: DypeScaleOpt = None,
    dype_exponent: DypeExponentOpt = None,
    dype_start_sigma: DypeStartSigmaOpt = None,
    dype_base_resolution: DypeBaseResOpt = None,
    attention_backend: AttentionBackendOpt = None,
    compile: CompileOpt = None,
    batch_size: BatchSizeOpt = None,
    step_cache: StepCacheOpt = None,
    step_cache_threshold: StepCacheThresholdOpt = None,
    vae_tiling: VaeTilingOpt = None,
    vae_tile_size: VaeTileSizeOpt = None,
    vae_tile_overlap: VaeTileOverlapOpt = None,
    quantize: QuantizeOpt = None,
    transformer_file: TransformerFileOpt = None,
    encoder_url: EncoderUrlOpt = None,
    api_key_env: RemoteKeyEnvOpt = REMOTE_KEY_ENV,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Change an image (--image) or finished latents (--from-latents) towards the prompts.

    --strength sets how far: 0 keeps the input, 1 ignores it. Only the last
    strength x steps of the schedule run. The size defaults to the input's.

    Example: llmdit img2img "a green square" --image circle.png --strength 0.6 --model demo -o square.png
    """
    _render("img2img", {**ctx.params, "from_png": None})


def _setting_flags(o: dict) -> dict:
    """The options that are settings, by setting name (None = not given)."""
    from llmdit_cli.config import FLAG_KEY, parse_layers
    from llmdit_cli.errors import UsageError

    flags = {k: v for k, v in o.items() if k in FLAG_KEY or k == "model"}
    flags["loras"] = o["loras"] or None  # an empty list is "not given"
    flags["templates_dir"] = o["templates_dir"] or None
    flags["slg_layers"] = parse_layers(o["slg_layers"])
    if o["slg"] is False and (o["slg_scale"] or 0) > 0:
        # A scale above 0 switches SLG on (so a config can), which --no-slg would silently lose to.
        raise UsageError(f"--no-slg with --slg-scale {o['slg_scale']:g}: a scale above 0 switches SLG on; give one")
    return flags


def _render(mode: str, o: dict) -> None:
    """Options -> settings -> engine request -> files written."""
    import os

    from llmdit_cli import workflows as wf
    from llmdit_cli.artifacts import (
        check_binary_target,
    )
    from llmdit_cli.config import VisionSettings, reapplied_fields

    VL_FIELDS = tuple(VisionSettings.model_fields)
    from llmdit_cli.engine import Engine, GenerateRequest
    from llmdit_cli.errors import UsageError
    from llmdit_cli.paths import plan_paths
    from llmdit_cli.prompts import collect_prompts

    output, save_latents, seed = o["output"], o["save_latents"], o["seed"]
    out = Output(o["quiet"], o["json_out"])
    out.stdout_is_binary = "-" in (output, save_latents)
    flags = _setting_flags(o)
    texts = collect_prompts(o["prompts"], o["file"])
    stored: dict = {}
    if o["from_png"]:
        png = _inputs_found_beside(_png_settings(o["from_png"]), o["from_png"], flags, out)
        if flags.get("vl_image") is None and flags.get("vl_alpha") != 0:
            _check_vl_image_unchanged(o["from_png"], png.get("vl") or {})
        if flags.get("control_image") is None:
            _check_image_unchanged(o["from_png"], png.get("control_image"), png.get("control_image_sha256"), "control")
        stored = {
            **{k: png.get(k) for k in reapplied_fields()},
            **(png.get("encoder") or {}),
            **{f"vl_{k}": v for k, v in (png.get("vl") or {}).items() if k in VL_FIELDS},
        }
        texts = texts or [png.get("prompt", "")]
        seed = seed or [png["seed"]]
    if output == "-" and save_latents == "-":
        raise UsageError("-o - and --save-latents - cannot both use stdout")
    if texts and o["from_embeds"]:
        given = "--from-png" if o["from_png"] and not (o["prompts"] or o["file"]) else "prompts"
        raise UsageError(f"give {given} or --from-embeds, not both")
    if not texts and not o["from_embeds"]:
        raise UsageError("no prompt: give prompts as arguments, with --file, '-' for stdin, or --from-embeds")
    init = _init_source(mode, o["image"], o["from_latents"])
    r = settings(o["config"], o["profile"], stored, f"{o['from_png']} (stored settings)", **flags)
    engine = Engine()
    req = engine.prepare(GenerateRequest(r, seeds=[], prompts=texts, mode=mode, **init), out)
    r = req.settings
    if save_latents:
        check_binary_target(save_latents)
    if o["from_embeds"] and set(r.given("vl")) - {"vl.device"}:
        raise UsageError("--vl-* settings shape the embeddings: give them to `llmdit encode`, not with --from-embeds")
    req.embeds = wf.read_embeds(o["from_embeds"]) if o["from_embeds"] else None
    if o["encoder_url"]:
        if o["from_embeds"]:
            raise UsageError("--encoder-url encodes prompts; it takes prompts, not --from-embeds")
        where = f"--encoder-url {o['encoder_url']}"
        with out.status(f"encoding {len(texts)} prompt(s) on {o['encoder_url']}"):
            handle = engine.model(r)[0]
            key = os.environ.get(o["api_key_env"])
            req.embeds = wf.remote_encode(o["encoder_url"], texts, r, handle, key, 300.0, where)
    req.seeds = wf.seeds_for(seed, o["num_images"])
    names = req.embeds.prompts if req.embeds else texts
    paths = plan_paths(
        output, [(i * len(req.seeds) + k, s, names[i]) for i in range(len(names)) for k, s in enumerate(req.seeds)]
    )
    if not seed:  # (Typer gives an empty list when --seed is not given)
        out.log(f"seed {req.seeds[0]} (random; pass --seed to choose)")
    req.decode = not save_latents  # finished latents are on disk before decoding can fail (memory)
    if save_latents:
        _write_latents_then_images(engine, req, paths, save_latents, out)
    else:
        _generate_and_write(engine, req, paths, out)


def _write_latents_then_images(engine, req, paths: list[str], save_latents: str, out: Output) -> None:
    """The latents file first (on disk before decoding can fail for memory), then the images."""
    import torch

    from llmdit_cli import workflows as wf
    from llmdit_cli.artifacts import write_bytes_atomic, write_latents_file
    from llmdit_cli.engine import DecodeRequest
    from llmdit_cli.pngmeta import png_bytes

    results = engine.generate(req, out)
    stacked = torch.cat([g.latents for g in results], dim=0)
    handle, _ = engine.model(req.settings)
    g0 = req.settings.generation
    write_latents_file(
        save_latents,
        stacked,
        wf.latents_identity(handle),
        g0.height,
        g0.width,
        {"images": [g.settings for g in results]},
    )
    out.wrote(
        save_latents,
        "latents",
        prompt=[g.prompt for g in results],
        seed=[g.seed for g in results],
        settings=[g.settings for g in results],
    )
    for g, image in zip(results, engine.decode(DecodeRequest(req.settings, stacked, save_latents), out)):
        g.image = image
    for g, path in zip(results, paths):
        write_bytes_atomic(path, png_bytes(g.image, g.settings))
        out.wrote(path, "image", prompt=g.prompt, seed=g.seed, settings=g.settings)


def _generate_and_write(engine, req, paths: list[str], out: Output) -> None:
    """Each image written (PNG-encoded, atomically, in order) on a writer thread while the next
    one is made: the PNG stays off the critical path."""
    from llmdit_cli.artifacts import BackgroundWriter, write_bytes_atomic
    from llmdit_cli.pngmeta import png_bytes

    targets = iter(paths)

    def write(g, path: str) -> None:
        write_bytes_atomic(path, png_bytes(g.image, g.settings))
        out.wrote(path, "image", prompt=g.prompt, seed=g.seed, settings=g.settings)

    with BackgroundWriter(depth=2) as writer:
        engine.generate(req, out, each=lambda g: writer.put(lambda path=next(targets): write(g, path)))


def _png_settings(path: str) -> dict:
    from llmdit_cli.artifacts import read_bytes
    from llmdit_cli.errors import InputError
    from llmdit_cli.pngmeta import settings_of
    from llmdit_cli.workflows import ENCODER_FIELDS

    data, name = read_bytes(path, "a PNG made by llmdit")
    stored = settings_of(data, name)
    if not isinstance(stored.get("seed"), int):
        raise InputError(f"--from-png {path}: the stored settings hold no seed")
    unknown = sorted(set(stored.get("encoder") or {}) - set(ENCODER_FIELDS))
    if unknown:
        raise InputError(f"--from-png {path}: unknown stored encoder setting {unknown[0]!r}")
    if stored.get("mode", "txt2img") != "txt2img":
        raise InputError(
            f"--from-png {path}: made by {stored.get('mode')}, which needs its input image; "
            f"rerun that command with the settings shown by `llmdit inspect {path}`"
        )
    return stored


def _inputs_found_beside(png: dict, path: str, flags: dict, out: Output) -> dict:
    """The PNG's settings with each input file it names by a relative path (the control image, the
    vision image) taken from the PNG's folder when it is not there from here: the path was relative
    to where the image was made, which is often where the PNG went. The SHA-256 checks that follow
    make sure it is the same file. An image given again by its flag is not looked for."""
    from pathlib import Path

    def beside(name: str | None, what: str) -> str | None:
        if not name or Path(name).expanduser().is_absolute() or Path(name).exists():
            return name
        there = Path(path).parent / name
        if not there.is_file():
            return name
        out.hint(f"--from-png {path}: its {what} image {name} is not found from the current folder; using {there}")
        return str(there)

    if flags.get("control_image") is None:
        png = {**png, "control_image": beside(png.get("control_image"), "control")}
    if flags.get("vl_image") is None and flags.get("vl_alpha") != 0 and (png.get("vl") or {}).get("image"):
        png["vl"] = {**png["vl"], "image": beside(png["vl"]["image"], "vision")}
    return png


def _check_vl_image_unchanged(path: str, vl: dict) -> None:
    """The conditioning image a PNG records must still be the one it was made with: a changed file
    would silently make another picture."""

    _check_image_unchanged(path, vl.get("image"), vl.get("image_sha256"), "vision")


def _check_image_unchanged(path: str, image: str | None, digest: str | None, what: str) -> None:
    from pathlib import Path

    from llmdit_cli.errors import InputError
    from llmdit_cli.vision import image_digest

    flag = {"vision": "--vl-image", "control": "--control-image"}[what]
    if image and digest and Path(image).expanduser().is_file() and image_digest(image) != digest:
        raise InputError(
            f"--from-png {path}: its {what} image {image} differs from the one it was made with "
            f"(SHA-256); pass {flag} {image} to use it as it is now"
        )


def _init_source(mode, image, from_latents) -> dict:
    """The img2img input as request fields: a PIL image, or a latents file's tensor and size."""
    from llmdit_cli.artifacts import read_bytes, read_stage
    from llmdit_cli.errors import InputError, UsageError
    from llmdit_cli.pngmeta import image_from_bytes

    if mode == "txt2img":
        return {}
    if bool(image) == bool(from_latents):
        raise UsageError("img2img needs exactly one of --image or --from-latents")
    if image:
        try:
            data, name = read_bytes(image, "an image")
        except InputError as exc:  # name the flag, as --vl-image and --mask do
            raise InputError(f"--image {exc.args[0]}") from None
        return {"init": image_from_bytes(data, f"--image {name}").convert("RGB"), "init_source": name}
    stage = read_stage(from_latents, expect="latents")  # checked: one 4-D 'latents' tensor
    size = (stage.meta_int("height"), stage.meta_int("width"))
    return {
        "init": stage.tensors()["latents"],
        "init_source": stage.source,
        "init_size": size if None not in size else None,
    }
