"""VAE encode / decode with Z-Image's latent normalisation: z_norm = (z - shift) * scaling."""

from __future__ import annotations

from llmdit_cli.stages import run_device
from llmdit_cli.stages.pixels import decoded_to_pil


def image_processor(pipe):
    from diffusers.image_processor import VaeImageProcessor

    return VaeImageProcessor(vae_scale_factor=pipe.vae_scale_factor * 2)


def encode_image(pipe, image, generator, height: int | None = None, width: int | None = None):
    """A PIL image -> normalised latents `[1, 16, h, w]`, sampling the posterior like img2img."""
    import torch
    from diffusers.pipelines.z_image.pipeline_z_image_img2img import retrieve_latents

    vae = pipe.vae
    pixels = image_processor(pipe).preprocess(image, height=height, width=width).to(dtype=torch.float32)
    pixels = pixels.to(device=run_device(pipe, vae), dtype=torch.float32)
    with torch.no_grad():
        z = retrieve_latents(vae.encode(pixels.to(vae.dtype)), generator=generator)
    return normalise(vae, z)


def normalise(vae, z):
    """VAE latents -> the normalised latents the transformer works in (and stage files hold)."""
    return ((z - vae.config.shift_factor) * vae.config.scaling_factor).float()


def denormalise(vae, latents, device):
    """The inverse of `normalise`, in the VAE's dtype on `device`, ready to decode."""
    return latents.to(device=device, dtype=vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor


def decode_latents(pipe, latents) -> list:
    """Normalised latents `[B, 16, h, w]` -> list of PIL images."""
    import torch

    vae = pipe.vae
    z = denormalise(vae, latents, run_device(pipe, vae))
    with torch.no_grad():
        pixels = vae.decode(z, return_dict=False)[0]
    return decoded_to_pil(pixels)
