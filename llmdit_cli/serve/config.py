"""What `llmdit serve` was started with: the model, its settings, components, auth and limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmdit_cli.serve.settings import ServerSettings

WEB = Path(__file__).parent / "web"  # the page's files (no build step)


@dataclass
class ServerLimits:
    max_queue: int = 8
    max_body_bytes: int = 1 << 20
    max_prompt_chars: int = 4000
    max_prompts: int = 16
    max_images: int = 4
    max_pixels: int = 2048 * 2048
    max_tokens: int = 1024
    max_steps: int = 100
    max_side: int = 4096
    max_messages: int = 64
    max_lora_models: int = 2  # models loaded with LoRAs, besides the base one
    max_image_bytes: int = 16 << 20  # one uploaded image (img2img input, vision image, edit source)
    max_batch: int = 4  # waiting text-to-image requests run together, images per forward


@dataclass
class ServeConfig:
    model: str
    settings: ServerSettings
    components: str = "all"  # encoder | dit | all
    token: str | None = None
    encoder_url: str | None = None  # dit: prompts are encoded by this llmdit server
    encoder_key: str | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)
    trusted_hosts: list[str] | None = None
    data_dir: Path | None = None  # history and files (`history.py`); None: the user data folder
