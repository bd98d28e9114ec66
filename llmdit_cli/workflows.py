"""The steps a request strings together, over typed settings (`Resolved.settings`): open a model,
fill the family's defaults, check, encode, plan jobs, run jobs. The engine calls these; messages
name settings by key (`errors.setting`), so every front end can name them its own way."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from llmdit_cli import __version__
from llmdit_cli.artifacts import embeds_file_bytes, read_stage, split_embeds, write_bytes_atomic
from llmdit_cli.config import EncoderSettings, Resolved
from llmdit_cli.errors import ModelError, UsageError, setting
from llmdit_cli.families import check_feature
from llmdit_cli.models import ModelHandle, Placement
from llmdit_cli.prompts import ChatFormat
from llmdit_cli.stages.lengths import LONG_MODES, fill_length, fit_length

ENCODER_FIELDS = tuple(EncoderSettings.model_fields)


def open_model(r: Resolved) -> ModelHandle:
    """The model handle (nothing loaded yet) for resolved settings."""
    s = r.settings
    return ModelHandle(s.model, Placement(**s.optimization.model_dump()), list(s.lora.loras), key=r.model_setting)


def fill_family_defaults(r: Resolved, defaults: dict[str, Any], label: str) -> Resolved:
    """The plan with its unset settings taken from the model family's defaults (`families`),
    named `label`; with SLG off the family's SLG scale does not apply."""
    if "slg_scale" in defaults and not r["slg"]:
        r = r.with_defaults({"slg_scale": 0.0}, "default (SLG off; slg.enabled or slg.scale > 0 turns it on)")
    return r.with_defaults(defaults, f"model family {label}")


def chat_format(r: Resolved):
    """The chat formatting the settings ask for, and the template it came from (or None): a
    template fills the system prompt, thinking and assistant text left unset, and the thinking
    switch unless it was set."""
    from llmdit_cli.prompt_templates import find

    s = r.settings
    e = s.encoder
    if not e.template:
        return ChatFormat(e.system_prompt, e.thinking_content, e.enable_thinking, e.assistant_content), None
    t = find(e.template, s.templates.dir)
    thinking = e.enable_thinking if _chosen(r, "encoder.enable_thinking") else t.meta.enable_thinking
    return ChatFormat(
        e.system_prompt if _chosen(r, "encoder.system_prompt") else t.system,
        e.thinking_content if e.thinking_content is not None else t.meta.thinking_content,
        thinking,
        e.assistant_content if e.assistant_content is not None else t.meta.assistant_content,
    ), t


def _chosen(r: Resolved, key: str) -> bool:
    """Whether the caller chose `key` (a flag, config, environment, stored settings): a template
    fills what is left to the defaults or the model family (its system prompt, say)."""
    source = r.sources.get(key, "default")
    return source != "default" and not source.startswith("model family")


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


def fill_vl_model(r: Resolved, handle: ModelHandle) -> Resolved:
    """`vl.model` left unset takes the model family's (encode and rewrite run without `Engine.prepare`)."""
    return r.with_defaults({"vl_model": handle.defaults().get("vl_model")}, f"model family {handle.variant}")


def with_vision(handle: ModelHandle, embeds: list, prompts: list[str], r: Resolved, image, report=None):
    """The prompt embeddings with `image` (the opened vl.image) blended in (`vision.py`), and what
    the header records about it; unchanged (and no VL model loaded) without one or at alpha 0."""
    from llmdit_cli import vision

    if image is None:
        return embeds, None
    v = fill_vl_model(r, handle).vl
    recorded = vision.record(v, vision.image_digest(v.image))
    if v.alpha == 0:
        return embeds, recorded
    pl = handle.placement
    if report is not None:
        report.log(f"vision conditioning: {v.image} at alpha {v.alpha} ({v.blend_mode})")
    model = vision.load(v.model, pl.device_for("text_encoder"), pl.torch_dtype(), pl.cpu_offload != "none")
    blended = []
    for tensor, prompt in zip(embeds, prompts):
        states = model.states(image, prompt, v.hidden_layer, v.tokens)
        blended.append(vision.blend(tensor, states.to(tensor.device), v.alpha, v.blend_mode))
    return blended, recorded


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


@dataclass(frozen=True)
class Beyond:
    """A setting the model cannot take: its key, the value shown, and why."""

    key: str
    value: Any
    why: str


def beyond_limits(s, lim) -> list[Beyond]:
    """The settings (`config.Settings`; values left unset are the family's, which fit) that go
    beyond what the model can take (`lim`: its `Limits`), read from its configs: nothing loads.
    Requests refuse the first (`check_limits`); sweeps leave such cells out."""
    found = []
    n, e = lim.text_hidden_states, s.encoder
    if e.hidden_layer is not None and not -n <= e.hidden_layer < n:
        found.append(
            Beyond(
                "encoder.hidden_layer", e.hidden_layer, f"the text encoder has {n} hidden states (valid: {-n}..{n - 1})"
            )
        )
    slg_on = s.slg.enabled or (s.slg.scale or 0) > 0
    bad = [i for i in (s.slg.layers or []) if not 0 <= i < lim.blocks] if slg_on else []
    if bad:
        found.append(
            Beyond(
                "slg.layers",
                ",".join(map(str, bad)),
                f"the transformer has {lim.blocks} layers (indices 0-{lim.blocks - 1})",
            )
        )
    if e.caption_length and lim.caption_tokens and e.caption_length > lim.caption_tokens:
        found.append(
            Beyond(
                "encoder.caption_length",
                e.caption_length,
                f"the model takes at most {lim.caption_tokens} caption tokens",
            )
        )
    return found


def check_limits(r: Resolved, handle: ModelHandle) -> None:
    """Refuse the first setting beyond the model (`beyond_limits`), named as it was given."""
    for b in beyond_limits(r.settings, handle.limits()):
        raise UsageError(f"{r.origin(b.key)} {b.value}: {b.why}")


def validate_encoding(r: Resolved, handle: ModelHandle) -> None:
    """What encoding needs checked, once per request and before the text encoder loads."""
    if r.vl.image:
        check_feature(handle.family, "vision", "vl.image", handle.ref)
    check_limits(r, handle)


def validate(r: Resolved, handle: ModelHandle, report=None) -> None:
    """Every check of a generation request, once, before anything loads (family defaults filled):
    the settings' own ranges, what the model's family offers and what its configs allow. The
    stages assume what passed here."""
    check_generation(r, handle.limits())
    validate_encoding(r, handle)
    check_guidance(r, handle, report)


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
                f"takes; brought within it by {mode} ({setting('encoder.long_prompt_mode')})"
            )


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
                    f"{handle.ref} takes; brought within it by {enc.long_prompt_mode} "
                    f"({setting('encoder.long_prompt_mode')})"
                )
            t = fit_length(t, limit, enc.long_prompt_mode)
        if enc.caption_length:
            t = fill_length(t, enc.caption_length, enc.caption_fill)
        out.append(t)
    return out


def seeds_for(r_seeds: list[int] | None, num_images: int) -> list[int]:
    if r_seeds:
        return list(r_seeds) if num_images == 1 else [s + k for s in r_seeds for k in range(num_images)]
    base = random.SystemRandom().randrange(2**32)
    return [base + k for k in range(num_images)]


def check_size(value: int, label: str, multiple: int = 16) -> None:
    if value < multiple or value % multiple:
        raise UsageError(f"{label} {value}: must be a positive multiple of {multiple}")


def check_generation(r: Resolved, lim) -> None:
    """Values each setting must have (sides on the model's token grid, `lim`: its `Limits`); a
    message names the setting and, unless the caller gave it, where its value came from."""
    g = r.generation
    for side in ("width", "height"):
        check_size(getattr(g, side), label=r.origin(side), multiple=lim.size_multiple)
    if g.steps < 1:
        raise UsageError(f"{r.origin('steps')} {g.steps}: must be at least 1")
    if g.guidance_scale < 0:
        raise UsageError(f"{r.origin('guidance_scale')} {g.guidance_scale}: must be 0 (off) or positive")
    if not 0.0 <= g.strength <= 1.0:
        raise UsageError(f"{r.origin('strength')} {g.strength}: must be in [0, 1]")


def check_guidance(r: Resolved, handle: ModelHandle, out=None) -> None:
    """Refuse SLG/DyPE settings this model cannot run (before it loads); hint at ones with no effect."""
    from llmdit_cli.guidance.dype import DyPEConfig, check_dype
    from llmdit_cli.guidance.slg import SLGConfig, check_slg

    _check_features(r, handle)
    lim = handle.limits()
    slg = SLGConfig.from_settings(r.slg)
    check_slg(slg)
    dype = DyPEConfig.from_settings(r.dype, lim)
    if dype is not None:
        check_dype(dype)
    if out is None:
        return
    g, d = r.generation, r.dype
    _hint_unused(r, out, "slg", "SLG", slg.enabled, f"{setting('slg.enabled')} or {setting('slg.scale')} > 0")
    _hint_unused(r, out, "dype", "DyPE", dype is not None, setting("dype.enabled"))
    if slg.enabled and not any(slg.active_at(i, g.steps) for i in range(g.steps)):
        out.hint(
            f"SLG window {slg.start:g}-{slg.stop:g} holds none of the {g.steps} steps, so SLG does "
            f"nothing; widen {setting('slg.start')}/{setting('slg.stop')}"
        )
    if dype is not None and max(g.width, g.height) <= d.base_resolution:
        out.hint(
            f"{setting('dype.enabled')} changes nothing at {g.width}x{g.height}: it acts above the base "
            f"resolution {d.base_resolution} px ({setting('dype.base_resolution')})"
        )
    trained = lim.trained_size
    if not d.enabled and trained and max(g.width, g.height) > trained:
        out.hint(
            f"{g.width}x{g.height} is beyond the {trained} px the position embedding of {setting('model')} "
            f"{handle.ref} covers; positions are extrapolated (try {setting('dype.enabled')})"
        )


def _check_features(r: Resolved, handle: ModelHandle) -> None:
    """Refuse settings for what the model's family does not offer (`families.FEATURES`)."""
    s = r.settings
    slg_on = s.slg.enabled or (s.slg.scale or 0) > 0
    wanted = {
        "slg": (slg_on, "slg.enabled"),
        "dype": (s.dype.enabled, "dype.enabled"),
        "lora": (s.lora.loras, "lora.loras"),
    }
    for feature, (on, key) in wanted.items():
        if on:
            check_feature(handle.family, feature, key, handle.ref)


def _hint_unused(r: Resolved, out, section: str, label: str, on: bool, switch: str) -> None:
    given = r.given(section)
    if given and not on:
        out.hint(f"{', '.join(setting(k) for k in given)} given, but {label} is off; switch it on with {switch}")


@dataclass
class Job:
    """One image to make: which prompt, which seed, and the settings recorded with it."""

    index: int
    prompt_index: int
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)


def plan_jobs(e: Embeds, seeds: list[int], r: Resolved, handle: ModelHandle, mode: str) -> list[Job]:
    """One job per (prompt, seed); each records every recorded setting (`Resolved.record`) and the
    prompt, negative prompt and encoder settings its embeddings were made with."""
    jobs = []
    negatives = e.params.get("negative_prompts") or [""] * len(e.cond)
    recorded = r.record(mode)
    for pi, prompt in enumerate(e.prompts):
        for seed in seeds:
            s = {
                "llmdit_version": __version__,
                "mode": mode,
                **recorded,
                "model": handle.ref,
                "revision": handle.revision,
                "prompt": prompt,
                "negative_prompt": negatives[pi] if pi < len(negatives) else "",
                "seed": seed,
                "encoder": e.params.get("encoder", {}),
                **({"template": e.params["template"]} if e.params.get("template") else {}),
                **({"vl": e.params["vl"]} if e.params.get("vl") else {}),
            }
            jobs.append(Job(len(jobs), pi, seed, s))
    return jobs


def generator(seed: int):
    import torch

    # A CPU generator gives the same noise on every device, so seeds reproduce across machines.
    return torch.Generator(device="cpu").manual_seed(int(seed))


def run_jobs(handle: ModelHandle, e: Embeds, jobs: list[Job], r: Resolved, out, init=None) -> list:
    """Denoise every job; `init` is None (txt2img), a PIL image, or finished latents `[1, C, h, w]`."""
    code = handle.code
    pipe = handle.pipeline("transformer", "vae")
    device = code.transformer_device(pipe)
    p = code.denoise_params(r.settings, handle.limits())
    g = r.generation
    results = []
    for job in jobs:
        cond = [e.cond[job.prompt_index].to(device)]
        uncond = [e.uncond[job.prompt_index].to(device)] if e.uncond else []
        gen = generator(job.seed)
        with out.progress(f"image {job.index + 1}/{len(jobs)} seed {job.seed}", p.steps) as advance:
            if init is None:
                lat = code.txt2img(pipe, cond, uncond, p, g.height, g.width, gen, advance)
            else:
                start = code.encode_image(pipe, init, gen, g.height, g.width) if is_image(init) else init
                lat = code.img2img(pipe, cond, uncond, p, start, g.strength, gen, advance)
        results.append(lat)
    return results


def is_image(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def latents_identity(handle: ModelHandle) -> dict[str, Any]:
    """What identifies the models that made latents: the transformer and the VAE."""
    vae = handle.identity("vae")
    return {**handle.identity("transformer"), "vae_config": vae["vae_config"], "vae_weights": vae["vae_weights"]}


# -- layers (Qwen-Image-Layered, Qwen-Image-Edit-Plus) ----------------------------------------------


def fill_layer_defaults(r: Resolved, handle: ModelHandle) -> Resolved:
    """The family's defaults for what the settings leave unset, and model CPU offload on CUDA where
    `optimization.cpu_offload` is still at its built-in default (these models do not fit most
    GPUs whole)."""
    defaults = dict(handle.defaults())
    offload = defaults.pop("cpu_offload", None)
    r = fill_family_defaults(r, defaults, handle.variant)
    key = "optimization.cpu_offload"
    if offload and r.sources.get(key) == "default" and _uses_cuda(r):
        r = r.with_value(key, offload, f"model family {handle.variant} (on CUDA)")
        handle.placement.cpu_offload = offload
    return r


def _uses_cuda(r: Resolved) -> bool:
    return Placement(**r.optimization.model_dump()).base_device().startswith("cuda")


def layer_settings(r: Resolved, handle: ModelHandle, seed: int, **extra: Any) -> dict[str, Any]:
    """What layers.json records of a decomposition or an edit."""
    s = r.layered
    return {
        "model": handle.ref,
        "revision": handle.revision,
        "seed": seed,
        "steps": s.steps,
        "true_cfg_scale": s.true_cfg_scale,
        "negative_prompt": s.negative_prompt,
        **extra,
    }
