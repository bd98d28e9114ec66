"""Prompt embeddings: encode (through the on-disk cache, with vision conditioning and caption
lengths), read and write embeds files, check that embeddings fit a model, and encode on a remote
`llmdit serve`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmdit_cli import __version__
from llmdit_cli.artifacts import embeds_file_bytes, read_stage, split_embeds, write_bytes_atomic
from llmdit_cli.config import EncoderSettings, Resolved
from llmdit_cli.errors import ModelError, UsageError, setting
from llmdit_cli.models import ModelHandle
from llmdit_cli.stages.lengths import LONG_MODES, fill_length, fit_length
from llmdit_cli.workflows.plan import chat_format

ENCODER_FIELDS = tuple(EncoderSettings.model_fields)


@dataclass
class Embeds:
    """Positive and negative embeddings for a batch of prompts, with how they were made."""

    cond: list
    uncond: list
    params: dict[str, Any]
    hidden_size: int
    source: str = "in-process"
    made_by: dict[str, str] = field(default_factory=dict)  # the producing model's identity, from a file

    @property
    def prompts(self) -> list[str]:
        return self.params["prompts"]


def encode(handle: ModelHandle, prompts: list[str], r: Resolved, with_negative: bool = True, report=None) -> Embeds:
    """Encode prompts (and, unless `with_negative` is False, the negative prompt once per prompt),
    through the embedding cache unless it is off, then bring them to the caption lengths the
    settings ask for (`stages/lengths.py`)."""
    s = r.settings
    enc, negative = s.encoder, s.generation.negative_prompt
    fmt, template = chat_format(r)
    texts = [fmt.format(p) for p in prompts]
    neg_texts = [fmt.format(negative) for _ in prompts]
    if not prompts:
        raise UsageError("no prompt to encode")
    image = None
    if s.vl.image:
        from llmdit_cli.vision import open_image

        image = open_image(s.vl.image)  # a missing or broken image fails before the text encoder loads
    check_cut(handle, texts, r, report)
    pos = encode_cached(handle, texts, r, report)
    neg = encode_cached(handle, neg_texts, r, report) if with_negative else []
    seen, vl_record = with_vision(handle, [t for t, _ in pos], prompts, r, image, report)
    cond = shape_lengths(seen, r, handle, report)
    uncond = shape_lengths([t for t, _ in neg], r, handle, report)
    params = {
        "prompts": prompts,
        "negative_prompts": [negative] * len(prompts),
        "formatted": texts,
        "token_counts": [n for _, n in pos],
        "negative_token_counts": [n for _, n in neg],
        # What formatting really ran (a template's values filled in), so `--from-png` repeats it.
        "encoder": {
            **enc.model_dump(),
            "system_prompt": fmt.system_prompt,
            "thinking_content": fmt.thinking_content,
            "enable_thinking": fmt.enable_thinking,
            "assistant_content": fmt.assistant_content,
        },
        **({"template": template.record()} if template else {}),
        **({"vl": vl_record} if vl_record else {}),
        "llmdit_version": __version__,
    }
    return Embeds(cond, uncond, params, int(cond[0].shape[-1]))


def with_vision(handle: ModelHandle, embeds: list, prompts: list[str], r: Resolved, image, report=None):
    """The prompt embeddings with `image` (the opened vl.image) blended in (`vision.py`), and what
    the header records about it; unchanged (and no VL model loaded) without one or at alpha 0."""
    from llmdit_cli import vision

    if image is None:
        return embeds, None
    v = r.vl
    recorded = vision.record(v, vision.image_digest(v.image))
    if v.alpha == 0:
        return embeds, recorded
    pl = handle.placement
    if report is not None:
        report.log(f"vision conditioning: {v.image} at alpha {v.alpha} ({v.blend_mode})")
    model = vision.load(v.model, v.device or pl.device_for("text_encoder"), pl.torch_dtype(), pl.cpu_offload != "none")
    blended = []
    for tensor, prompt in zip(embeds, prompts):
        states = model.states(image, prompt, v.hidden_layer, v.tokens)
        blended.append(vision.blend(tensor, states.to(tensor.device), v.alpha, v.blend_mode))
    return blended, recorded


def check_cut(handle: ModelHandle, texts: list[str], r: Resolved, report=None) -> None:
    """A formatted prompt longer than `encoder.max_length` is cut by the tokenizer to its first
    max_length tokens: say so (tokens kept and dropped), or refuse it when
    `encoder.long_prompt_mode` is `error`. (The model's own caption limit, 1504 tokens on Z-Image,
    is another, later limit: `stages/lengths.py`.)"""
    enc = r.encoder
    tokenizer = handle.tokenizer()
    for i, text in enumerate(texts):
        n = len(tokenizer(text, truncation=False).input_ids)
        if n <= enc.max_length:
            continue
        where = f"prompt {i + 1}" if len(texts) > 1 else "the prompt"
        cut = f"{where} is {n} tokens formatted (template included); {setting('encoder.max_length')} {enc.max_length}"
        if enc.long_prompt_mode == "error":
            raise UsageError(
                f"{cut} would cut it ({setting('encoder.long_prompt_mode')} error); raise the limit or shorten it"
            )
        if report is not None:
            report.hint(f"{cut} keeps the first {enc.max_length} and drops {n - enc.max_length}")


def encode_cached(handle: ModelHandle, texts: list[str], r: Resolved, report=None) -> list[tuple[Any, int]]:
    """(embedding, token count) per formatted text: cached entries as they are, the rest encoded in
    one batch (the text encoder loads only then) and stored."""
    from llmdit_cli.embed_cache import EmbedCache
    from llmdit_cli.stages import run_device

    s = r.settings
    enc = s.encoder
    cache = EmbedCache.at(s.cache.dir) if s.cache.enabled else None
    identity = {**handle.identity("text_encoder"), "text_encoder_weights": handle.weights_key("text_encoder")}
    pl = handle.placement
    # What else changes the numbers: the dtype really used, the device kind, quantization.
    variant = f"{pl.torch_dtype()}|{str(pl.device_for('text_encoder')).split(':')[0]}|{pl.quantize}"
    keys = [cache.key(identity, t, enc.hidden_layer, enc.max_length, variant) for t in texts] if cache else []
    found = [cache.get(k) for k in keys] if cache else [None] * len(texts)
    missing = [i for i, hit in enumerate(found) if hit is None]
    if missing:
        pipe = handle.pipeline("tokenizer", "text_encoder")
        device = run_device(pipe, pipe.text_encoder)
        out = handle.code.encode_texts(
            pipe.tokenizer, pipe.text_encoder, [texts[i] for i in missing], enc.hidden_layer, enc.max_length, device
        )
        for i, tensor, count in zip(missing, out.embeds, out.token_counts):
            found[i] = (tensor, count)
            if cache and not cache.put(keys[i], tensor, count, identity, enc.hidden_layer, texts[i]):
                _unwritable(cache.root, report)
    return found


_UNWRITABLE: set = set()


def _unwritable(root, report) -> None:
    """Say once per process and folder that the cache cannot be written (the run goes on without)."""
    if root not in _UNWRITABLE and report is not None:
        report.hint(
            f"the embedding cache {root} cannot be written; running without storing "
            f"({setting('cache.dir')}, {setting('cache.enabled')})"
        )
    _UNWRITABLE.add(root)


def encoder_request_settings(r: Resolved) -> dict[str, Any]:
    """The settings that shape embeddings, by field name: what a remote encoder (`llmdit serve`)
    needs to encode as this process would, whatever its own config says. The thinking switch goes
    only when given: left unset, a template's own choice applies on both ends."""
    e = r.encoder
    sent = {f: getattr(e, f) for f in ENCODER_FIELDS if f != "enable_thinking"}
    if r.sources.get("encoder.enable_thinking") != "default":
        sent["enable_thinking"] = e.enable_thinking
    sent["negative_prompt"] = r.generation.negative_prompt
    return {k: v for k, v in sent.items() if v is not None}


def check_remote_template(r: Resolved, params: dict[str, Any], where: str) -> None:
    """Refuse embeddings the server made with another template of the same name."""
    from llmdit_cli.prompt_templates import find

    name = r.encoder.template
    if name and params.get("template") != find(name, r.templates.dir).record():
        raise UsageError(
            f"{where}: the server's template {name!r} is not yours (another file of that name); "
            f"its embeddings would differ from local encoding"
        )


def remote_encode(url: str, prompts: list[str], r: Resolved, handle: ModelHandle, key, timeout: float, where: str):
    """The prompts' embeddings made by an `llmdit serve` text encoder with these settings (and
    negatives when the model's guidance uses them): the same tensors local encoding gives with the
    same model."""
    with_negative = handle.code.wants_negative(r.generation)
    return embeds_of(remote_embeds_file(url, prompts, r, with_negative, key, timeout, where)[1])


def remote_embeds_file(url: str, prompts: list[str], r: Resolved, with_negative: bool, key, timeout: float, where: str):
    """(bytes, parsed stage) of the embeds file an `llmdit serve` makes for the prompts, checked:
    a stage file, and the same template as here."""
    from llmdit_cli.artifacts import parse_stage
    from llmdit_cli.remote import encode_remote

    if r.vl.image:
        raise UsageError(f"{setting('vl.image')} conditions with a local Qwen3-VL; it does not go with {where}")
    data = encode_remote(url, prompts, encoder_request_settings(r), with_negative, key, timeout, where)
    stage = parse_stage(data, where, "embeds")
    check_remote_template(r, stage.params, where)
    return data, stage


def write_embeds(path: str, handle: ModelHandle, e: Embeds) -> None:
    write_bytes_atomic(path, embeds_bytes(handle, e))


def embeds_bytes(handle: ModelHandle, e: Embeds) -> bytes:
    """The embeds stage file of `e`, as `encode -o` writes it."""
    return embeds_file_bytes(
        e.cond, e.uncond, handle.identity("text_encoder"), e.params["encoder"]["hidden_layer"], e.params
    )


def read_embeds(path: str) -> Embeds:
    return embeds_of(read_stage(path, expect="embeds"))


def embeds_of(stage) -> Embeds:
    """Embeds from a parsed embeds stage file (`artifacts.parse_stage(..., expect="embeds")`)."""
    cond, uncond = split_embeds(stage.tensors())  # parse_stage checked names, counts and shapes
    hidden = stage.meta_int("hidden_size") or int(cond[0].shape[-1])
    params = dict(stage.params)
    params.setdefault("prompts", [""] * len(cond))
    params.setdefault("negative_prompts", [""] * len(uncond))
    params.setdefault("encoder", {})
    made_by = {k: stage.meta.get(f"llmdit.{k}", "") for k in ("model", "text_encoder_config", "text_encoder_weights")}
    return Embeds(cond, uncond, params, hidden, stage.source, made_by)


def check_embeds_fit(e: Embeds, handle: ModelHandle, out=None, r: Resolved | None = None) -> None:
    """Refuse embeddings this transformer cannot take; hint when another text encoder made them;
    bring prompts longer than it takes within its limit (the mode they were encoded with)."""
    model = setting("model")
    ours = handle.identity("text_encoder")
    keys = ("text_encoder_config", "text_encoder_weights")
    if out is not None and any(e.made_by.get(k) and e.made_by[k] != ours[k] for k in keys):
        out.hint(
            f"{e.source} was encoded by another text encoder ({e.made_by.get('model')}) than {model} {handle.ref} has"
        )
    lim = handle.limits()
    if lim.text_hidden_size is not None and lim.text_hidden_size != e.hidden_size:
        raise ModelError(
            f"{e.source}: embeddings have hidden size {e.hidden_size}, but the transformer of "
            f"{model} {handle.ref} takes hidden size {lim.text_hidden_size} (encode with the same model)"
        )
    limit = lim.caption_tokens
    longest = max(int(t.shape[0]) for t in [*e.cond, *e.uncond])
    if limit and longest > limit:
        mode = e.params.get("encoder", {}).get("long_prompt_mode") or "truncate"
        if r is not None and r.sources.get("encoder.long_prompt_mode") == "flag":
            mode = r.encoder.long_prompt_mode  # the caller's choice over the file's
        mode = mode if mode in LONG_MODES else "truncate"
        e.cond = [fit_length(t, limit, mode) for t in e.cond]
        e.uncond = [fit_length(t, limit, mode) for t in e.uncond]
        if out is not None:
            out.hint(
                f"{e.source}: a prompt has {longest} tokens, more than the {limit} {model} {handle.ref} "
                f"takes; {setting('encoder.long_prompt_mode')} {mode} {_how_fitted(mode, longest, limit)}"
            )


def _how_fitted(mode: str, tokens: int, limit: int) -> str:
    if mode == "truncate":
        return f"keeps the first {limit} and drops {tokens - limit}"
    return f"brings all {tokens} into {limit}"


def shape_lengths(tensors: list, r: Resolved, handle: ModelHandle, report=None) -> list:
    """Each embedding within the caption limit (`encoder.long_prompt_mode`), then at exactly
    `encoder.caption_length` tokens when that is set (`encoder.caption_fill`)."""
    enc = r.encoder
    limit = handle.limits().caption_tokens
    out = []
    for t in tensors:
        if limit and t.shape[0] > limit:
            if report is not None and enc.long_prompt_mode != "error":
                report.hint(
                    f"a prompt has {t.shape[0]} tokens, more than the {limit} {setting('model')} "
                    f"{handle.ref} takes; {setting('encoder.long_prompt_mode')} {enc.long_prompt_mode} "
                    f"{_how_fitted(enc.long_prompt_mode, int(t.shape[0]), limit)}"
                )
            t = fit_length(t, limit, enc.long_prompt_mode)
        if enc.caption_length:
            t = fill_length(t, enc.caption_length, enc.caption_fill)
        out.append(t)
    return out
