"""Options declared once and shared by commands. Every setting defaults to None so that the config
layering (defaults < config profile < LLMDIT_* env < flags) can tell "not given" from a value.

A setting's option is declared with `setting_option(field name, type, flags..., help=...)`: it is
registered in SETTING_OPTIONS, and `generate` and `img2img` take every registered option."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from llmdit_cli.cli.setting_facts import FACTS

# Setting field name (`steps`, `slg_layers`, `loras`) -> its option alias, in declaration order.
SETTING_OPTIONS: dict[str, Any] = {}


def setting_option(name: str, kind: Any, *flags: str, **kwargs: Any) -> Any:
    """The `Annotated` alias of the option for setting `name`, registered in SETTING_OPTIONS. Its
    help may say `{default}` and `{choices}`: they come from the settings field (`setting_facts`)."""
    if "help" in kwargs:
        kwargs["help"] = help_with_facts(name, kwargs["help"])
    alias = Annotated[kind, typer.Option(*flags, **kwargs)]
    SETTING_OPTIONS[name] = alias
    return alias


def help_with_facts(name: str, text: str) -> str:
    """`text` with `{default}` and `{choices}` filled from setting `name`'s field in config.py."""
    if "{" not in text:
        return text
    facts = FACTS.get(name, {})
    default = facts.get("default")
    shown = {True: "on", False: "off"}.get(default, default) if isinstance(default, bool) else default
    choices = [str(c) for c in facts.get("choices", [])]
    listed = ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else "".join(choices)
    return text.format(default=shown, choices=listed)


# Settings whose commands name their option apart from the flag name: the layer commands'
# (`layered.steps` is `--steps` of decompose and edit-layer).
OPTION_NAMES = {
    "layered_layers": "--layers",
    "layered_resolution": "--resolution",
    "layered_steps": "--steps",
    "layered_true_cfg_scale": "--true-cfg-scale",
    "layered_negative_prompt": "--negative-prompt",
    "layered_cfg_normalize": "--cfg-normalize",
    "layered_caption_language": "--caption-language",
    "layered_model": "--layered-model",
    "layered_edit_model": "--edit-model",
    "control_model": "--controlnet",
    "rewriter_template": "--template",
    "rewriter_api_url": "--api-url",
    "rewriter_api_model": "--api-model",
    "rewriter_timeout": "--timeout",
}


def flag_of(name: str) -> str:
    """The option a setting field is given with (`loras` -> `--lora`)."""
    if name in OPTION_NAMES:
        return OPTION_NAMES[name]
    alias = SETTING_OPTIONS.get(name)
    if alias is None:
        return "--" + name.replace("_", "-")
    info = alias.__metadata__[0]
    # With Annotated, Typer takes the first flag as the option's `default` slot.
    first = info.default if isinstance(info.default, str) else info.param_decls[0]
    return first.split("/")[0]


G_MODEL = "Model"
G_PROMPT = "Prompt formatting"
G_GEN = "Generation"
G_OUT = "Output"
G_CFG = "Config"
G_SLG = "Skip-layer guidance"
G_DYPE = "DyPE (sizes beyond the training resolution)"
G_SPEED = "Speed and memory"

ConfigOpt = Annotated[
    Optional[str],
    typer.Option(
        "--config",
        help="Config TOML file (default: the user config dir's config.toml; env LLMDIT_CONFIG).",
        rich_help_panel=G_CFG,
    ),
]
ProfileOpt = Annotated[
    Optional[str],
    typer.Option(
        "--profile", help="Profile (table) of the config file to use (env LLMDIT_PROFILE).", rich_help_panel=G_CFG
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="For each written file print one JSON object (path, kind, prompt, seed, settings) on stdout instead of its path.",
        rich_help_panel=G_OUT,
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option("--quiet", "-q", help="No logs or progress on stderr (errors still show).", rich_help_panel=G_OUT),
]

ModelOpt = setting_option(
    "model",
    Optional[str],
    "--model",
    "-m",
    help="Hub id, local diffusers folder, or 'demo' (tiny offline model). Default: Tongyi-MAI/Z-Image-Turbo.",
    rich_help_panel=G_MODEL,
)
# `decode`'s: a latents file names the model that made it.
DecodeModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="Hub id, local diffusers folder, or 'demo'. Default: the model the latents file names.",
        rich_help_panel=G_MODEL,
    ),
]
DtypeOpt = setting_option(
    "dtype",
    Optional[str],
    "--dtype",
    help="{choices}; auto is bfloat16 on GPU, float32 on CPU (default {default}).",
    rich_help_panel=G_MODEL,
)
DeviceOpt = setting_option(
    "device", Optional[str], "--device", help="auto, cpu, cuda, cuda:1, mps ...", rich_help_panel=G_MODEL
)
TextEncoderDeviceOpt = setting_option(
    "text_encoder_device",
    Optional[str],
    "--text-encoder-device",
    help="Device for the text encoder (default: --device).",
    rich_help_panel=G_MODEL,
)
DitDeviceOpt = setting_option(
    "dit_device",
    Optional[str],
    "--dit-device",
    help="Device for the transformer (default: --device).",
    rich_help_panel=G_MODEL,
)
VaeDeviceOpt = setting_option(
    "vae_device", Optional[str], "--vae-device", help="Device for the VAE (default: --device).", rich_help_panel=G_MODEL
)
CpuOffloadOpt = setting_option(
    "cpu_offload",
    Optional[str],
    "--cpu-offload",
    help="none; model (each component moves to the GPU while it runs); sequential (layer by layer: least memory, slowest). Needs a CUDA GPU. Default: none (model for decompose and edit-layer on CUDA).",
    show_default=False,
    rich_help_panel=G_SPEED,
)
LoraOpt = setting_option(
    "loras",
    Optional[list[str]],
    "--lora",
    help="LoRA file as PATH[:SCALE]; repeat for several. diffusers/PEFT and Kohya/ComfyUI key styles.",
    rich_help_panel=G_MODEL,
)

PromptsArg = Annotated[
    Optional[list[str]], typer.Argument(help="Prompts; '-' reads prompts from stdin, one per line.", show_default=False)
]
FileOpt = Annotated[
    Optional[str],
    typer.Option("--file", "-f", help="Read prompts from a file, one per line.", rich_help_panel=G_PROMPT),
]
NegativeOpt = setting_option(
    "negative_prompt",
    Optional[str],
    "--negative-prompt",
    "-n",
    help="Negative prompt, used when guidance is on (default: the model family's; none for Z-Image).",
    rich_help_panel=G_PROMPT,
)
SystemPromptOpt = setting_option(
    "system_prompt",
    Optional[str],
    "--system-prompt",
    help="System turn put before the prompt.",
    rich_help_panel=G_PROMPT,
)
ThinkingOpt = setting_option(
    "thinking_content",
    Optional[str],
    "--thinking-content",
    help="Text of a <think> block in the assistant turn.",
    rich_help_panel=G_PROMPT,
)
EnableThinkingOpt = setting_option(
    "enable_thinking",
    Optional[bool],
    "--enable-thinking/--no-enable-thinking",
    help="Qwen3 thinking switch; --no-enable-thinking adds the empty think block. Default {default} (= stock diffusers).",
    show_default=False,
    rich_help_panel=G_PROMPT,
)
AssistantOpt = setting_option(
    "assistant_content",
    Optional[str],
    "--assistant-content",
    help="Text that opens the assistant turn.",
    rich_help_panel=G_PROMPT,
)
TemplateOpt = setting_option(
    "template",
    Optional[str],
    "--template",
    help="Prompt template by name (`llmdit templates list`): its system prompt and think-block settings; the flags above override them.",
    rich_help_panel=G_PROMPT,
)
TemplatesDirOpt = setting_option(
    "templates_dir",
    Optional[list[str]],
    "--templates-dir",
    help="A folder of your own templates (*.md); repeat. They override built-ins of the same name (env LLMDIT_TEMPLATES_DIR).",
    rich_help_panel=G_PROMPT,
)
CacheOpt = setting_option(
    "cache",
    Optional[bool],
    "--cache/--no-cache",
    help="Reuse prompt embeddings from the on-disk cache and store new ones (default {default}; `llmdit cache info`).",
    show_default=False,
    rich_help_panel=G_PROMPT,
)
CacheDirOpt = setting_option(
    "cache_dir",
    Optional[str],
    "--cache-dir",
    help="Embedding cache folder (default: ~/.cache/llmdit; env LLMDIT_CACHE_DIR).",
    rich_help_panel=G_PROMPT,
)
LongPromptModeOpt = setting_option(
    "long_prompt_mode",
    Optional[str],
    "--long-prompt-mode",
    help="Prompts longer than the model takes (1504 tokens on Z-Image): {choices} (default {default}, with a hint).",
    rich_help_panel=G_PROMPT,
)
CaptionLengthOpt = setting_option(
    "caption_length",
    Optional[int],
    "--caption-length",
    help="Bring every prompt embedding to exactly N tokens (see --caption-fill).",
    rich_help_panel=G_PROMPT,
)
CaptionFillOpt = setting_option(
    "caption_fill",
    Optional[str],
    "--caption-fill",
    help="How --caption-length fills a shorter prompt: {choices} (default {default}).",
    rich_help_panel=G_PROMPT,
)
HiddenLayerOpt = setting_option(
    "hidden_layer",
    Optional[int],
    "--hidden-layer",
    help="Text-encoder hidden state to use (default: the model family's, as its stock pipeline: -2 for Z-Image).",
    rich_help_panel=G_PROMPT,
)
MaxLengthOpt = setting_option(
    "max_length",
    Optional[int],
    "--max-length",
    help="Token limit of the formatted prompt, template included (default {default}): the tokenizer "
    "cuts what is longer, with a hint (refused with --long-prompt-mode error). The transformer's own "
    "caption limit (1504 tokens on Z-Image) applies after it.",
    rich_help_panel=G_PROMPT,
)

G_VL = "Vision conditioning (Qwen3-VL)"
VlImageOpt = setting_option(
    "vl_image",
    Optional[str],
    "--vl-image",
    help="Image whose Qwen3-VL hidden states are blended into the prompt embeddings.",
    rich_help_panel=G_VL,
)
VlAlphaOpt = setting_option(
    "vl_alpha",
    Optional[float],
    "--vl-alpha",
    help="How much of the image goes in: 0 (none: the text-only embeddings) to 1. Default {default}.",
    rich_help_panel=G_VL,
)
VlBlendModeOpt = setting_option(
    "vl_blend_mode",
    Optional[str],
    "--vl-blend-mode",
    help="linear, style_only (only the mean moves), graduated (later tokens more), attention_weighted, adain.",
    rich_help_panel=G_VL,
)
VlModelOpt = setting_option(
    "vl_model",
    Optional[str],
    "--vl-model",
    help="Qwen3-VL Hub id or folder ('demo': a tiny random one). Default: the model family's (Z-Image: Qwen/Qwen3-VL-4B-Instruct; demo: demo).",
    rich_help_panel=G_VL,
)
VlHiddenLayerOpt = setting_option(
    "vl_hidden_layer",
    Optional[int],
    "--vl-hidden-layer",
    help="Which of Qwen3-VL's hidden states to take (default {default}).",
    rich_help_panel=G_VL,
)
VlTokensOpt = setting_option(
    "vl_tokens",
    Optional[str],
    "--vl-tokens",
    help="Which positions of Qwen3-VL's sequence: {choices} (text: the prompt's; default {default}).",
    rich_help_panel=G_VL,
)
VlDeviceOpt = setting_option(
    "vl_device",
    Optional[str],
    "--vl-device",
    help="Device for Qwen3-VL: cpu, cuda:1 ... (default: the text encoder's).",
    rich_help_panel=G_VL,
)

StepsOpt = setting_option(
    "steps",
    Optional[int],
    "--steps",
    "-s",
    help="Denoising steps (model default: 8 for Z-Image-Turbo).",
    rich_help_panel=G_GEN,
)
ShiftOpt = setting_option(
    "shift", Optional[float], "--shift", help="Scheduler shift (model default: 3.0).", rich_help_panel=G_GEN
)
GuidanceOpt = setting_option(
    "guidance_scale",
    Optional[float],
    "--guidance-scale",
    "-g",
    help="Guidance scale, as the model family runs it: Z-Image CFG (0 is off; Turbo default 0), Qwen-Image true CFG (1 or less is off; default 4).",
    rich_help_panel=G_GEN,
)
CfgNormOpt = setting_option(
    "cfg_normalization",
    Optional[float],
    "--cfg-normalization",
    help="Clamp |guided| to this multiple of |conditional|; 0 = off.",
    rich_help_panel=G_GEN,
)
CfgTruncOpt = setting_option(
    "cfg_truncation",
    Optional[float],
    "--cfg-truncation",
    help="Turn CFG off once progress (0..1) passes this value; 1 = never.",
    rich_help_panel=G_GEN,
)
SeedOpt = Annotated[
    Optional[list[int]],
    typer.Option(
        "--seed",
        help="Seed; repeat for several images. Default: a random seed (printed and recorded).",
        rich_help_panel=G_GEN,
    ),
]
NumImagesOpt = Annotated[
    int,
    typer.Option("--num-images", min=1, help="Images per prompt, with seeds SEED, SEED+1, ...", rich_help_panel=G_GEN),
]
WidthOpt = setting_option(
    "width",
    Optional[int],
    "--width",
    "-W",
    help="Width in pixels, a multiple of 16 (model default).",
    rich_help_panel=G_GEN,
)
HeightOpt = setting_option(
    "height",
    Optional[int],
    "--height",
    "-H",
    help="Height in pixels, a multiple of 16 (model default).",
    rich_help_panel=G_GEN,
)
StrengthOpt = setting_option(
    "strength",
    Optional[float],
    "--strength",
    help="How much to change the input, 0..1 (default {default}).",
    rich_help_panel=G_GEN,
)

G_CONTROL = "ControlNet and inpainting"
ControlModelOpt = setting_option(
    "control_model",
    Optional[str],
    "--controlnet",
    help="A Z-Image ControlNet: Hub id, folder, single .safetensors file, or 'demo' (a tiny random one "
    "for the demo model). Steers by --control-image (docs/control.md).",
    rich_help_panel=G_CONTROL,
)
ControlImageOpt = setting_option(
    "control_image",
    Optional[str],
    "--control-image",
    help="The control image (edges, depth, pose ...) for --controlnet; resized to the output size. Its "
    "SHA-256 is recorded and --from-png checks it.",
    rich_help_panel=G_CONTROL,
)
ControlScaleOpt = setting_option(
    "control_scale",
    Optional[float],
    "--control-scale",
    help="How strongly the ControlNet steers, 0 to 4 (default {default}).",
    rich_help_panel=G_CONTROL,
)
MaskOpt = setting_option(
    "mask",
    Optional[str],
    "--mask",
    help="Inpaint: white repaints, black keeps the input. Resized to the image (nearest, a hint says so). "
    "With --controlnet the ControlNet repaints from noise (--strength is not used).",
    rich_help_panel=G_CONTROL,
)


def _a_file_name(value: str | None) -> str | None:
    """An output path that starts with a dash is an option taken for the file name
    (`--save-latents -o x.png`), not a file anyone means to write."""
    if value and value != "-" and value.startswith("-"):
        raise typer.BadParameter(f"'{value}' looks like an option, not a file name (write ./{value} to mean that file)")
    return value


OutputOpt = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        help="PNG path, a folder, '-' (stdout), or a pattern with {index}, {seed}, {slug}, e.g. out/{index}_{seed}.png.",
        rich_help_panel=G_OUT,
        callback=_a_file_name,
    ),
]
EmbedsOutputOpt = Annotated[
    Optional[str],
    typer.Option(
        "--output",
        "-o",
        help="Embeds file (.embeds.safetensors) to write, or '-' for stdout (the default).",
        rich_help_panel=G_OUT,
        callback=_a_file_name,
    ),
]
SaveLatentsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--save-latents",
        help="Also write the final latents to this .latents.safetensors file ('-' for stdout).",
        rich_help_panel=G_OUT,
        callback=_a_file_name,
    ),
]
G_REMOTE = "Remote encoder (an `llmdit serve`)"
EncoderUrlOpt = Annotated[
    Optional[str],
    typer.Option(
        "--encoder-url",
        help="Encode the prompts on an `llmdit serve` (base URL ending in /v1) and denoise here.",
        rich_help_panel=G_REMOTE,
    ),
]
ApiUrlOpt = Annotated[
    Optional[str],
    typer.Option(
        "--api-url",
        help="Encode on an `llmdit serve` (base URL ending in /v1) instead of loading the text encoder here.",
        rich_help_panel=G_REMOTE,
    ),
]
RemoteKeyEnvOpt = Annotated[
    str,
    typer.Option(
        "--api-key-env",
        help="Environment variable with the server's token (sent as a Bearer token when set).",
        rich_help_panel=G_REMOTE,
    ),
]
RemoteTimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait for the server's reply.", rich_help_panel=G_REMOTE)
]
REMOTE_KEY_ENV = "LLMDIT_API_KEY"

FromEmbedsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--from-embeds",
        help="Use an embeds file from `llmdit encode` ('-' for stdin) instead of prompts.",
        rich_help_panel=G_PROMPT,
    ),
]

SlgOpt = setting_option(
    "slg",
    Optional[bool],
    "--slg/--no-slg",
    help="Skip-layer guidance with the model family's settings (Z-Image: scale 2.5, layers 7-12, 5%-50% of the steps).",
    show_default=False,
    rich_help_panel=G_SLG,
)
SlgScaleOpt = setting_option(
    "slg_scale",
    Optional[float],
    "--slg-scale",
    help="SLG strength; 0 = off, > 0 turns SLG on. v += scale * (v_cond - v_skip).",
    rich_help_panel=G_SLG,
)
SlgLayersOpt = setting_option(
    "slg_layers",
    Optional[str],
    "--slg-layers",
    help="Transformer blocks the skip pass leaves out, e.g. 7,8,9 or 7-12 (indices into transformer.layers).",
    rich_help_panel=G_SLG,
)
SlgStartOpt = setting_option(
    "slg_start",
    Optional[float],
    "--slg-start",
    help="SLG runs from this fraction of the steps (0..1) ...",
    rich_help_panel=G_SLG,
)
SlgStopOpt = setting_option(
    "slg_stop", Optional[float], "--slg-stop", help="... until this fraction (exclusive).", rich_help_panel=G_SLG
)

DypeOpt = setting_option(
    "dype",
    Optional[bool],
    "--dype/--no-dype",
    help="Dynamic position extrapolation for sizes above the training resolution (docs/dype.md).",
    show_default=False,
    rich_help_panel=G_DYPE,
)
DypeMethodOpt = setting_option(
    "dype_method",
    Optional[str],
    "--dype-method",
    help="{choices}: vision_yarn is isotropic (the DyPE paper's bands), yarn per axis. Default: the model family's (Z-Image vision_yarn; demo yarn, measured).",
    rich_help_panel=G_DYPE,
)
DypeScaleOpt = setting_option(
    "dype_scale",
    Optional[float],
    "--dype-scale",
    help="lambda_s: strength of the sigma modulation (default {default}).",
    rich_help_panel=G_DYPE,
)
DypeExponentOpt = setting_option(
    "dype_exponent",
    Optional[float],
    "--dype-exponent",
    help="lambda_t: how fast the extrapolation fades as sigma falls (default {default}).",
    rich_help_panel=G_DYPE,
)
DypeStartSigmaOpt = setting_option(
    "dype_start_sigma",
    Optional[float],
    "--dype-start-sigma",
    help="Sigma below which the fading starts (default {default} = from the first step).",
    rich_help_panel=G_DYPE,
)
DypeBaseResOpt = setting_option(
    "dype_base_resolution",
    Optional[int],
    "--dype-base-resolution",
    help="Training resolution in pixels (model default: 1024 for Z-Image).",
    rich_help_panel=G_DYPE,
)

AttentionBackendOpt = setting_option(
    "attention_backend",
    Optional[str],
    "--attention-backend",
    help="auto, native (PyTorch math), sdpa (torch SDPA), flash, flash_3, sage, xformers (diffusers' attention "
    "dispatch). auto takes the first of flash_3, flash, sage, xformers that runs right here (each tried once on a "
    "small input, compiled with --compile; said once), else sdpa.",
    rich_help_panel=G_SPEED,
)
CompileOpt = setting_option(
    "compile",
    Optional[bool],
    "--compile/--no-compile",
    help="torch.compile the transformer's repeated blocks (first image is slower).",
    show_default=False,
    rich_help_panel=G_SPEED,
)
BatchSizeOpt = setting_option(
    "batch_size",
    Optional[int],
    "--batch-size",
    help="Images per transformer forward (default {default}); the same pixels as one at a time. "
    "Faster where the GPU has room: activation memory grows N times (2N with CFG).",
    rich_help_panel=G_SPEED,
)
StepCacheOpt = setting_option(
    "step_cache",
    Optional[str],
    "--step-cache",
    help="{choices}. first-block: a step whose first block changes little reuses what the other "
    "blocks added last time (faster, a slightly different image). Default {default}.",
    rich_help_panel=G_SPEED,
)
StepCacheThresholdOpt = setting_option(
    "step_cache_threshold",
    Optional[float],
    "--step-cache-threshold",
    help="With --step-cache: the first block's relative change under which a step reuses the "
    "cache (default {default}); higher is faster and further from uncached.",
    rich_help_panel=G_SPEED,
)
VaeTilingOpt = setting_option(
    "vae_tiling",
    Optional[bool],
    "--vae-tiling/--no-vae-tiling",
    help="Decode (and encode) in overlapping tiles: less memory for large images.",
    show_default=False,
    rich_help_panel=G_SPEED,
)
VaeTileSizeOpt = setting_option(
    "vae_tile_size",
    Optional[int],
    "--vae-tile-size",
    help="With --vae-tiling: tile size in pixels (default: the VAE's own, at least 256; smaller saves "
    "memory and shows more seams).",
    show_default=False,
    rich_help_panel=G_SPEED,
)
VaeTileOverlapOpt = setting_option(
    "vae_tile_overlap",
    Optional[float],
    "--vae-tile-overlap",
    help="With --vae-tiling: overlap of neighbouring tiles, a fraction 0..0.5 of a tile (default 0.25).",
    show_default=False,
    rich_help_panel=G_SPEED,
)
QuantizeOpt = setting_option(
    "quantize",
    Optional[str],
    "--quantize",
    help="Weights of the text encoder and transformer: 8bit or 4bit with bitsandbytes (CUDA GPU); "
    "fp8: float8 weights and matmuls in their blocks (GPU of compute capability 8.9+, or CPU). "
    "Default {default}.",
    rich_help_panel=G_SPEED,
)
TransformerFileOpt = setting_option(
    "transformer_file",
    Optional[str],
    "--transformer-file",
    help="Single-file transformer (.safetensors, or .gguf quantized) to use instead of the model folder's.",
    rich_help_panel=G_SPEED,
)
