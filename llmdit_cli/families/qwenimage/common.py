"""What the Qwen-Image families share: the transformer class, what a folder can take (`limits`),
the torchvision check, and the step callback that reports progress from inside diffusers' own
pipelines."""

from __future__ import annotations

from collections.abc import Callable

from llmdit_cli.families.protocol import Limits


def transformer_class():
    from diffusers import QwenImageTransformer2DModel

    return QwenImageTransformer2DModel


def check_loadable(folder, ref: str) -> None:
    """The real Qwen-Image repos name transformers' Qwen2VLProcessor, which cannot even be built
    without torchvision (its video half): say so in one line instead of a traceback."""
    import importlib.util

    from llmdit_cli.errors import ModelError
    from llmdit_cli.models.refs import MODEL, read_json

    processor = read_json(folder / "model_index.json", ref, "model_index.json").get("processor") or [None, None]
    if processor[-1] == "Qwen2VLProcessor" and importlib.util.find_spec("torchvision") is None:
        raise ModelError(
            f"{MODEL} {ref}: its processor (transformers' Qwen2VLProcessor) needs torchvision, which is not "
            f"installed here (pip install torchvision)"
        )


def denormalise(vae, latents):
    """Normalised latents `[B, C, frames, h, w]` (the transformer's space) -> the VAE's, as the
    pipelines decode: `latents / (1 / latents_std) + latents_mean`, in the latents' dtype."""
    import torch

    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents.device, latents.dtype)
    return latents / inv_std + mean


def limits(handle) -> Limits:
    """Read from the folder's configs: the VAE downsamples 2x per `temperal_downsample` entry, the
    transformer packs 2x2 patches of `z_dim`-channel latents and takes Qwen2.5-VL states of
    `joint_attention_dim`; captions are bounded by the tokenizer's length, not a position table."""
    t = handle.component_config("transformer")
    vae = handle.component_config("vae")
    te = handle.component_config("text_encoder")
    layers = te.get("num_hidden_layers") or (te.get("text_config") or {}).get("num_hidden_layers", 0)
    patch = int(t.get("patch_size", 2))
    scale = 2 ** len(vae.get("temperal_downsample", [False, True, True]))
    return Limits(
        caption_tokens=None,
        text_hidden_size=t.get("joint_attention_dim"),
        text_hidden_states=int(layers) + 1,
        channels=int(vae.get("z_dim", 16)),
        patch_size=patch,
        vae_scale_factor=scale,
        trained_size=None,
        blocks=int(t.get("num_layers", 0)),
        size_multiple=patch * scale,
    )


def step_callback(steps: int, on_step: Callable[[int], None] | None, kept: dict | None = None):
    """A pipeline's `callback_on_step_end`: reports each finished step, and keeps the latents after
    the last one in `kept` (diffusers 0.42's Layered pipeline cannot return them itself:
    `output_type="latent"` fails on an unset variable)."""

    def step_end(_pipe, i, _t, tensors):
        if kept is not None and i == steps - 1:
            kept["latents"] = tensors["latents"]
        if on_step:
            on_step(i + 1)
        return {}

    return step_end
