"""What the engine is asked for and what it gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from llmdit_cli.config import Resolved


@dataclass
class EncodeRequest:
    """Prompts to encode with the settings' model and chat formatting."""

    settings: Resolved
    prompts: list[str]
    with_negative: bool = True  # also encode the negative prompt once per prompt


@dataclass
class GenerateRequest:
    """Images to make: each prompt (or each item of `embeds`) once per seed.

    `settings` is the plan, resolved (defaults < config < env < flags) and frozen; `Engine.prepare`
    returns the request with a new plan that the model family and the input's size filled. `init` is the img2img input: a PIL image or finished
    latents `[1, C, h, w]` (with `init_source` naming them in messages)."""

    settings: Resolved
    seeds: list[int]
    prompts: list[str] = field(default_factory=list)
    embeds: Any = None  # workflows.Embeds, e.g. read from an embeds file
    mode: Literal["txt2img", "img2img"] = "txt2img"
    init: Any = None
    init_source: str = ""
    init_size: tuple[int, int] | None = None  # (height, width) recorded with input latents
    decode: bool = True  # False: latents only (the caller decodes later, or never)


@dataclass
class Generated:
    """One image: its latents `[1, C, h, w]`, the PIL image (when decoded) and the settings record
    that goes into its PNG and latents header."""

    latents: Any
    settings: dict[str, Any]
    image: Any = None

    @property
    def seed(self) -> int:
        return self.settings["seed"]

    @property
    def prompt(self) -> str:
        return self.settings["prompt"]


@dataclass
class DecodeRequest:
    """Latents `[B, C, h, w]` to decode with the settings' model (its VAE)."""

    settings: Resolved
    latents: Any
    source: str = "latents"


@dataclass
class RewriteRequest:
    """Prompts to rewrite with the settings' model (its text encoder as a chat model) and a
    rewriter template (`templates/rewriter/`)."""

    settings: Resolved
    prompts: list[str]
    template: str = "general-enhancer"
    sampling: Any = None  # rewriting.Sampling; None: its defaults
    keep_thinking: bool = False
    image: str | None = None  # rewrite from this image, by the Qwen3-VL of the settings' vl.model


@dataclass
class ChatRequest:
    """A conversation for the settings' model's text encoder as a chat model (an API's chat
    completions): `messages` are (role, content) pairs; the reply continues after them."""

    settings: Resolved
    messages: list[tuple[str, str]]
    sampling: Any = None  # rewriting.Sampling; None: its defaults
    enable_thinking: bool = False
    on_text: Any = None  # (str) -> None: receives the reply's text piece by piece as it comes
    should_stop: Any = None  # () -> bool: end the reply early


@dataclass
class DecomposeRequest:
    """An image (PIL RGBA) to split into RGBA layers by the Qwen-Image-Layered model that the
    settings name (`layered.model`), with the `layered.*` settings. An empty `prompt` takes the
    model's own caption."""

    settings: Resolved
    image: Any
    seed: int
    prompt: str = ""
    keep_latents: bool = False  # also return the finished latents (for a layered-latents file)


@dataclass
class Decomposed:
    """The layers (PIL RGBA, bottom first), the latents when asked for, and the settings record
    that layers.json keeps (the prompt used, the caption when the model made it)."""

    layers: list
    latents: Any
    settings: dict[str, Any]


@dataclass
class EditLayerRequest:
    """One layer's RGB (PIL) to edit by an instruction with the Qwen-Image-Edit-Plus model that
    the settings name (`layered.edit_model`), with true CFG."""

    settings: Resolved
    image: Any
    instruction: str
    seed: int


@dataclass
class LayersDecodeRequest:
    """Layered latents `[1, C, layers + 1, h, w]` to decode into RGBA layers with the settings'
    layered model (its VAE)."""

    settings: Resolved
    latents: Any
    source: str = "latents"
