from __future__ import annotations

from typing import Annotated

import typer

from llmdit_cli.cli.common import encoder_flags, model_flags, settings
from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    G_PROMPT,
    REMOTE_KEY_ENV,
    ApiUrlOpt,
    AssistantOpt,
    CacheDirOpt,
    CacheOpt,
    CaptionFillOpt,
    CaptionLengthOpt,
    ConfigOpt,
    CpuOffloadOpt,
    DeviceOpt,
    DtypeOpt,
    EmbedsOutputOpt,
    EnableThinkingOpt,
    FileOpt,
    HiddenLayerOpt,
    JsonOpt,
    LongPromptModeOpt,
    MaxLengthOpt,
    ModelOpt,
    NegativeOpt,
    ProfileOpt,
    PromptsArg,
    QuantizeOpt,
    QuietOpt,
    RemoteKeyEnvOpt,
    RemoteTimeoutOpt,
    SystemPromptOpt,
    TemplateOpt,
    TemplatesDirOpt,
    TextEncoderDeviceOpt,
    ThinkingOpt,
    VlAlphaOpt,
    VlBlendModeOpt,
    VlDeviceOpt,
    VlHiddenLayerOpt,
    VlImageOpt,
    VlModelOpt,
    VlTokensOpt,
)
from llmdit_cli.cli.output import Output


@handle_errors
def encode(
    prompts: PromptsArg = None,
    file: FileOpt = None,
    output: EmbedsOutputOpt = None,
    negative_prompt: NegativeOpt = None,
    system_prompt: SystemPromptOpt = None,
    thinking_content: ThinkingOpt = None,
    enable_thinking: EnableThinkingOpt = None,
    assistant_content: AssistantOpt = None,
    hidden_layer: HiddenLayerOpt = None,
    max_length: MaxLengthOpt = None,
    template: TemplateOpt = None,
    templates_dir: TemplatesDirOpt = None,
    long_prompt_mode: LongPromptModeOpt = None,
    caption_length: CaptionLengthOpt = None,
    caption_fill: CaptionFillOpt = None,
    cache: CacheOpt = None,
    cache_dir: CacheDirOpt = None,
    vl_image: VlImageOpt = None,
    vl_alpha: VlAlphaOpt = None,
    vl_blend_mode: VlBlendModeOpt = None,
    vl_model: VlModelOpt = None,
    vl_hidden_layer: VlHiddenLayerOpt = None,
    vl_tokens: VlTokensOpt = None,
    vl_device: VlDeviceOpt = None,
    show_format: Annotated[
        bool,
        typer.Option(
            "--show-format",
            help="Print the formatted chat text and token count; load no model weights.",
            rich_help_panel=G_PROMPT,
        ),
    ] = False,
    api_url: ApiUrlOpt = None,
    api_key_env: RemoteKeyEnvOpt = REMOTE_KEY_ENV,
    timeout: RemoteTimeoutOpt = 300.0,
    model: ModelOpt = None,
    dtype: DtypeOpt = None,
    device: DeviceOpt = None,
    text_encoder_device: TextEncoderDeviceOpt = None,
    cpu_offload: CpuOffloadOpt = None,
    quantize: QuantizeOpt = None,
    config: ConfigOpt = None,
    profile: ProfileOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Encode prompts with the text encoder into an embeds file for `generate --from-embeds`.

    Prompts come as arguments, from --file (one per line) or from stdin ('-'). The default chat
    formatting and hidden layer equal what the model's stock diffusers pipeline (ZImagePipeline,
    QwenImagePipeline) feeds its transformer.

    Example: llmdit encode "a red circle on a blue background" --model demo -o circle.embeds.safetensors
    """
    from llmdit_cli.artifacts import check_binary_target
    from llmdit_cli.engine import EncodeRequest, Engine
    from llmdit_cli.errors import UsageError
    from llmdit_cli.prompts import collect_prompts
    from llmdit_cli.workflows import chat_format, write_embeds

    out = Output(quiet, json_out)
    r = settings(
        config,
        profile,
        negative_prompt=negative_prompt,
        **encoder_flags(system_prompt, thinking_content, enable_thinking, assistant_content, hidden_layer, max_length),
        **model_flags(model, dtype, device, text_encoder_device, None, None, cpu_offload),
        quantize=quantize,
        template=template,
        templates_dir=templates_dir or None,
        cache=cache,
        cache_dir=cache_dir,
        long_prompt_mode=long_prompt_mode,
        caption_length=caption_length,
        caption_fill=caption_fill,
        vl_image=vl_image,
        vl_alpha=vl_alpha,
        vl_blend_mode=vl_blend_mode,
        vl_model=vl_model,
        vl_hidden_layer=vl_hidden_layer,
        vl_tokens=vl_tokens,
        vl_device=vl_device,
    )
    texts = collect_prompts(prompts, file)
    if not texts:
        raise UsageError("no prompt: give prompts as arguments, with --file, or '-' for stdin")
    if output is not None and not output.strip():
        raise UsageError(f"-o {output!r}: give a file name, or - for stdout")
    if api_url:
        _encode_remote(api_url, texts, r, api_key_env, timeout, output or "-", show_format, out)
        return
    engine = Engine()
    handle, _, settled = engine.settled(r)
    if show_format:
        _show_format(handle, chat_format(settled)[0], texts, settled.encoder.max_length, out)
        return
    target = output or "-"
    check_binary_target(target)
    out.stdout_is_binary = target == "-"
    e = engine.encode(EncodeRequest(r, texts), out)
    write_embeds(target, handle, e)
    for text, n, t in zip(texts, e.params["token_counts"], e.cond):
        kept = f" ({t.shape[0]} in the file)" if t.shape[0] != n else ""
        out.log(f"encoded {n} tokens{kept}: {text[:60]}")
    out.wrote(target, "embeds", prompt=texts, seed=None, settings=e.params)


def _encode_remote(url, texts, r, key_env, timeout, target, show_format, out) -> None:
    """Encode on an `llmdit serve` and write its embeds file as it came (checked first)."""
    import os

    from llmdit_cli.artifacts import check_binary_target, write_bytes_atomic
    from llmdit_cli.errors import UsageError
    from llmdit_cli.workflows import remote_embeds_file

    if show_format:
        raise UsageError("--show-format works on the local tokenizer; drop --api-url")
    if timeout <= 0:
        raise UsageError(f"--timeout {timeout}: must be positive")
    check_binary_target(target)
    out.stdout_is_binary = target == "-"
    where = f"--api-url {url}"
    with out.status(f"encoding {len(texts)} prompt(s) on {url}"):
        data, stage = remote_embeds_file(url, texts, r, True, os.environ.get(key_env), timeout, where)
    write_bytes_atomic(target, data)
    for text, n in zip(texts, stage.params.get("token_counts", [])):
        out.log(f"encoded {n} tokens: {text[:60]}")
    out.wrote(target, "embeds", prompt=texts, seed=None, settings=stage.params)


def _show_format(handle, fmt, texts, max_length, out) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(handle.folder / "tokenizer", local_files_only=True)
    for text in texts:
        formatted = fmt.format(text)
        n = len(tokenizer(formatted).input_ids)
        out.data(formatted)
        note = f" (truncated to {max_length})" if n > max_length else ""
        out.data(f"[{n} tokens{note}]")
