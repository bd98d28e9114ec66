"""Jobs: one image per (prompt, seed), its settings record, and running them through the family's
stage functions; and what a layer folder records of its models' work."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from llmdit_cli import __version__
from llmdit_cli.config import Resolved
from llmdit_cli.errors import UsageError
from llmdit_cli.models import ModelHandle
from llmdit_cli.workflows.encoding import Embeds

SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed takes


def seeds_for(r_seeds: list[int] | None, num_images: int) -> list[int]:
    """Each seed of `r_seeds` followed by the next ones up to `num_images` (SEED, SEED+1, ...), or
    `num_images` seeds from a random one."""
    if r_seeds:
        _check_seeds(r_seeds, num_images)
        return list(r_seeds) if num_images == 1 else [s + k for s in r_seeds for k in range(num_images)]
    base = random.SystemRandom().randrange(2**32)
    return [base + k for k in range(num_images)]


def _check_seeds(seeds: list[int], num_images: int) -> None:
    low, high = SEED_RANGE
    for seed in seeds:
        if not low <= seed < high:
            raise UsageError(f"--seed {seed}: out of range (seeds go from -2^63 to 2^64-1)")
        if seed + num_images > high:
            raise UsageError(
                f"--seed {seed} with --num-images {num_images}: the last seed, {seed + num_images - 1}, is over 2^64-1"
            )


@dataclass
class Job:
    """One image to make: which prompt (its embeddings), which seed, and the settings recorded."""

    index: int
    prompt_index: int
    seed: int
    settings: dict[str, Any] = field(default_factory=dict)
    cond: Any = None  # the prompt's embeddings `[seq, hidden]`
    uncond: Any = None  # the negative prompt's (None without CFG)


def plan_jobs(e: Embeds, seeds: list[int], r: Resolved, handle: ModelHandle, mode: str) -> list[Job]:
    """One job per (prompt, seed); each records every recorded setting (`Resolved.record`) and the
    prompt, negative prompt and encoder settings its embeddings were made with."""
    jobs = []
    negatives = e.params.get("negative_prompts") or [""] * len(e.cond)
    recorded = {**r.record(mode), **image_digests(r, mode)}
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
            uncond = e.uncond[pi] if len(e.uncond) == len(e.cond) else None
            jobs.append(Job(len(jobs), pi, seed, s, e.cond[pi], uncond))
    return jobs


def image_digests(r: Resolved, mode: str) -> dict[str, str]:
    """The SHA-256 of the images the settings name (the control image, an img2img mask), recorded
    beside their paths: `--from-png` refuses a control image that changed since."""
    from llmdit_cli.vision import image_digest

    out = {}
    if r.control.image:
        out["control_image_sha256"] = image_digest(r.control.image)
    if r.generation.mask and mode == "img2img":
        out["mask_sha256"] = image_digest(r.generation.mask)
    return out


def generator(seed: int):
    import torch

    # A CPU generator gives the same noise on every device, so seeds reproduce across machines.
    return torch.Generator(device="cpu").manual_seed(int(seed))


def run_jobs(handle: ModelHandle, jobs: list[Job], r: Resolved, out, init=None, each=None) -> list:
    """Denoise every job, `generation.batch_size` at a time (one generator per job, so a batch
    makes each job's own noise); `init` is None (txt2img), a PIL image, or finished latents
    `[1, C, h, w]`. `each(batch, latents)` is told of each batch of jobs and its latents as it
    finishes."""
    code = handle.code
    pipe = handle.pipeline("transformer", "vae")
    device = code.transformer_device(pipe)
    p = code.denoise_params(r.settings, handle.limits())
    p.control, mask = _control_and_mask(handle, pipe, r, init, out)
    g = r.generation
    # With a ControlNet, a mask goes into the control input and the image is made from noise
    # (ZImageControlNetInpaintPipeline); without one, img2img keeps the input outside it.
    from_noise = init is None or (mask is not None and p.control is not None)
    kept = code.latent_mask(pipe, mask, g.height, g.width) if mask is not None and not from_noise else None
    results = []
    for batch in batches(jobs, g.batch_size):
        cond = [job.cond.to(device) for job in batch]
        uncond = [job.uncond.to(device) for job in batch] if all(j.uncond is not None for j in batch) else []
        gens = [generator(job.seed) for job in batch]
        gen = gens[0] if len(gens) == 1 else gens
        with out.progress(batch_label(batch, len(jobs)), p.steps) as advance:
            if from_noise:
                lat = code.txt2img(pipe, cond, uncond, p, g.height, g.width, gen, advance)
            else:
                start = _start(code, pipe, init, gens, g)
                lat = code.img2img(pipe, cond, uncond, p, start, g.strength, gen, advance, **_masked(kept))
        results += [lat[k : k + 1] for k in range(len(batch))]
        if each is not None:
            each(batch, lat)
    return results


def batches(jobs: list[Job], size: int) -> list[list[Job]]:
    return [jobs[i : i + size] for i in range(0, len(jobs), max(1, size))]


def batch_label(batch: list[Job], total: int) -> str:
    first, last = batch[0].index + 1, batch[-1].index + 1
    if len(batch) == 1:
        return f"image {first}/{total} seed {batch[0].seed}"
    return f"images {first}-{last}/{total} seeds {', '.join(str(j.seed) for j in batch)}"


def _start(code, pipe, init, gens: list, g):
    """The img2img start for a batch: the image encoded with each job's generator (as one at a
    time), or the given latents once per job."""
    import torch

    if is_image(init):
        return torch.cat([code.encode_image(pipe, init, gen, g.height, g.width) for gen in gens])
    return init.repeat(len(gens), 1, 1, 1)


def _masked(mask) -> dict[str, Any]:
    return {} if mask is None else {"mask": mask}


def _control_and_mask(handle: ModelHandle, pipe, r: Resolved, init, out):
    """The ControlNet ready to steer (None without one) and the opened mask (None without one)."""
    from llmdit_cli.errors import setting
    from llmdit_cli.vision import open_image

    c, g = r.control, r.generation
    mask = open_image(g.mask, setting("generation.mask")) if g.mask else None
    if not c.model:
        return None, mask
    code = handle.code
    with out.status(f"loading the ControlNet {c.model}"):
        net = handle.extra(
            ("controlnet", c.model), lambda: code.load_controlnet(c.model, pipe, handle.placement.torch_dtype())
        )
    image = open_image(c.image, setting("control.image"))
    inpaint = {"mask": mask, "init": init} if mask is not None else {}
    latents = code.control_latents(pipe, net, image, g.height, g.width, **inpaint)
    return code.Control(net, latents, c.scale), mask


def is_image(obj) -> bool:
    from PIL import Image

    return isinstance(obj, Image.Image)


def latents_identity(handle: ModelHandle) -> dict[str, Any]:
    """What identifies the models that made latents: the transformer and the VAE."""
    vae = handle.identity("vae")
    return {**handle.identity("transformer"), "vae_config": vae["vae_config"], "vae_weights": vae["vae_weights"]}


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
