"""Decoded pixels to PIL images, as diffusers' `VaeImageProcessor.postprocess(..., "pil")` makes
them (same bytes), with the arithmetic on the tensor's own device: a GPU then sends one byte a
channel to the CPU instead of the VAE dtype's two or four, and the CPU does no float work."""

from __future__ import annotations


def decoded_to_pil(pixels) -> list:
    """VAE output `[B, C, H, W]` in [-1, 1] -> PIL images (C = 3: RGB, 4: RGBA, 1: L)."""
    import torch
    from PIL import Image

    # The processor's steps, in its order and dtypes: denormalise in the tensor's dtype, then
    # float32 x 255, rounded half to even (torch.round, like numpy's), then bytes.
    # NaN (a diverged run) becomes 0, as numpy's cast gives it; a GPU's cast of NaN is undefined.
    with torch.no_grad():
        unit = (pixels * 0.5 + 0.5).clamp(0, 1)
        values = torch.nan_to_num((unit.float() * 255).round(), nan=0.0).to(torch.uint8)
    arrays = values.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # HWC rows, as PIL reads them
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
