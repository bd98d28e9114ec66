"""Speed and memory options: attention backends, torch.compile, VAE tiling, quantization."""

from __future__ import annotations

import functools
import os
from typing import Any

from llmdit_cli.errors import UsageError, setting

# Our names -> diffusers' attention dispatch backends. Z-Image always passes a padding mask, which
# diffusers' plain flash/flash-3/sage kernels refuse; their varlen forms take it.
ATTENTION_BACKENDS = {
    "native": "_native_math",
    "sdpa": "native",
    "flash": "flash_varlen",
    "flash_3": "_flash_varlen_3",
    "sage": "sage_varlen",
    "xformers": "xformers",
}
_CUDA_ONLY_BACKENDS = {"flash", "flash_3", "sage", "xformers"}
MIN_TILE_PX = 256


def enable_vae_tiling(vae, scale_factor: int, size: int | None = None, overlap: float | None = None) -> None:
    """diffusers' own VAE tiling, with tiles of at least MIN_TILE_PX pixels.

    Each tile's attention and group norms see only that tile, so tiles much smaller than the image
    content show seams (measured on the demo VAE: 32 px tiles 22 dB, 256 px 40 dB PSNR against an
    untiled decode). The Z-Image VAE's own tile is 1024 px and is kept. `scale_factor`: pixels per
    latent (`Limits.vae_scale_factor`). `size` (pixels) and `overlap` (a fraction of a tile) are
    the user's, where the VAE has diffusers' tile attributes."""
    vae.enable_tiling()
    if getattr(vae, "tile_sample_min_size", MIN_TILE_PX) < MIN_TILE_PX:
        vae.tile_sample_min_size, vae.tile_latent_min_size = MIN_TILE_PX, MIN_TILE_PX // scale_factor
    if size is not None and hasattr(vae, "tile_sample_min_size"):
        vae.tile_sample_min_size, vae.tile_latent_min_size = size, max(1, size // scale_factor)
    if overlap is not None and hasattr(vae, "tile_overlap_factor"):
        vae.tile_overlap_factor = overlap


def attention_backend_problem(name: str, device: str, dtype=None, compile: bool = False) -> str | None:
    """Why attention backend `name` cannot run on `device` (in `dtype`, under torch.compile when
    `compile`), or None when it can. Installed backends are probed by running them (see
    `_probe_problem`), once per process for each combination."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    if name in _CUDA_ONLY_BACKENDS and not str(device).startswith("cuda"):
        return f"needs a CUDA device (the transformer runs on {device})"
    try:
        _check_attention_backend_requirements(AttentionBackendName(ATTENTION_BACKENDS[name]))
    except RuntimeError:
        package = {
            "flash": "flash-attn",
            "flash_3": "flash-attn 3",
            "sage": "sageattention",
            "xformers": "xformers",
        }.get(name, name)
        return f"{package} {_NOT_INSTALLED}"
    if dtype is None:
        return None
    return _probe_problem(name, str(device), str(dtype).removeprefix("torch."), compile and name not in _PLAIN_TORCH)


KEY = "optimization.attention_backend"
_NOT_INSTALLED = "is not installed (or too old)"
# PyTorch's own attention, which torch.compile is built around: not probed under compile (the probe
# would cost a CPU run seconds of compiling for what the stock pipelines do anyway).
_PLAIN_TORCH = {"native", "sdpa"}
# Largest difference from float32 SDPA a working kernel may show on the probe's inputs (values of
# size ~1; bf16 rounding alone is ~1e-2). Sage's int8 quantization is expected below it but not
# yet measured (no GPU with sageattention so far); a broken kernel (wrong layout, mask ignored,
# garbage under compile) is off by ~1.
_PROBE_TOLERANCE = {"float32": 1e-3, "bfloat16": 0.1, "float16": 0.1}


@functools.cache
def _probe_problem(name: str, device: str, dtype: str, compile: bool) -> str | None:
    """Run backend `name` once as Z-Image calls it (a padding mask, head size 128) and compare it
    with float32 SDPA; what went wrong in one line, or None. A kernel can be installed and still
    fail here: built for another GPU generation, refusing the dtype, or breaking under compile."""
    import torch

    try:
        out, ref = _probe_attention(ATTENTION_BACKENDS[name], torch.device(device), getattr(torch, dtype), compile)
    except Exception as exc:  # any failure of a third-party kernel means: do not use it
        # (A kernel that corrupts the CUDA context cannot be survived in-process: later CUDA
        # calls fail too. The error then names CUDA; `--attention-backend sdpa` avoids the kernels.)
        how = "under torch.compile" if compile else f"in {dtype}"
        return f"fails {how} on {device} ({_exception_line(exc)})"
    off = (out.float() - ref).abs().max().item()
    if not off <= _PROBE_TOLERANCE.get(dtype, 0.1):
        how = " under torch.compile" if compile else ""
        return f"gives wrong results{how} on {device} (off by {off:.3g} from PyTorch's attention)"
    return None


def _probe_attention(backend: str, device, dtype, compile: bool):
    """The backend's output and float32 SDPA's, for two sequences of 64 tokens, the second padded."""
    import torch
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 64, 2, 128, generator=g).to(device) for _ in range(3))
    mask = torch.ones(2, 1, 1, 64, dtype=torch.bool, device=device)
    mask[1, ..., 40:] = False

    def attend(q, k, v, mask):
        return dispatch_attention_fn(q, k, v, attn_mask=mask, backend=AttentionBackendName(backend))

    run = torch.compile(attend, fullgraph=False) if compile else attend
    with torch.no_grad():
        out = run(q.to(dtype), k.to(dtype), v.to(dtype), mask)
        ref = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), attn_mask=mask)
    return out, ref.transpose(1, 2)


def _exception_line(exc: BaseException) -> str:
    """The first line of an exception's text, without its class name (users cannot act on it)."""
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else "no message"


def check_attention_backend(name: str, device: str, dtype=None, compile: bool = False) -> None:
    problem = attention_backend_problem(name, device, dtype, compile)
    if problem:
        usable = ", ".join(
            ["auto", *(n for n in ATTENTION_BACKENDS if not attention_backend_problem(n, device, dtype, compile))]
        )
        with_compile = f" with {setting('optimization.compile')}" if compile and "torch.compile" in problem else ""
        raise UsageError(f"{setting(KEY)} {name}{with_compile}: {problem}; usable here: {usable}")


# `auto`: the first of these that can run here; none (on CPU, or without the packages): diffusers'
# default, PyTorch's SDPA, as the stock pipelines run.
AUTO_PRIORITY = ("flash_3", "flash", "sage", "xformers")


def auto_attention_backend(device: str, dtype=None, compile: bool = False) -> tuple[str | None, dict[str, str]]:
    """The backend `auto` picks on `device` by `AUTO_PRIORITY` (None: diffusers' default), and why
    each backend before it was passed over."""
    passed_over: dict[str, str] = {}
    for name in AUTO_PRIORITY:
        problem = attention_backend_problem(name, device, dtype, compile)
        if problem is None:
            return name, passed_over
        passed_over[name] = problem
    return None, passed_over


def set_attention_backend(transformer, name: str, device: str, dtype=None, compile: bool = False) -> str | None:
    """Set the transformer's attention backend; for `auto` on a GPU, returns a line saying what it
    chose and why it passed over the backends before it (None on CPU, where nothing is tried)."""
    if name != "auto":
        transformer.set_attention_backend(ATTENTION_BACKENDS[name])
        return None
    chosen, passed_over = auto_attention_backend(device, dtype, compile)
    if chosen is not None:
        transformer.set_attention_backend(ATTENTION_BACKENDS[chosen])
    if not str(device).startswith("cuda"):
        return None
    missing = [n for n, problem in passed_over.items() if problem.endswith(_NOT_INSTALLED)]
    why = [f"{n}: {problem}" for n, problem in passed_over.items() if n not in missing]
    why += [f"not installed: {', '.join(missing)}"] if missing else []
    return f"{chosen or 'sdpa'} ({'; '.join([f'{setting(KEY)} auto', *why])})"


def check_compile(device: str) -> None:
    """torch.compile's CPU backend builds C++ kernels; say so up front when no compiler is found."""
    import shutil

    if str(device).startswith("cpu") and not shutil.which(os.environ.get("CXX", "g++")):
        raise UsageError(
            f"{setting('optimization.compile')} on CPU needs a C++ compiler (g++ or $CXX) for "
            f"torch.compile's kernels; none was found on PATH"
        )


# bitsandbytes 0.50's 4-bit GEMM (many rows at once) failed with "misaligned address" on an H200
# for a 128 -> 341 layer (the demo's feed-forward) and ran for every width that is a multiple of 64
# (all of Z-Image's): layers with a width off this multiple stay in the compute dtype.
BNB4_WIDTH_MULTIPLE = 8


def quantization_config(quantize: str, dtype, targets: list[str], transformer_skip: list[str] = ()) -> dict[str, Any]:
    """from_pretrained arguments that load `targets` with bitsandbytes 8-bit or 4-bit (NF4) weights;
    the transformer's modules named in `transformer_skip` are left unquantized. (fp8 is applied
    after loading: `models.float8`.)"""
    if quantize not in ("8bit", "4bit") or not targets:
        return {}
    from diffusers.quantizers import PipelineQuantizationConfig

    backend = {"8bit": "bitsandbytes_8bit", "4bit": "bitsandbytes_4bit"}[quantize]
    quant_kwargs = (
        {"load_in_8bit": True}
        if quantize == "8bit"
        else {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": dtype}
    )
    if transformer_skip and "transformer" in targets:
        from diffusers import BitsAndBytesConfig as DiffusersBnb
        from transformers import BitsAndBytesConfig as TransformersBnb

        mapping = {"transformer": DiffusersBnb(**quant_kwargs, llm_int8_skip_modules=list(transformer_skip))}
        if "text_encoder" in targets:
            mapping["text_encoder"] = TransformersBnb(**quant_kwargs)
        return {"quantization_config": PipelineQuantizationConfig(quant_mapping=mapping)}
    return {
        "quantization_config": PipelineQuantizationConfig(
            quant_backend=backend, quant_kwargs=quant_kwargs, components_to_quantize=targets
        )
    }


def bnb4_unsafe_linears(model_class, config: dict[str, Any]) -> list[str]:
    """Names of the Linear layers of `model_class(config)` with a width that is not a multiple of
    BNB4_WIDTH_MULTIPLE (built on the meta device: no memory, no weights)."""
    import torch

    with torch.device("meta"):
        model = model_class.from_config(config)
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
        and (m.in_features % BNB4_WIDTH_MULTIPLE or m.out_features % BNB4_WIDTH_MULTIPLE)
    ]
