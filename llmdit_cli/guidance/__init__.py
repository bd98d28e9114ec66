"""Guidance and position hooks that join the denoising loop (diffusers' hook style)."""
