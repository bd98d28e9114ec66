"""Text encoding: formatted chat text -> ragged list of hidden-state tensors, as stock Z-Image."""

from __future__ import annotations

from dataclasses import dataclass

STOCK_MAX_LENGTH = 512


@dataclass
class Encoded:
    embeds: list  # one [seq_i, hidden] tensor per text
    token_counts: list[int]


def encode_texts(
    tokenizer, text_encoder, texts: list[str], hidden_layer: int = -2, max_length: int = 512, device=None
) -> Encoded:
    """Encode already-formatted chat texts the way `ZImagePipeline._encode_prompt` does."""
    import torch

    # Padded to max_length as stock diffusers pads (512); a longer limit pads only to the longest
    # text, since causal attention keeps real tokens from seeing the padding after them.
    padding = "max_length" if max_length <= STOCK_MAX_LENGTH else "longest"
    inputs = tokenizer(list(texts), padding=padding, max_length=max_length, truncation=True, return_tensors="pt")
    device = device or text_encoder.device
    ids = inputs.input_ids.to(device)
    mask = inputs.attention_mask.to(device).bool()
    with torch.no_grad():
        states = text_encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    chosen = states[hidden_layer]
    return Encoded([chosen[i][mask[i]] for i in range(len(texts))], [int(m.sum()) for m in mask])
