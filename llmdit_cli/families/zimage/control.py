"""Z-Image ControlNet and inpainting, the arithmetic of diffusers' stock pipelines:

- `ZImageControlNetPipeline`: the control image, resized to the output and VAE-encoded (the
  posterior's mode), normalised, zero-padded to the ControlNet's `control_in_dim`; each step the
  ControlNet's block samples (times the scale) are added to the transformer's blocks.
- `ZImageInpaintPipeline`: img2img whose latents, after every step, keep the input outside the
  mask (the input's latents noised to the next step's level, the same noise as the start).
- `ZImageControlNetInpaintPipeline`: from noise (no strength), the control input being the control
  latents, the inverted mask and the masked input's latents (`control_in_dim` 33).

The ControlNet shares the transformer's embedders (`ZImageControlNetModel.from_transformer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, ModelError, setting
from llmdit_cli.stages import run_device

DEMO = "demo"
DEMO_CONTROLNET = Path(__file__).resolve().parents[2] / "assets" / "demo-controlnet"
# What a ControlNet's config must share with the transformer it steers.
MATCHING = ("dim", "n_heads", "n_kv_heads", "all_patch_size", "all_f_patch_size", "n_refiner_layers")


@dataclass
class Control:
    """A ControlNet ready to steer: the model, its input `[1, C, 1, h, w]` and the scale."""

    net: Any
    latents: Any
    scale: float

    def block_samples(self, x_list: list, timestep, embeds: list):
        n = len(x_list)
        context = self.latents.repeat(n, 1, 1, 1, 1)
        return self.net(x_list, timestep, embeds, context, conditioning_scale=self.scale)


def controlnet_folder(ref: str) -> Path | None:
    """The local folder (or None for a single file) of a ControlNet reference."""
    if ref == DEMO:
        return DEMO_CONTROLNET
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        return None
    from llmdit_cli.models.refs import is_local

    if is_local(ref):
        raise ModelError(f"{setting('control.model')} {ref}: no such file or folder")
    return _hub_controlnet(ref)


def _hub_controlnet(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=["*.json", "*.safetensors"], local_files_only=True))
    except Exception:
        raise ModelError(
            f"{setting('control.model')} {repo_id}: not in the local Hugging Face cache; run `hf download "
            f"{repo_id}` on a connected machine, or pass a folder or a .safetensors file"
        ) from None


def check_controlnet(ref: str, transformer_config: dict, model_ref: str, inpaint: bool = False) -> None:
    """A ControlNet whose config does not fit the transformer (or, with a mask, takes too few
    control channels for inpainting) is refused before anything loads, naming both; a single file
    without a config beside it is checked when it loads."""
    import json

    folder = controlnet_folder(ref)
    if folder is None:
        folder = Path(ref).expanduser().parent  # a single file: its config beside it, if any
        if not (folder / "config.json").is_file():
            return  # diffusers reads the config when it loads (its checks then name the file)
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{setting('control.model')} {ref}: no readable config.json ({exc})") from None
    wrong = [k for k in MATCHING if k in config and _same(config[k]) != _same(transformer_config.get(k))]
    layers = transformer_config.get("n_layers", 0)
    places = config.get("control_layers_places") or []
    if wrong or any(i >= layers for i in places):
        what = wrong[0] if wrong else "control_layers_places"
        ours = config.get(what) if wrong else places
        theirs = transformer_config.get(what) if wrong else f"{layers} layers"
        raise ModelError(
            f"{setting('control.model')} {ref} does not fit the transformer of {setting('model')} {model_ref}: "
            f"its {what} is {ours}, the transformer's {theirs}"
        )
    _check_control_channels(ref, config.get("control_in_dim"), transformer_config.get("in_channels"), inpaint)


def _check_control_channels(ref: str, in_dim: int | None, latent: int | None, inpaint: bool) -> None:
    """The control input is the control image's latents, and with a mask also the mask and the
    masked input's latents (`control_latents`): more than `control_in_dim` cannot run."""
    if in_dim is None or latent is None:
        return
    made = 2 * latent + 1 if inpaint else latent
    if made > in_dim:
        need = (
            f"{setting('generation.mask')} needs {made} (an inpainting ControlNet)" if inpaint else f"it needs {made}"
        )
        raise InputError(f"{setting('control.model')} {ref} takes {in_dim} control channels; {need}")


def _same(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def load_controlnet(ref: str, pipe, dtype) -> Any:
    """The ControlNet, on the transformer's device, sharing its embedders."""
    from diffusers import ZImageControlNetModel

    folder, beside = controlnet_folder(ref), {}
    try:
        if folder is None:
            # The original checkpoint holds no config: one beside the file is used, else diffusers
            # fetches its default (the Hub's Z-Image-Turbo-Fun-Controlnet-Union config).
            path = Path(ref).expanduser()
            beside = {"config": str(path.parent)} if (path.parent / "config.json").is_file() else {}
            net = ZImageControlNetModel.from_single_file(str(path), torch_dtype=dtype, **beside)
        else:
            net = ZImageControlNetModel.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = f"{setting('control.model')} {ref}"
        if folder is None and not beside and "config.json" in line:
            raise ModelError(
                f"{where}: no config.json beside the file, and diffusers could not fetch its default "
                f"config ({line}); put the checkpoint's config.json next to it, or run once online"
            ) from None
        raise ModelError(f"{where}: cannot load as a Z-Image ControlNet ({line})") from None
    net = ZImageControlNetModel.from_transformer(net, pipe.transformer)
    return net.to(run_device(pipe, pipe.transformer)).eval()


def _encode_mode(pipe, pixels):
    """Normalised latents of preprocessed pixels, from the posterior's mode (the stock pipelines'
    `sample_mode="argmax"`: no randomness)."""
    import torch
    from diffusers.pipelines.z_image.pipeline_z_image_controlnet import retrieve_latents

    vae = pipe.vae
    with torch.no_grad():
        z = retrieve_latents(vae.encode(pixels.to(device=run_device(pipe, vae), dtype=vae.dtype)), sample_mode="argmax")
    return (z - vae.config.shift_factor) * vae.config.scaling_factor


def control_latents(pipe, net, image, height: int, width: int, mask=None, init=None):
    """The ControlNet's input `[1, control_in_dim, 1, h, w]`: the control image's latents, and
    for inpainting the inverted mask and the masked input's latents."""
    import torch
    import torch.nn.functional as F

    from llmdit_cli.families.zimage.vae import image_processor

    proc = image_processor(pipe)
    latents = _encode_mode(pipe, proc.preprocess(image, height=height, width=width)).unsqueeze(2)
    in_dim = net.config.control_in_dim
    if mask is not None:
        cond = _mask_pixels(pipe, mask, height, width, pipe.vae_scale_factor).to(latents.device, latents.dtype)
        cond = torch.tile(cond, [1, 3, 1, 1])
        kept = proc.preprocess(init, height=height, width=width).to(cond.device, cond.dtype) * (cond < 0.5)
        kept = _encode_mode(pipe, kept).unsqueeze(2)
        keep = F.interpolate(1 - cond[:, :1], size=kept.shape[-2:], mode="nearest").unsqueeze(2)
        latents = torch.cat([latents, keep.to(latents.dtype), kept.to(latents.dtype)], dim=1)
    if latents.shape[1] < in_dim:
        pad = torch.zeros(latents.shape[0], in_dim - latents.shape[1], *latents.shape[2:], dtype=latents.dtype)
        latents = torch.cat([latents, pad.to(latents.device)], dim=1)
    if latents.shape[1] != in_dim:
        raise InputError(
            f"{setting('control.model')} takes {in_dim} control channels; {latents.shape[1]} were made "
            f"({'a mask needs an inpainting ControlNet (33)' if mask is not None else 'the control image'})"
        )
    return latents


def _mask_pixels(pipe, mask, height: int, width: int, scale_factor: int):
    """The mask as the stock pipelines read it: grey, binarised at 0.5, 1 = repaint."""
    from diffusers.image_processor import VaeImageProcessor

    proc = VaeImageProcessor(
        vae_scale_factor=scale_factor, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )
    return proc.preprocess(mask, height=height, width=width)


def latent_mask(pipe, mask, height: int, width: int):
    """The inpainting mask at the latents' size `[1, 1, h, w]` (ZImageInpaintPipeline's)."""
    import torch.nn.functional as F

    pixels = _mask_pixels(pipe, mask, height, width, pipe.vae_scale_factor * 2)
    h = 2 * (int(height) // (pipe.vae_scale_factor * 2))
    w = 2 * (int(width) // (pipe.vae_scale_factor * 2))
    return F.interpolate(pixels, size=(h, w), mode="nearest")
