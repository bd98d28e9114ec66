"""Build a base model from configs (the tiny demo): a frozen random Qwen3 text encoder, a VAE
trained here on the dataset's images, and a randomly initialised Z-Image transformer."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from llmdit_cli.train.recipe import Recipe


def build_base(r: Recipe, folder: Path, log) -> Path:
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from llmdit_cli import tiny
    from llmdit_cli.models import quiet_libraries

    quiet_libraries()
    s = r.scratch
    torch.manual_seed(s.seed)
    tokenizer = tiny.byte_tokenizer(_corpus(r), s.tokenizer_vocab)
    te_config = {**tiny.TEXT_ENCODER, **s.text_encoder}
    te_config["vocab_size"] = max(te_config["vocab_size"], -(-len(tokenizer) // 8) * 8)
    text_encoder = Qwen3ForCausalLM(Qwen3Config(**te_config)).eval()
    transformer = ZImageTransformer2DModel(**{**tiny.TRANSFORMER, **s.transformer})
    vae = AutoencoderKL(**{**tiny.VAE, **s.vae})
    if s.vae_steps:
        train_vae(vae, r, log)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**tiny.SCHEDULER),
        vae=vae.eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    log(f"base model built in {folder}")
    return folder


def _corpus(r: Recipe) -> list[str] | None:
    if r.scratch.tokenizer_corpus != "captions":
        return None
    from llmdit_cli.train.data import load_items

    # The chat-template words join the captions so they too become single tokens.
    return [i.caption for i in load_items(r.data.path, r.data.image_column, r.data.caption_column)] + [
        "user",
        "assistant",
        "system",
    ] * 10


def _images(r: Recipe, multiple: int):
    import torch

    from llmdit_cli.train.data import fit_image, load_items, pick_bucket, to_tensor

    items = load_items(r.data.path, r.data.image_column, r.data.caption_column)
    size = pick_bucket(1, 1, r.data.resolution, False, multiple)
    return torch.stack([to_tensor(fit_image(i.load_image(), size)) for i in items])


def train_vae(vae, r: Recipe, log) -> None:
    """Reconstruction (MSE + a small KL) with AdamW and a cosine schedule, then set the latent
    shift and scaling factors from the data so normalised latents have mean 0 and std 1."""
    import torch

    s = r.scratch
    images = _images(r, 2 ** (len(vae.config.block_out_channels) - 1) * 2)
    gen = torch.Generator().manual_seed(s.seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / s.vae_steps)))
    vae.train()
    for step in range(s.vae_steps):
        idx = torch.randint(len(images), (min(s.vae_batch_size, len(images)),), generator=gen)
        x = images[idx]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=gen)).sample
        loss = torch.nn.functional.mse_loss(recon, x) + s.vae_kl_weight * posterior.kl().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, s.vae_steps // 10) == 0:
            psnr = 10 * math.log10(4 / max(torch.nn.functional.mse_loss(recon, x).item(), 1e-10))
            log(f"vae step {step + 1}/{s.vae_steps}: loss {loss.item():.5f}, PSNR {psnr:.1f} dB")
    vae.eval()
    with torch.no_grad():
        z = torch.cat([vae.encode(images[k : k + 256]).latent_dist.mode() for k in range(0, len(images), 256)])
    vae.register_to_config(shift_factor=float(z.mean()), scaling_factor=float(1 / z.std()))
