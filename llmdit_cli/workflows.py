"""The steps a command strings together: resolve settings, encode or read embeddings, denoise,
decode and write. Commands stay thin; sweeps and tests call these directly."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from llmdit_cli import __version__
from llmdit_cli.artifacts import embeds_tensors, read_stage, split_embeds, write_stage
from llmdit_cli.config import KEY_FLAG, Resolved
from llmdit_cli.errors import ModelError, UsageError
from llmdit_cli.models import FAMILIES, ModelHandle, Placement, check_size
from llmdit_cli.prompts import ChatFormat

ENCODER_FIELDS = ("system_prompt", "thinking_content", "enable_thinking", "assistant_content",
                  "hidden_layer", "max_length")
GEN_FIELDS = ("width", "height", "steps", "guidance_scale", "cfg_normalization", "cfg_truncation", "shift")
SLG_FIELDS = ("slg_scale", "slg_layers", "slg_start", "slg_stop")
DYPE_FIELDS = ("dype", "dype_method", "dype_scale", "dype_exponent", "dype_start_sigma", "dype_base_resolution")
# Recorded with every image; machine-specific, so --from-png does not reapply them.
OPT_FIELDS = ("attention_backend", "compile", "cpu_offload", "vae_tiling", "quantize", "transformer_file")
PLACEMENT_FIELDS = ("dtype", "device", "text_encoder_device", "dit_device", "vae_device", *OPT_FIELDS)
# Settings a PNG records that `generate --from-png` feeds back in as flags.
PNG_FLAGS = ("model", "negative_prompt", *GEN_FIELDS, "loras", *SLG_FIELDS, *DYPE_FIELDS)


def open_model(r: Resolved) -> ModelHandle:
    """The model handle (nothing loaded yet) for resolved settings."""
    placement = Placement(**{f: r[f] for f in PLACEMENT_FIELDS})
    return ModelHandle(r["model"], placement, list(r["loras"]))


def fill_family_defaults(r: Resolved, family: str) -> None:
    """Settings still unset take the model family's defaults (models.FAMILIES)."""
    for key, value in FAMILIES[family].items():
        if key == "slg_scale" and not r["slg"]:
            r.set_default(key, 0.0, "default (SLG off; --slg or --slg-scale turns it on)")
        r.set_default(key, value, f"model family {family}")


def chat_format(r: Resolved) -> ChatFormat:
    return ChatFormat(r["system_prompt"], r["thinking_content"], r["enable_thinking"], r["assistant_content"])


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


def encode(handle: ModelHandle, prompts: list[str], negative: str, r: Resolved, with_negative: bool = True) -> Embeds:
    """Encode prompts (and, unless `with_negative` is False, the negative prompt once per prompt)."""
    from llmdit_cli.stages import run_device
    from llmdit_cli.stages.encode import encode_texts

    fmt = chat_format(r)
    pipe = handle.pipeline("tokenizer", "text_encoder")
    device = run_device(pipe, pipe.text_encoder)
    texts = [fmt.format(p) for p in prompts]
    neg_texts = [fmt.format(negative) for _ in prompts]
    pos = encode_texts(pipe.tokenizer, pipe.text_encoder, texts, r["hidden_layer"], r["max_length"], device)
    neg = (encode_texts(pipe.tokenizer, pipe.text_encoder, neg_texts, r["hidden_layer"], r["max_length"], device)
           if with_negative else None)
    params = {"prompts": prompts, "negative_prompts": [negative] * len(prompts), "formatted": texts,
              "token_counts": pos.token_counts, "negative_token_counts": neg.token_counts if neg else [],
              "encoder": {f: r[f] for f in ENCODER_FIELDS}, "llmdit_version": __version__}
    return Embeds(pos.embeds, neg.embeds if neg else [], params, pipe.text_encoder.config.hidden_size)


def embeds_identity(handle: ModelHandle, e: Embeds) -> dict[str, Any]:
    return {**handle.identity("text_encoder"), "hidden_size": e.hidden_size,
            "hidden_layer": e.params["encoder"]["hidden_layer"], "dtype": str(e.cond[0].dtype).replace("torch.", ""),
            "count": len(e.cond)}


def write_embeds(path: str, handle: ModelHandle, e: Embeds) -> None:
    write_stage(path, "embeds", embeds_tensors(e.cond, e.uncond), embeds_identity(handle, e), e.params)


def read_embeds(path: str) -> Embeds:
    stage = read_stage(path, expect="embeds")
    cond, uncond = split_embeds(stage.tensors())  # parse_stage checked names, counts and shapes
    hidden = stage.meta_int("hidden_size") or int(cond[0].shape[-1])
    params = dict(stage.params)
    params.setdefault("prompts", [""] * len(cond))
    params.setdefault("negative_prompts", [""] * len(uncond))
    params.setdefault("encoder", {})
    made_by = {k: stage.meta.get(f"llmdit.{k}", "") for k in ("model", "text_encoder_config", "text_encoder_weights")}
    return Embeds(cond, uncond, params, hidden, stage.source, made_by)


def check_embeds_fit(e: Embeds, handle: ModelHandle, out=None) -> None:
    """Refuse embeddings this transformer cannot take; hint when another text encoder made them."""
    ours = handle.identity("text_encoder")
    keys = ("text_encoder_config", "text_encoder_weights")
    if out is not None and any(e.made_by.get(k) and e.made_by[k] != ours[k] for k in keys):
        out.hint(f"{e.source} was encoded by another text encoder ({e.made_by.get('model')}) than "
                 f"--model {handle.ref} has")
    cfg = handle.component_config("transformer")
    cap = cfg.get("cap_feat_dim")
    if cap is not None and cap != e.hidden_size:
        raise ModelError(f"{e.source}: embeddings have hidden size {e.hidden_size}, but the transformer of "
                         f"--model {handle.ref} expects cap_feat_dim {cap} (encode with the same model)")
    # Captions are padded to a multiple of 32 and image positions follow them on the caption axis
    # of the RoPE, so a caption may use at most axes_lens[0] - 32 positions (1504 for Z-Image).
    limit = cfg.get("axes_lens", [None])[0]
    if limit:
        limit -= 32
        longest = max(int(t.shape[0]) for t in [*e.cond, *e.uncond])
        if longest > limit:
            raise UsageError(f"{e.source}: a prompt has {longest} tokens, but --model {handle.ref} takes at most "
                             f"{limit}; shorten it or pass --max-length {limit}")


def seeds_for(r_seeds: list[int] | None, num_images: int) -> list[int]:
    if r_seeds:
        return list(r_seeds) if num_images == 1 else [s + k for s in r_seeds for k in range(num_images)]
    base = random.SystemRandom().randrange(2**32)
    return [base + k for k in range(num_images)]


def check_generation(r: Resolved) -> None:
    """Values each setting must have; a message names the flag, or the key and the file it came from."""
    for side in ("width", "height"):
        check_size(r[side], label=r.origin(side))
    if r["steps"] < 1:
        raise UsageError(f"{r.origin('steps')} {r['steps']}: must be at least 1")
    if r["guidance_scale"] < 0:
        raise UsageError(f"{r.origin('guidance_scale')} {r['guidance_scale']}: must be 0 (off) or positive")
    if not 0.0 <= r["strength"] <= 1.0:
        raise UsageError(f"{r.origin('strength')} {r['strength']}: must be in [0, 1]")


def slg_config(r: Resolved):
    from llmdit_cli.guidance.slg import SLGConfig

    return SLGConfig(scale=r["slg_scale"], layers=list(r["slg_layers"] or []), start=r["slg_start"],
                     stop=r["slg_stop"])


def dype_config(r: Resolved, handle: ModelHandle):
    """The DyPE settings, or None when DyPE is off."""
    from llmdit_cli.guidance.dype import DyPEConfig

    if not r["dype"]:
        return None
    patch = handle.component_config("transformer").get("all_patch_size", [2])[0]
    return DyPEConfig(base_tokens=r["dype_base_resolution"] // (handle.vae_scale_factor() * patch),
                      method=r["dype_method"], scale=r["dype_scale"], exponent=r["dype_exponent"],
                      start_sigma=r["dype_start_sigma"])


def check_guidance(r: Resolved, handle: ModelHandle, out=None) -> None:
    """Refuse SLG/DyPE settings this model cannot run (before it loads); hint at ones with no effect."""
    from llmdit_cli.guidance.dype import check_dype
    from llmdit_cli.guidance.slg import check_slg

    cfg = handle.component_config("transformer")
    slg = slg_config(r)
    check_slg(slg, int(cfg.get("n_layers", 0)))
    dype = dype_config(r, handle)
    if dype is not None:
        check_dype(dype)
    if out is None:
        return
    _hint_unused_flags(r, out, "slg", "SLG", slg.enabled, "--slg or --slg-scale > 0")
    _hint_unused_flags(r, out, "dype", "DyPE", dype is not None, "--dype")
    if slg.enabled and not any(slg.active_at(i, r["steps"]) for i in range(r["steps"])):
        out.hint(f"SLG window {slg.start:g}-{slg.stop:g} holds none of the {r['steps']} steps, so SLG does "
                 f"nothing; widen --slg-start/--slg-stop")
    if dype is not None and max(r["width"], r["height"]) <= r["dype_base_resolution"]:
        out.hint(f"--dype changes nothing at {r['width']}x{r['height']}: it acts above the base resolution "
                 f"{r['dype_base_resolution']} px (--dype-base-resolution)")
    patch = cfg.get("all_patch_size", [2])[0] * handle.vae_scale_factor()
    trained = min(cfg.get("axes_lens", [0, 0, 0])[1:] or [0]) * patch
    if not r["dype"] and trained and max(r["width"], r["height"]) > trained:
        out.hint(f"{r['width']}x{r['height']} is beyond the {trained} px the position embedding of --model "
                 f"{handle.ref} covers; positions are extrapolated (try --dype)")


def _hint_unused_flags(r: Resolved, out, section: str, label: str, on: bool, switch: str) -> None:
    given = [k for k, src in r.sources.items() if k.startswith(section + ".") and src == "flag"]
    if given and not on:
        names = ", ".join("--" + KEY_FLAG[k].replace("_", "-") for k in given)
        out.hint(f"{names} given, but {label} is off; switch it on with {switch}")


@dataclass
class Job:
    """One image to make: which prompt, which seed, and the settings recorded with it."""

    index: int
    prompt_index: int
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)


def plan_jobs(e: Embeds, seeds: list[int], r: Resolved, handle: ModelHandle, mode: str) -> list[Job]:
    jobs = []
    negatives = e.params.get("negative_prompts") or [""] * len(e.cond)
    for pi, prompt in enumerate(e.prompts):
        for seed in seeds:
            s = {"llmdit_version": __version__, "mode": mode, "model": handle.ref, "revision": handle.revision,
                 "prompt": prompt, "negative_prompt": negatives[pi] if pi < len(negatives) else "",
                 "seed": seed, "loras": list(r["loras"]), "encoder": e.params.get("encoder", {}),
                 **{f: r[f] for f in (*GEN_FIELDS, *SLG_FIELDS, *DYPE_FIELDS, *OPT_FIELDS)}}
            if mode == "img2img":
                s["strength"] = r["strength"]
            jobs.append(Job(len(jobs), pi, seed, s))
    return jobs


def denoise_params(r: Resolved, handle: ModelHandle):
    from llmdit_cli.stages.denoise import DenoiseParams

    return DenoiseParams(steps=r["steps"], guidance_scale=r["guidance_scale"],
                         cfg_normalization=r["cfg_normalization"], cfg_truncation=r["cfg_truncation"],
                         shift=r["shift"], slg=slg_config(r), dype=dype_config(r, handle))


def generator(seed: int):
    import torch

    # A CPU generator gives the same noise on every device, so seeds reproduce across machines.
    return torch.Generator(device="cpu").manual_seed(int(seed))


def run_jobs(handle: ModelHandle, e: Embeds, jobs: list[Job], r: Resolved, out, init=None) -> list:
    """Denoise every job; `init` is None (txt2img), a PIL image, or finished latents `[1, C, h, w]`."""
    from llmdit_cli.stages import denoise, vae

    pipe = handle.pipeline("transformer", "vae")
    device = denoise.transformer_device(pipe)
    p = denoise_params(r, handle)
    results = []
    for job in jobs:
        cond = [e.cond[job.prompt_index].to(device)]
        uncond = [e.uncond[job.prompt_index].to(device)] if e.uncond else []
        gen = generator(job.seed)
        with out.progress(f"image {job.index + 1}/{len(jobs)} seed {job.seed}", p.steps) as advance:
            if init is None:
                lat = denoise.txt2img(pipe, cond, uncond, p, r["height"], r["width"], gen, advance)
            else:
                start = vae.encode_image(pipe, init, gen, r["height"], r["width"]) if is_image(init) else init
                lat = denoise.img2img(pipe, cond, uncond, p, start, r["strength"], gen, advance)
        results.append(lat)
    return results


def is_image(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def latents_identity(handle: ModelHandle, lat, height: int, width: int) -> dict[str, Any]:
    vae = handle.identity("vae")
    return {**handle.identity("transformer"), "vae_config": vae["vae_config"], "vae_weights": vae["vae_weights"],
            "height": height, "width": width, "sigma": 0, "channels": int(lat.shape[1]), "count": int(lat.shape[0])}
