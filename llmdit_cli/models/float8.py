"""Float8 weights and matmuls for the text encoder's and the transformer's blocks (`--quantize fp8`).

Every Linear layer inside a model's repeated blocks (diffusers' `_repeated_blocks`: Z-Image's and
Qwen-Image's transformer blocks; transformers' `_no_split_modules`: the text encoder's decoder
layers, and Qwen2.5-VL's vision blocks) keeps its weight in float8 e4m3 with one scale per output
channel. At run time its input is scaled per row (one scale per token) and `torch._scaled_mm`
multiplies the two in float8 (tensor cores on NVIDIA GPUs of compute capability 8.9 and newer;
the CPU runs it too), giving the compute dtype back. Half the bf16 weight memory, and on Hopper
about twice the matmul rate; the price is float8's 3-bit mantissa on both operands.

Left in the compute dtype: the layers that turn the timestep into modulation (a path part ending
in `mod` or `modulation`: Z-Image's `adaLN_modulation`, Qwen-Image's `img_mod`/`txt_mod`), which
see one row and scale every token; widths that are not a multiple of 16 (the kernel's rule); and
LoRA's own A/B layers (a LoRA-wrapped layer's base layer is converted, its LoRA stays exact).

Also here: reading single-file checkpoints whose float8 weights carry per-layer scales
(`scaled_checkpoint`, for `--transformer-file`).
"""

from __future__ import annotations

import functools
import re
import threading
import weakref

import torch

from llmdit_cli.models.refs import first_line

E4M3_MAX = 448.0  # largest finite float8_e4m3fn
ALIGN = 16  # torch._scaled_mm needs both widths to be multiples of this
# A zero row keeps a positive scale (its float8 values are all zero either way).
AMAX_FLOOR = 1e-12
_KEPT_PART = re.compile(r"(^|_)mod(ulation)?$|^lora_")


def rowwise_float8(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`rows` (2-D) as float8 e4m3 and the float32 scale of each row (rows ~= q * scale).

    Scaled in the rows' own dtype where its range allows (bf16, float32: three passes over the
    input where a float32 copy would take five in eager mode); the scale returned is the exact
    inverse of the factor used, so rounding that factor costs nothing. Overshoot from rounding
    it (< 0.4% in bf16) still rounds to 448, float8's largest value."""
    work = rows if rows.dtype in (torch.bfloat16, torch.float32) else rows.float()
    amax = torch.linalg.vector_norm(work, ord=float("inf"), dim=-1, keepdim=True).float()
    factor = (E4M3_MAX / amax.clamp(min=AMAX_FLOOR)).to(work.dtype)
    return (work * factor).to(torch.float8_e4m3fn), 1.0 / factor.float()


class _LastInput(threading.local):
    """The last input a float8 layer scaled on this thread, and its float8 rows: attention's
    q/k/v projections (and a gated feed-forward's two input layers) read one tensor, which eager
    mode would otherwise scale once per layer. Held by a weak reference and checked against the
    tensor's version counter, so a modified input is never reused; the rows go with the input."""

    def __init__(self) -> None:
        self.ref, self.version, self.scaled = None, -1, None


_last = _LastInput()


def _scaled_rows(x: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`rowwise_float8` of `x` as rows of `width`, computed once per input tensor."""
    # CUDA's kernel wants row-major rows; the CPU's does not check.
    if torch.compiler.is_compiling() or x.is_inference():  # compiled: shared by the compiler;
        return rowwise_float8(x.reshape(-1, width).contiguous())  # inference: no version counter
    memo = _last
    if memo.ref is not None and memo.ref() is x and memo.version == x._version:
        return memo.scaled
    scaled = rowwise_float8(x.reshape(-1, width).contiguous())
    memo.ref = weakref.ref(x, functools.partial(_forget, memo.__dict__))
    memo.version, memo.scaled = x._version, scaled
    return scaled


def _forget(state: dict, ref: weakref.ref) -> None:
    """The input is gone: let its float8 rows go too (the memo is per thread, the collector is
    not, hence the thread's own state rather than `_last`)."""
    if state.get("ref") is ref:
        state["scaled"] = None


class Float8Linear(torch.nn.Module):
    """A Linear layer with a float8 weight (one scale per output channel) and a float8 matmul.

    The weight is held as uint8 bytes and its float32 scales as int32 bits, so that a dtype cast
    of the whole model (`.to(bfloat16)`) leaves both alone; CPU offload still moves the weight, a
    parameter. On CUDA the product comes back in bf16 (the row-wise kernel's only output), then
    in the input's dtype."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.weight = torch.nn.Parameter(weight.view(torch.uint8), requires_grad=False)
        self.register_buffer("weight_scale_bits", scale.reshape(1, -1).float().contiguous().view(torch.int32))
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, device=None) -> Float8Linear:
        """Quantize `linear`'s weight (on `device`, default where it is)."""
        w = linear.weight.detach().to(device or linear.weight.device)
        q, scale = rowwise_float8(w)
        bias = None if linear.bias is None else linear.bias.detach().to(w.device)
        return cls(q, scale, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, scale = _scaled_rows(x, self.in_features)
        # CUDA's row-wise float8 kernels give bfloat16; the CPU gives any float dtype.
        out_dtype = x.dtype if x.dtype == torch.bfloat16 or not x.is_cuda else torch.bfloat16
        out = torch._scaled_mm(
            q,
            self.weight.view(torch.float8_e4m3fn).t(),
            scale_a=scale,
            scale_b=self.weight_scale_bits.view(torch.float32),
            out_dtype=out_dtype,
        ).to(x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(x.dtype)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def float8_eligible(path: str, module: torch.nn.Module) -> bool:
    """Whether the layer at `path` (inside a block) gets a float8 weight (see the module doc)."""
    return (
        type(module) is torch.nn.Linear
        and module.in_features % ALIGN == 0
        and module.out_features % ALIGN == 0
        and not any(_KEPT_PART.search(part) for part in path.split("."))
    )


def quantize_float8(model: torch.nn.Module, device=None) -> int:
    """Swap the eligible Linear layers of `model`'s repeated blocks for `Float8Linear`, each
    quantized on `device` (default: where its weight is); returns how many were swapped."""
    kinds = set(getattr(model, "_repeated_blocks", None) or getattr(model, "_no_split_modules", None) or ())
    swapped = 0
    for block in [m for m in model.modules() if type(m).__name__ in kinds]:
        for path, module in list(block.named_modules()):
            if path and float8_eligible(path, module):
                parent, _, leaf = path.rpartition(".")
                setattr(block.get_submodule(parent), leaf, Float8Linear.from_linear(module, device))
                swapped += 1
    return swapped


def dora_adapters(model: torch.nn.Module) -> set[str]:
    """Names of the LoRA adapters in `model` that use DoRA: its magnitude term reads the base
    layer's weight as numbers, which a float8 layer does not hold."""
    return {name for m in model.modules() for name, on in (getattr(m, "use_dora", None) or {}).items() if on}


def float8_problem(device: str, dtype) -> str | None:
    """Why float8 matmuls cannot run on `device` with inputs in `dtype`, or None when they can:
    one small layer is converted and run there, and checked against the exact product. (Its own
    generator: the process's random state is left as it was.)"""
    try:
        g = torch.Generator().manual_seed(0)
        weight = torch.randn(ALIGN, 2 * ALIGN, generator=g).to(device)
        x = torch.randn(3, 2 * ALIGN, generator=g).to(device, dtype)
        got = Float8Linear(*rowwise_float8(weight), None)(x).float()
        want = x.float() @ weight.t()
    except Exception as exc:  # any failure of the kernel is the answer
        return first_line(exc)
    err = ((got - want).norm() / want.norm()).item()
    # float8's rounding gives a few percent here; a wrong kernel gives ~100% or NaN.
    return None if err < 0.2 else f"wrong results (relative error {err:.2f})"


# -- float8 checkpoints with scales (ComfyUI's "scaled fp8" and its quantization metadata format) --

# Per-layer scale keys: ComfyUI's older "scaled fp8" files (`scaled_fp8` marker, `X.scale_weight`,
# `X.scale_input`) and its newer format (`X.weight_scale`, `X.input_scale`, a per-layer
# `X.comfy_quant` JSON tensor and/or a `_quantization_metadata` header entry naming each layer's
# format). The input scales serve float8 activations, unused here.
_WEIGHT_SCALES = (".scale_weight", ".weight_scale")
_DROPPED = (".scale_input", ".input_scale", ".comfy_quant")
_UNSUPPORTED_SCALES = (".weight_scale_2", ".pre_quant_scale")
_FORMATS = {"float8_e4m3fn": torch.float8_e4m3fn, "float8_e5m2": torch.float8_e5m2}


class CheckpointError(ValueError):
    """A float8 checkpoint with scales that this reader cannot dequantize (the message says why)."""


def scaled_checkpoint(path: str, dtype) -> dict[str, torch.Tensor] | None:
    """The state dict of a single-file checkpoint whose float8 weights carry scales, dequantized to
    `dtype` (weight x scale), without the scale keys; None when the file has no such weights or
    cannot be opened as safetensors (it then loads, or fails to, as it is: plain float8 casts
    need no scale). CheckpointError for what cannot be dequantized: block-wise, double-scaled or
    unknown formats, malformed metadata, scales of the wrong shape."""
    from safetensors import safe_open

    try:
        handle = safe_open(path, "pt")
    except Exception:  # not readable as safetensors: the caller's loader says why
        return None
    with handle as f:
        keys, meta = set(f.keys()), f.metadata() or {}
        if not any(k.endswith(_WEIGHT_SCALES) for k in keys):
            return None
        if any(k.endswith(_UNSUPPORTED_SCALES) for k in keys):
            raise CheckpointError("quantized with two scales per weight (e.g. nvfp4), which llmdit cannot read")
        formats = _layer_formats(f, keys, meta)
        return {k: _dequantized(f, k, keys, formats, dtype) for k in sorted(keys) if _kept(k)}


def _layer_formats(f, keys: set[str], meta: dict) -> dict[str, str]:
    """Each quantized layer's format, from the header's `_quantization_metadata` and the
    `X.comfy_quant` tensors; only float8 formats are accepted."""
    import json

    found: dict[str, str] = {}
    try:
        layers = json.loads(meta.get("_quantization_metadata") or "{}").get("layers", {})
        found.update({name: str(conf.get("format")) for name, conf in layers.items()})
        for key in (k for k in keys if k.endswith(".comfy_quant")):
            conf = json.loads(bytes(f.get_tensor(key).to(torch.uint8).tolist()).decode())
            found[key[: -len(".comfy_quant")]] = str(conf.get("format"))
    except (AttributeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"unreadable quantization metadata ({exc})") from None
    other = sorted({fmt for fmt in found.values() if fmt not in _FORMATS})
    if other:
        raise CheckpointError(f"quantized as {other[0]}, which llmdit cannot read (float8 only)")
    return found


def _kept(key: str) -> bool:
    return key != "scaled_fp8" and not key.endswith(_WEIGHT_SCALES + _DROPPED)


def _dequantized(f, key: str, keys: set[str], formats: dict[str, str], dtype) -> torch.Tensor:
    tensor = f.get_tensor(key)
    layer = key[: -len(".weight")] if key.endswith(".weight") else None
    scale_key = next((s for s in (f"{layer}.scale_weight", f"{key}_scale") if layer and s in keys), None)
    if scale_key is None:
        return tensor
    if tensor.dtype == torch.uint8:  # float8 bytes in a uint8 container: the format says which
        tensor = tensor.view(_FORMATS[formats.get(layer, "float8_e4m3fn")])
    if tensor.dim() == 0 or not tensor.dtype.is_floating_point:
        raise CheckpointError(f"{key} is a {tensor.dtype} tensor of shape {tuple(tensor.shape)}, not a float8 weight")
    scale = f.get_tensor(scale_key).float()
    if scale.numel() not in (1, tensor.shape[0]):
        raise CheckpointError(f"{scale_key} has shape {tuple(scale.shape)}: not one scale per tensor or per row")
    scale = scale.reshape(-1, *([1] * (tensor.dim() - 1))) if scale.numel() > 1 else scale.reshape(())
    return (tensor.float() * scale).to(dtype)
