from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.layers_cmd import EditModelOpt, LayeredModelOpt
from llmdit_cli.cli.options import (
    AttentionBackendOpt,
    CompileOpt,
    ConfigOpt,
    ControlModelOpt,
    CpuOffloadOpt,
    DeviceOpt,
    DitDeviceOpt,
    DtypeOpt,
    ModelOpt,
    ProfileOpt,
    QuantizeOpt,
    QuietOpt,
    TemplatesDirOpt,
    TextEncoderDeviceOpt,
    VaeDeviceOpt,
    VaeTileOverlapOpt,
    VaeTileSizeOpt,
    VaeTilingOpt,
    VlModelOpt,
)
from llmdit_cli.cli.output import Output

G_SERVER = "Server"
G_LIMITS = "Limits"

HostOpt = Annotated[
    str, typer.Option("--host", help="Address to bind; 0.0.0.0 for every interface.", rich_help_panel=G_SERVER)
]
PortOpt = Annotated[int, typer.Option("--port", "-p", help="Port to listen on.", rich_help_panel=G_SERVER)]
ComponentsOpt = Annotated[
    str,
    typer.Option(
        "--components",
        help="What this server holds: encoder (text encoder: encode, chat), dit (transformer and VAE: "
        "images; prompts encoded by --encoder-url) or all.",
        rich_help_panel=G_SERVER,
    ),
]
TokenEnvOpt = Annotated[
    Optional[str],
    typer.Option(
        "--token-env",
        help="Environment variable holding an API token; every /v1 request must then send "
        "'Authorization: Bearer TOKEN'.",
        rich_help_panel=G_SERVER,
    ),
]
EncoderUrlOpt = Annotated[
    Optional[str],
    typer.Option(
        "--encoder-url",
        help="With --components dit: the llmdit server that encodes prompts (base URL ending in /v1).",
        rich_help_panel=G_SERVER,
    ),
]
EncoderKeyEnvOpt = Annotated[
    str,
    typer.Option(
        "--encoder-key-env",
        help="Environment variable with the --encoder-url server's token.",
        rich_help_panel=G_SERVER,
    ),
]
LoraDirOpt = Annotated[
    Optional[str],
    typer.Option(
        "--lora-dir",
        help="Folder of LoRA files requests may name (llmdit.lora); without it requests use no LoRA.",
        rich_help_panel=G_SERVER,
    ),
]
DataDirOpt = Annotated[
    Optional[str],
    typer.Option(
        "--data-dir",
        help="Folder of the history database and the images the server makes (default: "
        "~/.local/share/llmdit; env LLMDIT_DATA_DIR). Several servers may share one.",
        rich_help_panel=G_SERVER,
    ),
]
MaxImageBytesOpt = Annotated[
    int,
    typer.Option(
        "--max-image-bytes",
        help="Largest uploaded image (img2img input, vision image), in bytes.",
        rich_help_panel=G_LIMITS,
    ),
]
MaxQueueOpt = Annotated[
    int,
    typer.Option("--max-queue", help="Requests that may wait for the model; more get 503.", rich_help_panel=G_LIMITS),
]
MaxBatchOpt = Annotated[
    int,
    typer.Option(
        "--max-batch",
        help="Waiting text-to-image requests with the same settings run together, up to this many "
        "(also images per forward); each gets its own seed's pixels. 1: one at a time.",
        rich_help_panel=G_LIMITS,
    ),
]
MaxBodyOpt = Annotated[
    int, typer.Option("--max-body-bytes", help="Largest request body, in bytes.", rich_help_panel=G_LIMITS)
]
MaxPromptOpt = Annotated[
    int,
    typer.Option("--max-prompt-chars", help="Longest prompt or chat message, in characters.", rich_help_panel=G_LIMITS),
]
MaxImagesOpt = Annotated[
    int, typer.Option("--max-images", help="Most images per request (n).", rich_help_panel=G_LIMITS)
]
MaxPixelsOpt = Annotated[
    int, typer.Option("--max-pixels", help="Largest image, in pixels (width x height).", rich_help_panel=G_LIMITS)
]
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MaxStepsOpt = Annotated[
    int, typer.Option("--max-steps", help="Most denoising steps per image.", rich_help_panel=G_LIMITS)
]
MaxTokensOpt = Annotated[
    int, typer.Option("--max-tokens", help="Longest chat reply, in tokens.", rich_help_panel=G_LIMITS)
]


@handle_errors
def serve(
    model: ModelOpt = None,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    components: ComponentsOpt = "all",
    token_env: TokenEnvOpt = None,
    encoder_url: EncoderUrlOpt = None,
    encoder_key_env: EncoderKeyEnvOpt = "LLMDIT_ENCODER_TOKEN",
    lora_dir: LoraDirOpt = None,
    data_dir: DataDirOpt = None,
    max_queue: MaxQueueOpt = 8,
    max_batch: MaxBatchOpt = 4,
    max_body_bytes: MaxBodyOpt = 1 << 20,
    max_image_bytes: MaxImageBytesOpt = 16 << 20,
    max_prompt_chars: MaxPromptOpt = 4000,
    max_images: MaxImagesOpt = 4,
    max_pixels: MaxPixelsOpt = 2048 * 2048,
    max_tokens: MaxTokensOpt = 1024,
    max_steps: MaxStepsOpt = 100,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    dit_device: DitDeviceOpt = None,
    vae_device: VaeDeviceOpt = None,
    cpu_offload: CpuOffloadOpt = None,
    attention_backend: AttentionBackendOpt = None,
    compile_: CompileOpt = None,
    vae_tiling: VaeTilingOpt = None,
    vae_tile_size: VaeTileSizeOpt = None,
    vae_tile_overlap: VaeTileOverlapOpt = None,
    quantize: QuantizeOpt = None,
    templates_dir: TemplatesDirOpt = None,
    vl_model: VlModelOpt = None,
    layered_model: LayeredModelOpt = None,
    edit_model: EditModelOpt = None,
    controlnet: ControlModelOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
):
    """Serve a model over HTTP: an OpenAI-compatible API and the studio page.

    An OpenAI-compatible chat and images API, prompt encoding for `encode --api-url` /
    `generate --encoder-url`, the studio page at / (every setting, history, layers).

    The model loads before the server listens. Model work runs one request at a time, in order;
    --max-queue more may wait. Binds 127.0.0.1 unless --host says otherwise; set --token-env
    before exposing it. See docs/serve.md for two machines (encoder and DiT) and a systemd unit.

    Example: llmdit serve --model demo --port 8000
    """
    import os
    from pathlib import Path

    from llmdit_cli.cli.common import model_flags, settings
    from llmdit_cli.errors import UsageError

    out = Output(quiet)
    if components not in ("encoder", "dit", "all"):
        raise UsageError(f"--components {components}: expected encoder, dit or all")
    if components == "dit" and not encoder_url:
        raise UsageError("--components dit needs --encoder-url (the server that encodes prompts)")
    if encoder_url and components == "encoder":
        raise UsageError("--encoder-url is for a DiT server (--components dit or all)")
    for name, value in [
        ("--max-queue", max_queue),
        ("--max-batch", max_batch),
        ("--max-body-bytes", max_body_bytes),
        ("--max-prompt-chars", max_prompt_chars),
        ("--max-images", max_images),
        ("--max-pixels", max_pixels),
        ("--max-tokens", max_tokens),
        ("--max-steps", max_steps),
        ("--max-image-bytes", max_image_bytes),
    ]:
        if value < 1:
            raise UsageError(f"{name} {value}: must be at least 1")
    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: must be 1-65535")
    token = _env_value(token_env, "--token-env") if token_env else None
    if lora_dir and not Path(lora_dir).is_dir():
        raise UsageError(f"--lora-dir {lora_dir}: no such folder")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise UsageError("llmdit serve needs FastAPI and uvicorn: pip install 'llmdit[serve]'") from None

    from llmdit_cli.engine import Engine
    from llmdit_cli.remote import check_base_url
    from llmdit_cli.serve.app import ServeConfig, ServerLimits, create_app
    from llmdit_cli.serve.settings import ServerSettings

    if encoder_url:
        check_base_url(encoder_url, f"--encoder-url {encoder_url}")
    flags = dict(
        **model_flags(model, dtype, device, text_encoder_device, dit_device, vae_device, cpu_offload),
        attention_backend=attention_backend,
        compile=compile_,
        vae_tiling=vae_tiling,
        vae_tile_size=vae_tile_size,
        vae_tile_overlap=vae_tile_overlap,
        quantize=quantize,
        templates_dir=templates_dir or None,
        vl_model=vl_model,
        layered_model=layered_model,
        layered_edit_model=edit_model,
        control_model=controlnet,
    )
    r = settings(config, profile, **flags)
    engine = Engine()
    handle, _ = engine.model(r)
    needed = {"encoder": ("tokenizer", "text_encoder"), "dit": ("transformer", "vae")}
    parts = [p for role, ps in needed.items() if components in (role, "all") for p in ps]
    with out.status(f"loading {handle.ref} ({components})"):
        handle.pipeline(*parts)
    cfg = ServeConfig(
        model=r.settings.model,
        settings=ServerSettings(
            {k: v for k, v in flags.items() if v is not None},
            config,
            profile,
            Path(lora_dir) if lora_dir else None,
            resolved=r,
        ),
        components=components,
        token=token,
        encoder_url=encoder_url,
        encoder_key=os.environ.get(encoder_key_env),
        limits=ServerLimits(
            max_queue,
            max_body_bytes,
            max_prompt_chars,
            16,
            max_images,
            max_pixels,
            max_tokens,
            max_steps=max_steps,
            max_image_bytes=max_image_bytes,
            max_batch=max_batch,
        ),
        trusted_hosts=None if token or host not in LOOPBACK else ["127.0.0.1", "localhost", "::1", "[::1]"],
        data_dir=Path(data_dir).expanduser() if data_dir else None,
    )
    if token is None and host not in LOOPBACK:
        out.hint(f"--host {host} without --token-env: anyone who can reach this address can use the server")
    _log_to_stderr(quiet)
    app = create_app(cfg, engine)
    out.log(f"serving {cfg.model} ({components}) on http://{host}:{port}/ (API: http://{host}:{port}/v1)")
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning" if quiet else "info",
        access_log=not quiet,
        log_config=_uvicorn_logging(),
    )


def _uvicorn_logging() -> dict:
    """uvicorn's own logging, with its access log on stderr too (stdout is for data)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for handler in config.get("handlers", {}).values():
        if handler.get("stream") == "ext://sys.stdout":
            handler["stream"] = "ext://sys.stderr"
    return config


def _log_to_stderr(quiet: bool) -> None:
    """The server's own lines (jobs done or cancelled, failures with their traceback) on stderr."""
    import logging
    import sys

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("llmdit serve: %(message)s"))
    logger = logging.getLogger("llmdit.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _env_value(var: str, flag: str) -> str:
    import os

    from llmdit_cli.errors import UsageError

    value = os.environ.get(var, "")
    if not value.strip():
        raise UsageError(f"{flag} {var}: the variable is not set (or empty)")
    return value.strip()
