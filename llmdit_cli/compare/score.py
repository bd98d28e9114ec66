"""Prompt adherence: the cosine similarity of each image and its prompt in a SigLIP or CLIP
model's joint embedding space (transformers' `image_embeds` / `text_embeds`)."""

from __future__ import annotations

from llmdit_cli.compare.runs import Entry
from llmdit_cli.errors import ModelError


def load(ref: str):
    """Model, tokenizer and image processor from a Hub id or a folder."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    from llmdit_cli.models import quiet_libraries

    quiet_libraries()
    try:
        model = AutoModel.from_pretrained(ref).eval()
        tokenizer = AutoTokenizer.from_pretrained(ref)
        processor = AutoImageProcessor.from_pretrained(ref)
    except Exception as exc:  # noqa: BLE001 - any failure to load is one line naming the model
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"--score-model {ref}: cannot load a SigLIP/CLIP model ({first})") from None
    if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
        raise ModelError(f"--score-model {ref}: a {type(model).__name__}, not an image-text model like SigLIP or CLIP")
    return model, tokenizer, processor


def text_inputs(model, tokenizer, prompts: list[str]) -> dict:
    """SigLIP was trained on texts padded to its full length; CLIP on texts padded per batch."""
    if "siglip" in type(model).__name__.lower():
        length = model.config.text_config.max_position_embeddings
        return tokenizer(prompts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    return tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")


def prompt_scores(ref: str, items: list[Entry]) -> dict[str, float]:
    """`build.score_key(entry)` -> cosine similarity of its image and its prompt."""
    import torch

    from llmdit_cli.compare.build import score_key
    from llmdit_cli.compare.images import load_image

    model, tokenizer, processor = load(ref)
    scores = {}
    with torch.no_grad():
        for e in items:
            text = text_inputs(model, tokenizer, [str(e.axes.get("prompt", ""))])
            pixels = processor(images=load_image(e), return_tensors="pt")["pixel_values"]
            out = model(**text, pixel_values=pixels)
            scores[score_key(e)] = float(
                torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds).item()
            )
    return scores
