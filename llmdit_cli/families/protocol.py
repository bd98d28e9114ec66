"""What generic code may ask of a model family: its `Limits`, and the runner contracts.

Engine, workflows, sweeps, the training cache and the server ask these; none of them reads a
model's config keys (`axes_lens`, `cap_feat_dim`, ...): those appear only in the family packages,
which fill `Limits` from a model folder's configs (`limits(handle)`). A family's runner is a module
(imported only when a model runs) with the functions of the protocol for its task.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Limits:
    """What a model folder can take, read from its configs without loading a weight.

    - `caption_tokens`: the most caption tokens its transformer takes (None: no limit known);
    - `text_hidden_size`: the hidden size of the embeddings it takes;
    - `text_hidden_states`: how many hidden states its text encoder gives (layers + 1);
    - `channels` (of the latents), `patch_size`, `vae_scale_factor`: the latent grid (pixels per latent is
      `vae_scale_factor`, per transformer token `vae_scale_factor * patch_size`);
    - `trained_size`: the side in pixels its position embedding covers (None: not bounded);
    - `blocks`: the number of transformer blocks (skip-layer guidance names them by index);
    - `size_multiple`: what image sides must be a multiple of (at least the token grid).
    """

    caption_tokens: int | None
    text_hidden_size: int | None
    text_hidden_states: int
    channels: int
    patch_size: int
    vae_scale_factor: int
    trained_size: int | None
    blocks: int
    size_multiple: int

    @property
    def token_pixels(self) -> int:
        """Pixels per transformer token along a side."""
        return self.vae_scale_factor * self.patch_size


class Runner(Protocol):
    """Every family's runner: the classes it loads and what its folders can take."""

    def pipeline_class(self) -> type: ...
    def transformer_class(self) -> type: ...
    def check_loadable(self, folder, ref: str) -> None: ...
    def limits(self, handle) -> Limits: ...


class TextToImageRunner(Runner, Protocol):
    """A text-to-image family (`generate`, `encode`, `decode`, `sweep`, `serve`).

    Embeddings are ragged lists of `[seq_i, hidden]` tensors (one per prompt), latents are the
    normalised latents the transformer works in (what stage files hold)."""

    def encode_texts(
        self, tokenizer, text_encoder, texts: list[str], hidden_layer: int, max_length: int, device=None
    ) -> Any: ...
    def denoise_params(self, settings, limits: Limits) -> Any: ...
    def wants_negative(self, generation) -> bool: ...
    def transformer_device(self, pipe) -> Any: ...
    def txt2img(
        self, pipe, cond: list, uncond: list, p, height: int, width: int, generator, on_step: Callable | None = None
    ) -> Any: ...
    def decode_latents(self, pipe, latents) -> list: ...


class Img2ImgRunner(TextToImageRunner, Protocol):
    """The `img2img` feature: an image or finished latents noised to `strength` and denoised."""

    def encode_image(self, pipe, image, generator, height: int | None = None, width: int | None = None) -> Any: ...
    def img2img(
        self, pipe, cond: list, uncond: list, p, image_latents, strength: float, generator, on_step=None
    ) -> Any: ...


class ControlRunner(TextToImageRunner, Protocol):
    """The `control` feature: a ControlNet steering the transformer by a control image."""

    Control: type

    def check_controlnet(self, ref: str, transformer_config: dict, model_ref: str, inpaint: bool = False) -> None: ...
    def load_controlnet(self, ref: str, pipe, dtype) -> Any: ...
    def control_latents(self, pipe, net, image, height: int, width: int, mask=None, init=None) -> Any: ...


class InpaintRunner(Img2ImgRunner, Protocol):
    """The `inpaint` feature: img2img that keeps the input outside a mask (`img2img(..., mask=)`)."""

    def latent_mask(self, pipe, mask, height: int, width: int) -> Any: ...


class TrainingRunner(TextToImageRunner, Protocol):
    """The `train` feature: the training cache's VAE latents in the transformer's normalisation,
    and (guidance distillation) the teacher's sampling trajectory: states, timesteps, predictions."""

    def normalise(self, vae, z) -> Any: ...
    def trajectory(self, pipe, cond: list, uncond: list, p, height: int, width: int, generator) -> Any: ...


class LoraKeys(Protocol):
    """The `lora` feature: a family's LoRA files (its module names, key layouts, alpha rules)."""

    def read_lora(self, path) -> Any: ...
    def summary(self, path) -> dict: ...
    def check_format(self, to: str) -> None: ...
    def write_lora(self, lora, path, to: str, record: dict | None = None) -> None: ...
    def from_peft_state(self, state: dict, rank: int, alpha: float) -> Any: ...


# The runner protocol each feature of a text-to-image family adds (`families.FEATURES`).
FEATURE_PROTOCOLS: dict[str, type] = {
    "img2img": Img2ImgRunner,
    "train": TrainingRunner,
    "control": ControlRunner,
    "inpaint": InpaintRunner,
}


class DecomposeRunner(Runner, Protocol):
    """Layer decomposition (`decompose`, Qwen-Image-Layered): an image into RGBA layers."""

    LayeredParams: type

    def caption(self, pipe, image, resolution: int, english: bool, max_new_tokens: int = 512) -> str: ...
    def output_size(self, pipe, image_size: tuple[int, int], resolution: int) -> tuple[int, int]: ...
    def decompose(
        self, pipe, image, p, generator, on_step: Callable[[int], None] | None = None, keep_latents: bool = False
    ) -> tuple[list, Any]: ...
    def decode_layers(self, pipe, latents) -> list: ...


class EditRunner(Runner, Protocol):
    """Layer editing (`edit-layer`, Qwen-Image-Edit-Plus): one RGB image edited by an instruction."""

    EditParams: type

    def edit(self, pipe, rgb, p, generator, on_step: Callable[[int], None] | None = None) -> Any: ...
