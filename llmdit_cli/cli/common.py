"""Helpers the command modules share: settings from flags, and the model flags."""

from __future__ import annotations

from typing import Any


def settings(
    config: str | None, profile: str | None, stored: dict[str, Any] | None = None, stored_source: str = "", **flags: Any
):
    """Resolve settings; `flags` are field names (model, steps, ...) with None for 'not given';
    `stored` are settings read from a file (`stored_source`), below the flags."""
    # pydantic loads here, not at import, to keep `--help` fast.
    from llmdit_cli.config import FLAG_KEY, resolve

    unknown = [k for k in [*flags, *(stored or {})] if k != "model" and k not in FLAG_KEY]
    assert not unknown, unknown  # a programming error, not a user one
    return resolve(config, profile, flags, stored, stored_source)


def model_flags(model, dtype, device, text_encoder_device, dit_device, vae_device, cpu_offload, lora=None):
    return dict(
        model=model,
        dtype=dtype,
        device=device,
        text_encoder_device=text_encoder_device,
        dit_device=dit_device,
        vae_device=vae_device,
        cpu_offload=cpu_offload,
        loras=lora or None,
    )


def encoder_flags(system_prompt, thinking_content, enable_thinking, assistant_content, hidden_layer, max_length):
    return dict(
        system_prompt=system_prompt,
        thinking_content=thinking_content,
        enable_thinking=enable_thinking,
        assistant_content=assistant_content,
        hidden_layer=hidden_layer,
        max_length=max_length,
    )
