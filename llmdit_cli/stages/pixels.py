"""Decoded pixels to PIL images, as diffusers' `VaeImageProcessor.postprocess(..., "pil")` makes
them (same bytes), with the arithmetic on the tensor's own device: a GPU then sends one byte a
channel to the CPU instead of four, and the CPU does no float work (about 15 ms of a 1024x1024
image)."""

from __future__ import annotations


def decoded_to_pil(pixels) -> list:
    """VAE output `[B, 3, H, W]` in [-1, 1] -> RGB PIL images."""
    import torch
    from PIL import Image

    # The processor's steps, in its order and dtypes: denormalise in the tensor's dtype, then
    # float32 x 255, rounded half to even (torch.round, like numpy's), then bytes.
    unit = (pixels * 0.5 + 0.5).clamp(0, 1)
    with torch.no_grad():
        values = (unit.float() * 255).round().to(torch.uint8)
    arrays = values.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # HWC rows, as PIL reads them
    return [Image.fromarray(a) for a in arrays]
