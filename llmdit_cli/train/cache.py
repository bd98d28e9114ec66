"""Fill and read the training cache: one embeds stage file per distinct caption, one latents
stage file per (image, bucket size). Files are reused across runs and named by content hashes."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmdit_cli.artifacts import read_stage, split_embeds, write_embeds_file, write_latents_file
from llmdit_cli.config import EncoderSettings
from llmdit_cli.prompts import ChatFormat
from llmdit_cli.train.data import Item, cache_key, fit_image, pick_bucket, to_tensor

# The stock encoding (the defaults of every command), which validation images and users share; the
# hidden layer is the model family's (`stock_layer`).
MAX_LENGTH = EncoderSettings().max_length
ENCODE_BATCH = 16


@dataclass
class Example:
    latents: Path
    embeds: Path
    size: tuple[int, int]  # (width, height)


def stock_layer(handle) -> int:
    """The hidden layer the model family's stock pipeline encodes with."""
    return handle.defaults()["hidden_layer"]


def embeds_path(cache: Path, identity: dict, text: str, hidden_layer: int) -> Path:
    return cache / "embeds" / f"{cache_key('embeds', identity, text, hidden_layer, MAX_LENGTH)}.embeds.safetensors"


def encode_captions(handle, captions: list[str], cache: Path, log) -> dict[str, Path]:
    """Cached embeds file for each caption (formatted as stock Z-Image does)."""
    identity = handle.identity("text_encoder")
    fmt = ChatFormat()
    layer = stock_layer(handle)
    paths = {c: embeds_path(cache, identity, fmt.format(c), layer) for c in dict.fromkeys(captions)}
    todo = [c for c, p in paths.items() if not p.is_file()]
    if todo:
        log(f"encoding {len(todo)} caption(s) into {cache / 'embeds'}")
        pipe = handle.pipeline("tokenizer", "text_encoder")
        for start in range(0, len(todo), ENCODE_BATCH):
            chunk = todo[start : start + ENCODE_BATCH]
            texts = [fmt.format(c) for c in chunk]
            enc = handle.code.encode_texts(pipe.tokenizer, pipe.text_encoder, texts, layer, MAX_LENGTH)
            for caption, text, emb, n in zip(chunk, texts, enc.embeds, enc.token_counts):
                write_embeds_file(
                    str(paths[caption]),
                    [emb],
                    [],
                    identity,
                    layer,
                    {"prompts": [caption], "formatted": [text], "token_counts": [n]},
                )
    return paths


def encode_images(handle, items: list[Item], resolution: int, buckets: bool, cache: Path, log) -> list[tuple]:
    """Cached latents file for each item: (path, (w, h))."""
    import torch

    identity = handle.identity("vae")
    multiple = handle.limits().token_pixels
    results, todo = [], []
    for item in items:
        img = item.load_image()
        size = pick_bucket(img.width, img.height, resolution, buckets, multiple)
        path = cache / "latents" / f"{cache_key('latents', identity, item.content_hash(), size)}.latents.safetensors"
        results.append((path, size))
        if not path.is_file():
            todo.append((img, size, path, item))
    if todo:
        log(f"encoding {len(todo)} image(s) with the VAE into {cache / 'latents'}")
        vae = handle.pipeline("vae").vae
        for img, size, path, item in todo:
            pixels = to_tensor(fit_image(img, size)).unsqueeze(0).to(vae.device, vae.dtype)
            with torch.no_grad():
                z = vae.encode(pixels).latent_dist.mode()
            z = handle.code.normalise(vae, z)
            write_latents_file(
                str(path), z, identity, size[1], size[0], {"source": item.source, "caption": item.caption}
            )
    return results


def build(handle, items: list[Item], data_cfg, cache: Path, extra_captions: list[str], log) -> tuple:
    """Fill the cache; returns the examples and the embeds paths of `extra_captions`."""
    captions = encode_captions(handle, [i.caption for i in items] + extra_captions, cache, log)
    latents = encode_images(handle, items, data_cfg.resolution, data_cfg.buckets, cache, log)
    examples = [Example(lp, captions[i.caption], size) for i, (lp, size) in zip(items, latents)]
    return examples, {c: captions[c] for c in extra_captions}


# Small datasets are read once and then served from memory; large ones cycle through this window.
@lru_cache(maxsize=16384)
def load_embeds(path: Path):
    return split_embeds(read_stage(str(path), expect="embeds").tensors())[0][0]


@lru_cache(maxsize=16384)
def load_latents(path: Path):
    return read_stage(str(path), expect="latents").tensors()["latents"][0]
