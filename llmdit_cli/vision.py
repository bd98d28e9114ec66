"""Vision conditioning: Qwen3-VL's hidden states for an image, matched to the text encoder's
statistics and blended into the prompt embeddings (no training: Qwen3-VL's language model shares
Qwen3's hidden size, so its states live in a space the DiT can read, after matching).

With text embeddings T (L_t x D) and VL states V (L_v x D), first matched to T (V's mean and
standard deviation over all its values made T's), and alpha a:

    linear              (1 - a) T + a R(V)         R: V resampled to L_t tokens (linear)
    graduated           (1 - a_i) T + a_i R(V)     a_i = a (i + 1) / L_t: later tokens take more
    attention_weighted  (1 - a) T + a softmax(T Vᵀ / sqrt(D)) V: each token takes what it attends to
    style_only          T + a (mean(V) - mean(T)): only the mean per dimension moves, the tokens stay
    adain               (1 - a) T + a ((T - mean(T)) / std(T) std(V) + mean(V)): mean and spread

alpha 0 leaves the embeddings exactly as they were (the VL model is not even loaded).
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, ModelError, UsageError, setting

BLEND_MODES = ("linear", "style_only", "graduated", "attention_weighted", "adain")
TOKEN_MODES = ("all", "image", "text")
DEFAULT_VL_MODEL = "Qwen/Qwen3-VL-4B-Instruct"
VL_DEMO = "demo"
VL_DEMO_PATH = Path(__file__).resolve().parent / "assets" / "demo-vl"
_EPS = 1e-6
# What follows the user's text in the chat. It starts with a special token, so the text tokenizes
# alone and its tokens are the last ones before this tail (`--vl-tokens text`).
CHAT_TAIL = "<|im_end|>\n<|im_start|>assistant\n"
_LOADED: dict[tuple, Any] = {}
_LOAD_LOCK = threading.Lock()


class VisionModel:
    """A loaded Qwen3-VL: model, tokenizer, image processor, the device it runs on. With `offload`
    (the main model's --cpu-offload) it waits on the CPU and moves to its device only to run."""

    def __init__(self, model, tokenizer, processor, device, ref: str, offload: bool = False):
        self.model, self.tokenizer, self.processor, self.device, self.ref = model, tokenizer, processor, device, ref
        self.offload = offload

    @contextmanager
    def placed(self):
        """The model on its device for the block (and back on the CPU after it, with offload)."""
        if not self.offload:
            yield
            return
        import torch

        self.model.to(self.device)
        try:
            yield
        finally:
            self.model.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    def chat_inputs(self, image, text: str, system: str | None = None):
        """Model inputs for one user turn holding the image then `text` (the vision tokens
        expanded as Qwen3-VL's processor does, without its video half, which needs torchvision)."""
        import torch

        pixels = self.processor(images=[image], return_tensors="pt")
        grid = pixels["image_grid_thw"]
        count = int(grid[0].prod()) // int(self.processor.merge_size) ** 2
        turn = "<|vision_start|>" + "<|image_pad|>" * count + "<|vision_end|>" + text
        chat = (f"<|im_start|>system\n{system}<|im_end|>\n" if system else "") + (
            f"<|im_start|>user\n{turn}{CHAT_TAIL}"
        )
        ids = self.tokenizer(chat, return_tensors="pt").input_ids
        image_token = self.model.config.image_token_id
        return {
            "input_ids": ids.to(self.device),
            "attention_mask": torch.ones_like(ids).to(self.device),
            "pixel_values": pixels["pixel_values"].to(self.device, self.model.dtype),
            "image_grid_thw": grid.to(self.device),
            "mm_token_type_ids": (ids == image_token).long().to(self.device),
        }

    def reply(self, image, text: str, system: str | None, sampling) -> str:
        """Qwen3-VL's reply to the image and `text` under `system` (rewriting from an image)."""
        from llmdit_cli.rewriting import sample

        with self.placed():
            return sample(self.model, self.tokenizer, self.chat_inputs(image, text, system), sampling)

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def states(self, image, text: str, hidden_layer: int, tokens: str):
        """Hidden states (L x D, float32) of layer `hidden_layer` for the image and `text`; `tokens`
        keeps all positions, the image's, or the text's (the chat's own markup left out)."""
        import torch

        inputs = self.chat_inputs(image, text)
        layers = self.model.config.text_config.num_hidden_layers + 1
        if not -layers <= hidden_layer < layers:
            raise UsageError(
                f"{setting('vl.hidden_layer')} {hidden_layer}: {self.ref} has {layers} hidden states "
                f"(use {-layers}..{layers - 1})"
            )
        with torch.no_grad(), self.placed():
            out = self.model(**inputs, output_hidden_states=True)
        h = out.hidden_states[hidden_layer][0].float()
        ids = inputs["input_ids"][0]
        is_image = ids == self.model.config.image_token_id
        if tokens == "image":
            keep = is_image
        elif tokens == "text":
            keep = torch.zeros_like(is_image)
            end = len(ids) - self._count(CHAT_TAIL)
            keep[end - self._count(text) : end] = True
        else:
            keep = torch.ones_like(is_image)
        if not bool(keep.any()):
            raise UsageError(f"{setting('vl.tokens')} {tokens}: no such tokens for this image and prompt")
        return h[keep].cpu()


def load(ref: str | None, device, dtype, offload: bool = False) -> VisionModel:
    """The Qwen3-VL model `ref` (Hub id, folder or 'demo'), loaded once per process and device;
    with `offload` it waits on the CPU between uses (`VisionModel.placed`)."""
    ref = ref or DEFAULT_VL_MODEL
    key = (ref, str(device), str(dtype), offload)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = _load(ref, device, dtype, offload)
        return _LOADED[key]


def _load(ref: str, device, dtype, offload: bool) -> VisionModel:
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    from llmdit_cli.models.loading import quiet_libraries

    quiet_libraries()
    where = VL_DEMO_PATH if ref == VL_DEMO else ref
    local = Path(str(where)).expanduser()
    if (ref == VL_DEMO or str(ref).startswith((".", "/", "~"))) and not local.is_dir():
        raise ModelError(f"{setting('vl.model')} {ref}: no such folder")
    if local.is_dir():
        where = local
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(where), dtype=dtype)
        model = model.to("cpu" if offload else device).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(where))
        processor = AutoImageProcessor.from_pretrained(str(where))
    except (OSError, ValueError, KeyError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{setting('vl.model')} {ref}: cannot load as a Qwen3-VL model ({first[:200]})") from None
    if not hasattr(model.config, "image_token_id") or not hasattr(model.config, "text_config"):
        raise ModelError(f"{setting('vl.model')} {ref}: not a vision-language model (no image tokens)")
    return VisionModel(model, tokenizer, processor, device, ref, offload)


def open_image(path: str, flag: str | None = None):
    """The conditioning image as RGB, or one line naming the flag (default: vl.image's) and the file."""
    from PIL import Image, UnidentifiedImageError

    where = f"{flag or setting('vl.image')} {path}"
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{where}: no such file")
    try:
        with Image.open(p) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"{where}: not an image ({exc})") from None


def image_digest(path: str) -> str:
    return hashlib.sha256(Path(path).expanduser().read_bytes()).hexdigest()


def match(v, t):
    """V moved to T's overall statistics: its mean and spread over all values become T's. Per
    dimension, V keeps its own profile (which is what `style_only` and `adain` carry over)."""
    return (v - v.mean()) / (v.std(correction=0) + _EPS) * t.std(correction=0) + t.mean()


def resample(v, length: int):
    """V (L_v x D) resampled along the sequence to `length` tokens (linear interpolation)."""
    import torch.nn.functional as F

    if v.shape[0] == length:
        return v
    return F.interpolate(v.T.unsqueeze(0), size=length, mode="linear", align_corners=True)[0].T


def blend(text, vl, alpha: float, mode: str):
    """Text embeddings (L_t x D) with VL states (L_v x D) blended in by `mode` (module docstring);
    same shape and dtype as `text`, and `text` itself when alpha is 0."""
    import torch

    if alpha == 0:
        return text
    if mode not in BLEND_MODES:
        raise UsageError(f"{setting('vl.blend_mode')} {mode}: expected one of {', '.join(BLEND_MODES)}")
    if vl.shape[-1] != text.shape[-1]:
        raise ModelError(
            f"{setting('vl.model')}: its hidden size {vl.shape[-1]} differs from the text encoder's "
            f"{text.shape[-1]}; use the Qwen3-VL that matches the model's Qwen3"
        )
    t = text.float()
    v = match(vl.float().to(t.device), t)
    if mode == "linear":
        out = (1 - alpha) * t + alpha * resample(v, t.shape[0])
    elif mode == "graduated":
        ramp = alpha * torch.arange(1, t.shape[0] + 1, device=t.device, dtype=t.dtype)[:, None] / t.shape[0]
        out = (1 - ramp) * t + ramp * resample(v, t.shape[0])
    elif mode == "attention_weighted":
        weights = torch.softmax(t @ v.T / t.shape[-1] ** 0.5, dim=-1)
        out = (1 - alpha) * t + alpha * (weights @ v)
    elif mode == "style_only":
        out = t + alpha * (v.mean(0, keepdim=True) - t.mean(0, keepdim=True))
    else:  # adain
        t_mean, t_std = t.mean(0, keepdim=True), t.std(0, keepdim=True, correction=0) + _EPS
        restyled = (t - t_mean) / t_std * v.std(0, keepdim=True, correction=0) + v.mean(0, keepdim=True)
        out = (1 - alpha) * t + alpha * restyled
    return out.to(text.dtype)


def record(vl_settings, digest: str) -> dict[str, Any]:
    """What embeddings record about the vision conditioning they were made with."""
    kept = vl_settings.model_dump(exclude={"device"})  # where it ran is this machine's business
    return {**kept, "model": vl_settings.model or DEFAULT_VL_MODEL, "image_sha256": digest}
