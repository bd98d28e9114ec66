"""Full-size Z-Image-Turbo on one GPU: seconds per image, peak memory and FLOP utilisation of stock
diffusers against llmdit (issue 13), plus a LoRA-training probe. No weights are downloaded: the
architecture is built from its published configs with random weights.

    python benchmarks/gpu_full.py [--out gpu_full.json] [--repeats 2] [--budget 350] [--keep]   # CUDA
    python benchmarks/gpu_full.py --tiny [--skip-compile]     # the same code path on CPU, tiny models

Steps, each in its own process under a timeout (a crash or a hung kernel loses one row, not the run):

1. build: the Z-Image-Turbo components (DESIGN.md §3: DiT dim 3840, 30 + 2 + 2 layers; Qwen3-4B text
   encoder; Flux VAE; FlowMatch Euler, shift 3; the offline byte tokenizer of llmdit_cli/tiny.py)
   are constructed on the meta device, materialised with `to_empty` straight on the GPU in bf16 and
   filled with a normal(0, 1/sqrt(fan_in)) init (norm gains 1, biases 0), which keeps activations
   O(1) through every layer. Saved as a diffusers folder (model_index.json), in /dev/shm when it has
   room. The same process counts the FLOPs of one DiT forward, one text-encoder pass and one VAE
   decode with torch.utils.flop_counter (and checks their outputs are finite), and times an
   8192^3 bf16 matmul as the card's measured peak.
2. stock: `ZImagePipeline.from_pretrained(folder, dtype=bf16).to("cuda")` and
   `pipe(prompt, height=1024, width=1024, num_inference_steps=8, guidance_scale=0.0)`.
3. llmdit: the `llmdit generate` command itself, run in-process through its Typer app with the
   same argv as `llmdit generate PROMPT --model FOLDER --attention-backend sdpa -W 1024 -H 1024
   --steps 8 --guidance-scale 0 --seed S -o IMG.png`. The CLI loads the model per process, so
   `workflows.open_model` is memoised: the first call loads, every later call is exactly what one
   more image costs inside a warm process (settings, prompt encoding, denoising, decoding, PNG with
   metadata written). A second row times llmdit's stage functions alone (encode, denoise, decode,
   no PNG), the like-for-like comparison with `pipe(...)`. Then, in the same process, the
   transformer is switched to diffusers' built-in torch backends `_native_cudnn`, `_native_flash`
   and `_native_efficient` (not llmdit CLI choices: adding them means editing llmdit_cli/models.py)
   and the CLI call is timed again; flash-attn, sageattention and xformers are not installed on
   the lent machines, so `sdpa` is the best that `--attention-backend` offers there.
4. compile: the same CLI call with `--compile` (regional torch.compile of the repeated blocks);
   the warm-up image pays the compilation.
5. fp8 (in --roles when asked for): `--quantize fp8` (float8 weights and matmuls in the text
   encoder's and the DiT's blocks), eager and with `--compile`, each with its PSNR against the
   bf16 `llmdit generate` image.
   The build step also times an 8192^3 float8 matmul with row-wise scales, the ceiling of the
   float8 layers (utilisation columns stay against the bf16 peaks).

Each timed variant makes one warm-up image, then --repeats images (median reported). Peak memory is
torch.cuda.max_memory_allocated() from just before the variant's warm-up, so it includes the
resident weights (on CPU: the process's peak RSS).

FLOPs of one image (multiply-add = 2 FLOP). DiT forward at 1024x1024 with a 256-token caption:
N = 4096 image tokens, C = 256 caption tokens (both padded to multiples of 32), S = N + C = 4352,
d = 3840, FFN width h = int(8d/3) = 10240, L = 30 main layers (all S tokens), R = 2 noise-refiner
layers (image tokens only) and R = 2 context-refiner layers (caption tokens only):

    linear     2 (4d^2 + 3dh) (L S + R N + R C) = 2 x 176,947,200 x 139,264  = 4.929e13
    attention  4 d (L S^2 + R N^2 + R C^2)      = 15,360 x 601,882,624      = 9.245e12
    embedders, final layer, adaLN, t-embedder (2 x 64 x d x N, 2 x 2560 x d x C, ...)  = 9.440e9
    one step  = 5.854e13;   8 steps = 4.683e14

(torch's FLOP counter gives exactly 5.8539e13 for one forward on the meta device.) The rough count
2 x 6.155e9 params x 4352 tokens + 4 d S^2 x 34 layers = 6.35e13 per step over-counts: the
refiners see only the image or only the caption tokens. Per image add the text encoder (Qwen3-4B
over the 512 padded tokens, logits included: ~4.3e12) and the VAE decode at 1024x1024 (1.05e13):
~4.83e14 FLOP per image, so 0.49 s at the datasheet peak. All three are counted at run time, and
the analytic DiT count is printed beside the counted one. Utilisation = FLOPs per image / seconds
per image / peak, against both the datasheet dense bf16 peak (H100/H200 SXM: 989.4 TFLOP/s) and the
measured matmul rate (~790).

The prompt is cut so that its chat-formatted text is exactly 256 tokens of the byte tokenizer.

`--role train` runs `llmdit train ARGS` in-process and reports its steps/s (median optimiser step
after the first) and peak GPU memory; it skips llmdit's final checkpoint, which for a LoRA run holds
the whole fp32 transformer (~25 GB). gpu_device.sh uses it, with `--role dataset` (a small captioned
image folder) and `--role summary`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GIB = 1024**3
SEQ_MULTIPLE = 32  # Z-Image pads image and caption tokens to multiples of 32
MAX_TEXT_TOKENS = 512  # the pipelines' max_sequence_length: the text encoder always sees 512
DIFFUSERS_BACKENDS = ("_native_cudnn", "_native_flash", "_native_efficient")
PROMPT_TEXT = (
    "a lighthouse on a rocky coast at dusk, waves breaking over dark rocks, warm light in every "
    "window, gulls circling above the water, a small red fishing boat in the harbour, mist rolling "
    "in from the open sea, the first stars over the hills, "
)
# Dense bf16 tensor-core peaks from the datasheets (TFLOP/s), matched against the device name.
DATASHEET_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4))


@dataclass
class Spec:
    """One size of the benchmark: component configs and the image it makes."""

    name: str
    transformer: dict
    text_encoder: dict
    vae: dict
    scheduler: dict
    width: int
    height: int
    steps: int
    caption_tokens: int
    approx_bytes: int  # of the saved folder, to pick where it fits
    timeouts: dict = field(default_factory=dict)


def full_spec() -> Spec:
    """Z-Image-Turbo as published (DESIGN.md §3); key names checked against diffusers 0.42.1."""
    return Spec(
        name="full",
        transformer=dict(
            all_patch_size=(2,),
            all_f_patch_size=(1,),
            in_channels=16,
            dim=3840,
            n_layers=30,
            n_refiner_layers=2,
            n_heads=30,
            n_kv_heads=30,
            norm_eps=1e-5,
            qk_norm=True,
            cap_feat_dim=2560,
            rope_theta=256.0,
            t_scale=1000.0,
            axes_dims=[32, 48, 48],
            axes_lens=[1536, 512, 512],
        ),
        text_encoder=dict(
            vocab_size=151936,
            hidden_size=2560,
            intermediate_size=9728,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=40960,
            rms_norm_eps=1e-6,
            attention_bias=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
            tie_word_embeddings=True,
        ),
        vae=dict(
            in_channels=3,
            out_channels=3,
            block_out_channels=[128, 256, 512, 512],
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            layers_per_block=2,
            latent_channels=16,
            norm_num_groups=32,
            act_fn="silu",
            sample_size=1024,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            force_upcast=True,
            use_quant_conv=False,
            use_post_quant_conv=False,
            mid_block_add_attention=True,
        ),
        scheduler=dict(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=False),
        width=1024,
        height=1024,
        steps=8,
        caption_tokens=256,
        approx_bytes=21 * 10**9,
        timeouts=dict(build=240, stock=180, llmdit=240, speed=240, compile=300, fp8=360),
    )


def tiny_spec() -> Spec:
    from llmdit_cli import tiny

    return Spec(
        name="tiny",
        transformer=dict(tiny.TRANSFORMER),
        text_encoder=dict(tiny.TEXT_ENCODER),
        vae=dict(tiny.VAE),
        scheduler=dict(tiny.SCHEDULER),
        width=64,
        height=64,
        steps=2,
        caption_tokens=64,
        approx_bytes=10**7,
        timeouts=dict(build=120, stock=120, llmdit=180, speed=120, compile=300, fp8=300),
    )


# -- FLOP arithmetic -------------------------------------------------------------------------------


def padded(n: int) -> int:
    return -(-n // SEQ_MULTIPLE) * SEQ_MULTIPLE


def dit_flops(cfg: dict, image_tokens: int, caption_tokens: int) -> dict[str, float]:
    """FLOPs of one ZImageTransformer2DModel forward at batch 1 (see the module docstring)."""
    d, L, R = cfg["dim"], cfg["n_layers"], cfg["n_refiner_layers"]
    h = int(d / 3 * 8)
    a = min(d, 256)  # adaLN / timestep-embedding width
    patch_in = cfg["all_patch_size"][0] ** 2 * cfg["all_f_patch_size"][0] * cfg["in_channels"]
    N, C = padded(image_tokens), padded(caption_tokens)
    S = N + C
    linear = 2 * (4 * d * d + 3 * d * h) * (L * S + R * N + R * C)
    attention = 4 * d * (L * S * S + R * N * N + R * C * C)
    small = (
        2 * patch_in * d * N
        + 2 * cfg["cap_feat_dim"] * d * C
        + 2 * d * patch_in * S
        + 2 * a * 4 * d * (L + R)
        + 2 * a * d
        + 2 * (256 * 1024 + 1024 * a)
    )
    return {
        "linear": float(linear),
        "attention": float(attention),
        "small": float(small),
        "total": float(linear + attention + small),
        "tokens": S,
    }


def crude_dit_flops(params: int, cfg: dict, tokens: int) -> float:
    """The back-of-envelope count: every parameter sees every token, every layer attends over all."""
    layers = cfg["n_layers"] + 2 * cfg["n_refiner_layers"]
    return float(2 * params * tokens + 4 * cfg["dim"] * tokens**2 * layers)


def datasheet_tflops(device_name: str) -> float | None:
    for key, value in DATASHEET_TFLOPS:
        if key in device_name:
            return value
    return None


# -- small helpers shared by the roles ------------------------------------------------------------


def pick_device(tiny: bool) -> str:
    import torch

    if tiny:
        return "cpu"
    if not torch.cuda.is_available():
        raise SystemExit("gpu_full.py: no CUDA device here; use --tiny for the CPU run")
    return "cuda"


def model_dtype(device: str):
    import torch

    # llmdit's --dtype auto: bf16 on CUDA, fp32 on CPU; stock runs with the same dtype.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float:
    """Peak GPU memory allocated since the last reset; on CPU the process's peak RSS."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.max_memory_allocated() / GIB
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def write_json(path: str | Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=1, default=str))


def chat_text(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )


def prompt_of_length(tokenizer, tokens: int) -> str:
    """A prompt whose chat-formatted text is exactly `tokens` tokens long, so the caption needs no
    padding and the sequence length in the FLOP count is the one that runs."""
    overhead = len(tokenizer(chat_text(tokenizer, "")).input_ids)
    text = (PROMPT_TEXT * (1 + tokens // len(PROMPT_TEXT)))[: tokens - overhead]
    prompt = text[:-1] + "." if text.endswith(" ") else text
    count = len(tokenizer(chat_text(tokenizer, prompt)).input_ids)
    if count != tokens:
        raise RuntimeError(f"prompt is {count} tokens, wanted {tokens}")
    return prompt


def timed_images(make, repeats: int, device: str) -> dict:
    """One warm-up call, then `repeats` timed calls of `make(seed)`; each returns when its image exists."""
    reset_peak(device)
    make(1)
    seconds = []
    for i in range(repeats):
        sync(device)
        start = time.perf_counter()
        make(2 + i)
        sync(device)
        seconds.append(time.perf_counter() - start)
    return {"ok": True, "seconds": seconds, "median_s": statistics.median(seconds), "peak_gib": peak_gib(device)}


def print_profile(name: str, make, seed: int, device: str) -> None:
    """`make(seed)` once more under cProfile and torch.profiler: where the host's time goes (the
    Python functions) and the device's (the kernels), printed for the log (`--profile`)."""
    import cProfile
    import pstats

    import torch

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    sync(device)
    with torch.profiler.profile(activities=activities) as prof:
        make(seed)
        sync(device)
    key = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    print(f"\n## profile: {name}, torch.profiler by {key}\n{prof.key_averages().table(sort_by=key, row_limit=20)}")
    host = cProfile.Profile()
    sync(device)
    host.enable()
    make(seed)
    sync(device)
    host.disable()
    text = io.StringIO()
    pstats.Stats(host, stream=text).sort_stats("tottime").print_stats(25)
    print(f"## profile: {name}, Python functions by own time\n{text.getvalue()}", flush=True)


def failure(exc: BaseException) -> dict:
    lines = str(exc).strip().splitlines()
    text = (lines[0] if lines else type(exc).__name__).replace(" (set LLMDIT_DEBUG=1 for the traceback)", "")
    return {"ok": False, "error": text[:200]}


def image_std(path: str | Path) -> float:
    import numpy as np
    from PIL import Image

    with Image.open(path) as img:
        return float(np.asarray(img.convert("RGB"), dtype=np.float32).std())


# -- role: build -----------------------------------------------------------------------------------


def check_config_keys(cls, cfg: dict) -> None:
    """Fail loudly if a key is not a constructor argument of the installed class (a typo would
    otherwise silently fall back to a default)."""
    import inspect

    unknown = set(cfg) - set(inspect.signature(cls.__init__).parameters)
    if unknown:
        raise KeyError(f"{cls.__name__} does not take {sorted(unknown)}")


def init_parameters(module) -> None:
    """normal(0, 1/sqrt(fan_in)) for matrices, convolutions and embeddings; 1 for norm gains, 0 for
    biases. Unit-variance inputs then give unit-variance outputs in every layer."""
    import torch

    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)


def materialise(module, device: str, dtype):
    """Meta-device parameters -> uninitialised `dtype` storage on `device` -> init_parameters.
    Buffers were built for real (include_buffers=False) and are copied back after `to_empty`."""
    import torch

    buffers = {n: b.detach().clone() for n, b in module.named_buffers()}
    torch.nn.Module.to(module, dtype)  # diffusers' own .to() warns about casting; nothing here is fp32-only
    module.to_empty(device=device)
    for name, value in buffers.items():  # as built, dtype included (rotary tables stay fp32)
        owner, _, leaf = name.rpartition(".")
        setattr(module.get_submodule(owner), leaf, value.to(device))
    init_parameters(module)
    config = getattr(module, "config", None)
    if getattr(config, "tie_word_embeddings", False):
        # to_empty gives every module a fresh Parameter, which unties lm_head from the embeddings.
        module.get_output_embeddings().weight = module.get_input_embeddings().weight
    return module.eval()


def build_components(spec: Spec, device: str, dtype):
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    check_config_keys(ZImageTransformer2DModel, spec.transformer)
    check_config_keys(AutoencoderKL, spec.vae)
    te_config = Qwen3Config(**spec.text_encoder)
    # Configs take unknown keys silently: check that each one landed where the model reads it.
    rope = spec.text_encoder.get("rope_parameters", {})
    wrong = {k for k, v in spec.text_encoder.items() if not isinstance(v, dict) and getattr(te_config, k, None) != v}
    wrong |= {f"rope_parameters.{k}" for k, v in rope.items() if te_config.rope_parameters.get(k) != v}
    if wrong:
        raise KeyError(f"Qwen3Config did not take {sorted(wrong)}")
    with init_empty_weights(include_buffers=False):
        dit = ZImageTransformer2DModel(**spec.transformer)
        te = Qwen3ForCausalLM(te_config)
        vae = AutoencoderKL(**spec.vae)
    return tuple(materialise(m, device, dtype) for m in (dit, te, vae))


def param_count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # parameters() skips tied duplicates


def count_flops(fn):
    """(FLOPs, whether attention was among them, fn's result). PyTorch's counter knows the CUDA
    attention kernels but not the CPU one, so on CPU attention must be added from the formula."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn()
    ops = counter.get_flop_counts().get("Global", {})
    return float(counter.get_total_flops()), any("attention" in str(op) for op in ops), out


def measure_components(spec: Spec, dit, te, vae, tokenizer, prompt: str, device: str, dtype) -> dict:
    """Counted FLOPs and finiteness of one DiT forward, one text-encoder pass and one VAE decode."""
    import torch

    lat_h, lat_w = spec.height // 8, spec.width // 8
    n_image = (lat_h // 2) * (lat_w // 2)
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        enc = tokenizer(
            [chat_text(tokenizer, prompt)],
            padding="max_length",
            max_length=MAX_TEXT_TOKENS,
            truncation=True,
            return_tensors="pt",
        )
        mask = enc.attention_mask.to(device).bool()
        te_flops, _, te_out = count_flops(
            lambda: te(
                input_ids=enc.input_ids.to(device), attention_mask=mask, output_hidden_states=True
            ).hidden_states[-2]
        )
        caption = te_out[0][mask[0]]
        latents = torch.randn(1, 16, lat_h, lat_w, generator=g).to(device, dtype)
        t = torch.tensor([0.5], device=device)
        dit_counted, with_attention, dit_out = count_flops(
            lambda: dit(list(latents.unsqueeze(2).unbind(0)), t, [caption], return_dict=False)[0]
        )
        vae_flops, _, pixels = count_flops(lambda: vae.decode(latents, return_dict=False)[0])
    analytic = dit_flops(spec.transformer, n_image, int(caption.shape[0]))
    if not with_attention:
        dit_counted += analytic["attention"]
    return {
        "caption_tokens": int(caption.shape[0]),
        "image_tokens": n_image,
        "sequence": analytic["tokens"],
        "dit_forward_counted": dit_counted,
        "attention_counted": with_attention,
        "dit_forward_analytic": analytic["total"],
        "dit_forward_parts": {k: analytic[k] for k in ("linear", "attention", "small")},
        "dit_forward_crude": crude_dit_flops(param_count(dit), spec.transformer, analytic["tokens"]),
        "text_encoder": te_flops,
        "vae_decode": vae_flops,
        "per_image": dit_counted * spec.steps + te_flops + vae_flops,
        "finite": {
            "text_encoder": bool(torch.isfinite(caption).all()),
            "dit": bool(torch.isfinite(dit_out[0]).all()),
            "vae": bool(torch.isfinite(pixels).all()),
        },
    }


def matmul_tflops(device: str, n: int = 8192, reps: int = 10) -> float | None:
    """The card's bf16 dense rate on random data, as a practical ceiling."""
    import torch

    if not device.startswith("cuda"):
        return None
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def float8_matmul_tflops(device: str, n: int = 8192, reps: int = 10) -> float | None:
    """The card's float8 rate with row-wise scales (what `--quantize fp8` runs), or None where
    float8 matmuls do not run: the ceiling of the fp8 rows' linear layers."""
    import torch

    from llmdit_cli.models.float8 import rowwise_float8

    if not device.startswith("cuda"):
        return None
    try:
        (qa, sa), (qb, sb) = (rowwise_float8(torch.randn(n, n, device=device, dtype=torch.bfloat16)) for _ in "ab")
        sb = sb.reshape(1, -1).contiguous()

        def mm():
            return torch._scaled_mm(qa, qb.t(), scale_a=sa, scale_b=sb, out_dtype=torch.bfloat16)

        for _ in range(3):
            mm()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(reps):
            mm()
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - no float8 on this card is a result
        print(f"float8 matmul: {exc}", flush=True)
        return None
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def role_build(args) -> dict:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, ZImagePipeline

    from llmdit_cli.families import mark_variant
    from llmdit_cli.tiny import byte_tokenizer

    spec = tiny_spec() if args.tiny else full_spec()
    device = pick_device(args.tiny)
    dtype = model_dtype(device)
    start = time.perf_counter()
    dit, te, vae = build_components(spec, device, dtype)
    sync(device)
    built = time.perf_counter()
    tokenizer = byte_tokenizer()
    prompt = prompt_of_length(tokenizer, spec.caption_tokens)
    flops = measure_components(spec, dit, te, vae, tokenizer, prompt, device, dtype)
    folder = Path(args.folder)
    shutil.rmtree(folder, ignore_errors=True)
    pipe = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**spec.scheduler),
        vae=vae,
        text_encoder=te,
        tokenizer=tokenizer,
        transformer=dit,
    )
    saving = time.perf_counter()
    pipe.save_pretrained(folder, safe_serialization=True)
    mark_variant(folder, "z-image-turbo")  # llmdit applies Z-Image-Turbo's defaults to it
    saved = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    return {
        "device": name,
        "torch": torch.__version__,
        "prompt": prompt,
        "folder": str(folder),
        "folder_gib": folder_bytes(folder) / GIB,
        "build_s": built - start,
        "save_s": saved - saving,
        "params": {"transformer": param_count(dit), "text_encoder": param_count(te), "vae": param_count(vae)},
        "flops": flops,
        "peak_tflops": {
            "datasheet": datasheet_tflops(name),
            "measured": matmul_tflops(device),
            "measured_float8": float8_matmul_tflops(device),
        },
        "peak_gib": peak_gib(device),
    }


# -- role: stock -----------------------------------------------------------------------------------


def role_stock(args) -> dict:
    import torch
    from diffusers import ZImagePipeline

    device = pick_device(args.tiny)
    spec = tiny_spec() if args.tiny else full_spec()
    pipe = ZImagePipeline.from_pretrained(args.folder, dtype=model_dtype(device), local_files_only=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    images = {}

    def make(seed: int):
        images["last"] = pipe(
            args.prompt,
            height=spec.height,
            width=spec.width,
            num_inference_steps=spec.steps,
            guidance_scale=0.0,
            generator=torch.Generator().manual_seed(seed),
        ).images[0]

    row = timed_images(make, args.repeats, device)
    png = Path(args.work) / "stock.png"
    start = time.perf_counter()
    images["last"].save(png)
    row.update(name="stock ZImagePipeline", image=str(png), png_s=time.perf_counter() - start)
    row["pngwrite_s"] = pngwrite_seconds(images["last"])
    if args.profile:  # after the image is saved: it is compared with llmdit's of the same seed
        print_profile("stock ZImagePipeline", make, 9, device)
    return {"rows": [row]}


def pngwrite_seconds(image) -> float:
    """Median of 3: the same image with llmdit's settings chunks through `pngmeta.png_bytes` (the
    parallel encoder), as every `llmdit generate` row writes it."""
    from llmdit_cli.pngmeta import png_bytes

    settings = {"prompt": "x" * 1000, "seed": 0, "steps": 8, "width": image.width, "height": image.height}
    times = []
    for _ in range(3):
        start = time.perf_counter()
        png_bytes(image, settings)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- role: llmdit (and compile) --------------------------------------------------------------------


class MemoModel:
    """Makes `workflows.open_model` load a model once per process, so repeated in-process CLI calls
    measure the warm per-image path."""

    def __init__(self):
        import llmdit_cli.workflows as wf

        self.wf, self.original, self.cache = wf, wf.open_model, {}
        wf.open_model = self.open

    def open(self, r):
        from llmdit_cli.config import OptimizationSettings

        # Settings that act per run (the step cache) share the loaded model, as in `llmdit serve`.
        fields = [f for f in OptimizationSettings.model_fields if f not in OptimizationSettings.reapplied]
        key = repr([r[f] for f in ("model", "loras", *fields)])
        if key not in self.cache:
            self.cache[key] = self.original(r)
        return self.cache[key]

    def release(self) -> None:
        import gc

        import torch

        self.cache.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    @property
    def handle(self):
        return next(iter(self.cache.values()))


class Tee(io.TextIOBase):
    """Writes through to a stream and keeps a copy (to quote llmdit's one-line error)."""

    def __init__(self, stream):
        self.stream, self.text = stream, io.StringIO()

    def write(self, s: str) -> int:
        self.text.write(s)
        return self.stream.write(s)

    def flush(self) -> None:
        self.stream.flush()


COMMANDS: dict = {}


def cli_command(name: str):
    """The click command tree of `llmdit NAME`, built once per process as the `llmdit` script
    builds it once per run (building the whole tree on every call would add ~0.1 s an image)."""
    if name not in COMMANDS:
        import typer

        from llmdit_cli.cli.app import build_app

        COMMANDS[name] = typer.main.get_command(build_app(name))
    return COMMANDS[name]


def run_cli(argv: list[str], quiet_stdout: bool = True) -> None:
    """`llmdit ARGV` in this process; its one-line error becomes the exception text."""
    err = Tee(sys.stderr)
    out = io.StringIO() if quiet_stdout else sys.stdout  # generate's stdout is just the written path
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            cli_command(argv[0]).main(args=argv, standalone_mode=False)
    except SystemExit as exc:
        if exc.code not in (0, None):
            lines = [ln for ln in err.text.getvalue().splitlines() if ln.strip()]
            message = lines[-1].removeprefix("llmdit: error: ") if lines else f"llmdit exited with {exc.code}"
            raise RuntimeError(message) from None


def generate_argv(args, spec: Spec, device: str, seed: int, png: Path, extra: list[str]) -> list[str]:
    return [
        "generate",
        args.prompt,
        "--model",
        args.folder,
        "--device",
        device,
        "--attention-backend",
        "sdpa",
        "-W",
        str(spec.width),
        "-H",
        str(spec.height),
        "--steps",
        str(spec.steps),
        "--guidance-scale",
        "0",
        "--seed",
        str(seed),
        "-q",
        "-o",
        str(png),
        *extra,
    ]


def stage_image(memo: MemoModel, r, prompt: str, seed: int) -> None:
    """llmdit's stage functions alone, as `benchmarks/bench_core.py` times them."""
    from llmdit_cli.cli.output import Output
    from llmdit_cli.families.zimage.vae import decode_latents

    wf, handle = memo.wf, memo.handle
    e = wf.encode(handle, [prompt], r, with_negative=False)
    latents = wf.run_jobs(handle, wf.plan_jobs(e, [seed], r, handle, "txt2img"), r, Output(quiet=True))
    decode_latents(handle.pipeline("vae"), latents[0])


def stage_settings(args, spec: Spec, device: str, memo: MemoModel):
    from llmdit_cli.config import resolve

    r = resolve(
        flags={
            "model": args.folder,
            "device": device,
            "width": spec.width,
            "height": spec.height,
            "steps": spec.steps,
            "guidance_scale": 0.0,
        }
    )
    return memo.wf.fill_family_defaults(r, memo.handle.defaults(), memo.handle.variant)


def role_llmdit(args) -> dict:
    device = pick_device(args.tiny)
    spec = tiny_spec() if args.tiny else full_spec()
    memo = MemoModel()
    work = Path(args.work)
    rows: list[dict] = []

    def add(name: str, measure) -> bool:
        """Time one variant; the result file is rewritten after each, so a timeout keeps the rows done."""
        try:
            rows.append({"name": name, **measure()})
        except Exception as exc:  # noqa: BLE001 - a failed variant is a result
            rows.append({"name": name, **failure(exc)})
        write_json(args.result, {"rows": rows})
        return rows[-1]["ok"]

    def cli(png: Path, extra: list[str]):
        make = lambda s: run_cli(generate_argv(args, spec, device, s, png, extra))  # noqa: E731
        return lambda: {**timed_images(make, args.repeats, device), "image": str(png)}

    def per_image(png: Path, extra: list[str], images: int):
        """Seconds per image of calls that make `images` each."""
        make = lambda s: run_cli(generate_argv(args, spec, device, s, png, extra))  # noqa: E731

        def measure():
            timed = timed_images(make, args.repeats, device)
            scaled = [t / images for t in timed["seconds"]]
            return {**timed, "seconds": scaled, "median_s": statistics.median(scaled), "images_per_call": images}

        return measure

    if args.role == "compile":
        add("llmdit generate --compile", cli(work / "llmdit_compile.png", ["--compile"]))
        return {"rows": rows}
    if args.role == "speed":
        return role_speed(args, work, add, per_image)
    if args.role in ("fp8", "quantize"):
        return role_quantized(args, work, add, cli, memo)
    if not add("llmdit generate (sdpa)", cli(work / "llmdit.png", [])):
        return {"rows": rows}
    if args.profile:
        make = lambda s: run_cli(generate_argv(args, spec, device, s, work / "profiled.png", []))  # noqa: E731
        print_profile("llmdit generate", make, 9, device)
    add("llmdit generate --num-images 4 (per image)", per_image(work / "many-{index}.png", ["--num-images", "4"], 4))
    r = stage_settings(args, spec, device, memo)
    add(
        "llmdit stages (sdpa, no PNG)",
        lambda: timed_images(lambda s: stage_image(memo, r, args.prompt, s), args.repeats, device),
    )
    transformer = memo.handle.pipeline("transformer").transformer

    def on_backend(backend: str):
        def measure():
            transformer.set_attention_backend(backend)
            return cli(work / f"llmdit{backend}.png", [])()

        return measure

    for backend in () if args.no_backends else DIFFUSERS_BACKENDS:
        add(f"llmdit generate + diffusers {backend}", on_backend(backend))
    return {"rows": rows}


def role_speed(args, work: Path, add, per_image) -> dict:
    """Issue 24 on the GPU: `--batch-size 4` (seconds per image of 4 made together), and Z-Image
    Base's settings (50 steps, CFG 4) without and with `--step-cache first-block` (PSNR between)."""
    batch = ["--num-images", "4", "--batch-size", "4"]
    add("llmdit generate --batch-size 4 (per image)", per_image(work / "batch4-{index}.png", batch, 4))
    base = ["--steps", "50", "--guidance-scale", "4"]
    plain, cached = work / "base.png", work / "base-cached.png"
    add("llmdit generate, Z-Image Base settings", per_image(plain, base, 1))
    cache = [*base, "--step-cache", "first-block"]
    if add("llmdit generate, Base settings --step-cache first-block", per_image(cached, cache, 1)):
        rows = json.loads(Path(args.result).read_text())["rows"]
        rows[-1]["psnr_vs_uncached"] = psnr(str(plain), str(cached))
        write_json(args.result, {"rows": rows})
    return json.loads(Path(args.result).read_text())


def role_quantized(args, work: Path, add, cli, memo) -> dict:
    """quantize: bitsandbytes `--quantize 8bit` and `4bit` (each loads again: bitsandbytes quantizes
    while loading). fp8: `--quantize fp8` (float8 blocks), eager and with `--compile`. Each with
    its PSNR against the bf16 image of the llmdit role (same seed)."""
    if args.role == "quantize":
        variants = [["--quantize", "8bit"], ["--quantize", "4bit"]]
    else:
        variants = [["--quantize", "fp8"], *([] if args.skip_compile else [["--quantize", "fp8", "--compile"]])]
    images = {}
    for extra in variants:
        memo.release()  # each variant's peak memory without the other's weights
        name = "llmdit generate " + " ".join(extra)
        images[name] = work / ("llmdit_" + "_".join(e.lstrip("-") for e in extra[1:]) + ".png")
        add(name, cli(images[name], extra))
    rows = json.loads(Path(args.result).read_text())["rows"]
    for row in rows:
        if row.get("ok") and row["name"] in images:
            row["psnr_vs_bf16"] = psnr(str(work / "llmdit.png"), str(images[row["name"]]))
    write_json(args.result, {"rows": rows})
    return {"rows": rows}


# -- role: train -----------------------------------------------------------------------------------


def role_train(args, train_argv: list[str]) -> dict:
    """`llmdit train ARGV` in-process, with each optimiser step timed and the peak memory read.

    The final checkpoint is skipped unless --keep-checkpoint: with the current loop a LoRA
    checkpoint holds the whole fp32 transformer (~25 GB at full size), which is not what steps/s or
    peak memory measure and would cost half a minute of a short lease."""
    import torch

    from llmdit_cli.train import loop

    device = "cuda" if torch.cuda.is_available() else "cpu"
    steps: list[float] = []
    before_steps = {"peak": 0.0}
    original_step = getattr(loop, "_step", None)

    def timed_step(*a, **k):
        if not steps:  # from here on: training alone, not the caching of captions and latents
            before_steps["peak"] = peak_gib(device)
            reset_peak(device)
        start = time.perf_counter()
        loss = original_step(*a, **k)  # returns a Python float, so the GPU has finished the step
        steps.append(time.perf_counter() - start)
        return loss

    if original_step is not None:
        loop._step = timed_step
    if not args.keep_checkpoint and hasattr(loop, "_save_checkpoint"):
        loop._save_checkpoint = lambda *a, **k: None
    start = time.perf_counter()
    result: dict = {"argv": train_argv}
    try:
        run_cli(["train", *train_argv], quiet_stdout=False)
        result["ok"] = True
    except Exception as exc:  # noqa: BLE001
        result.update(failure(exc))
    result["wall_s"] = time.perf_counter() - start
    result["steps"] = len(steps)
    if len(steps) > 1:
        steady = statistics.median(steps[1:])  # the first step pays kernel selection and allocation
        result.update(step_s=steady, steps_per_s=1 / steady, first_step_s=steps[0])
    result["train_peak_gib"] = peak_gib(device)
    result["peak_gib"] = max(result["train_peak_gib"], before_steps["peak"])
    return result


def role_dataset(args) -> dict:
    """`count` captioned images (soft gradients with a disc: PNGs of a realistic size) and metadata.jsonl."""
    import numpy as np
    from PIL import Image, ImageDraw

    folder = Path(args.dataset)
    folder.mkdir(parents=True, exist_ok=True)
    size = args.resolution
    x, y = np.meshgrid(*(np.linspace(0, 1, size, dtype=np.float32),) * 2)
    colours = [((200, 40, 40), "red"), ((40, 160, 60), "green"), ((40, 70, 200), "blue"), ((230, 200, 40), "yellow")]
    rows = []
    for i in range(args.count):
        (r, g, b), word = colours[i % len(colours)]
        base = np.stack([x * r, y * g, np.full_like(x, b / 2)], -1)
        img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        ImageDraw.Draw(img).ellipse([size // 4, size // 4, 3 * size // 4, 3 * size // 4], fill=(r, g, b))
        img.save(folder / f"{i:03d}.png")
        rows.append({"file_name": f"{i:03d}.png", "text": f"a {word} disc on a soft gradient background, photo {i}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"dataset: {args.count} images of {size}x{size} with captions in {folder}")
    return {"dataset": str(folder), "count": args.count}


# -- orchestration ---------------------------------------------------------------------------------


def choose_folder(spec: Spec) -> Path:
    """/dev/shm (RAM: fast loads) when it has room for the model and a margin, else a disk temp dir."""
    for base in ("/dev/shm", tempfile.gettempdir()):
        try:
            if os.access(base, os.W_OK) and shutil.disk_usage(base).free > spec.approx_bytes * 1.3 + GIB:
                return Path(base) / "llmdit-gpu-full" / f"z-image-turbo-random-{spec.name}"
        except OSError:
            continue
    raise SystemExit(f"no room for the {spec.approx_bytes / 1e9:.0f} GB model in /dev/shm or {tempfile.gettempdir()}")


def kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_role(role: str, args, work: Path, timeout: float, extra: list[str]) -> dict:
    """This script with --role ROLE in a fresh process (own process group, killed whole on timeout)."""
    result = work / f"{role}.json"
    cmd = [
        sys.executable,
        __file__,
        "--role",
        role,
        "--result",
        str(result),
        "--work",
        str(work),
        "--repeats",
        str(args.repeats),
        *(["--tiny"] if args.tiny else []),
        *(["--no-backends"] if args.no_backends else []),
        *(["--skip-compile"] if args.skip_compile else []),
        *(["--profile"] if args.profile else []),
        *extra,
    ]
    print(f"\n## {role} (timeout {timeout:.0f} s)", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, start_new_session=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    def stop(signum, frame):  # an outer `timeout` stops us: take the role's process group with us
        kill_group(proc.pid)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        rc = proc.wait(timeout=max(timeout, 1))
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait()
        rc = "timeout"
    finally:
        signal.signal(signal.SIGTERM, previous)
    wall = time.perf_counter() - start
    print(f"## {role}: exit {rc} after {wall:.1f} s", flush=True)
    data = json.loads(result.read_text()) if result.is_file() else {}
    data.setdefault("role", {}).update(rc=rc, wall_s=wall)
    return data


def finish_rows(report: dict) -> None:
    """Ratios to stock and utilisation, from the counted FLOPs and the two peaks."""
    flops = report.get("flops", {}).get("per_image")
    peaks = report.get("peak_tflops", {})
    stock = next((r for r in report["rows"] if r["name"].startswith("stock") and r.get("ok")), None)
    for row in report["rows"]:
        if not row.get("ok"):
            continue
        if row.get("image") and Path(row["image"]).is_file():
            row["image_std"] = image_std(row["image"])  # 0 would mean a blank image
        s = row["median_s"]
        row["ratio_to_stock"] = s / stock["median_s"] if stock else None
        for kind in ("datasheet", "measured"):
            peak = peaks.get(kind)
            row[f"util_{kind}"] = flops / s / (peak * 1e12) if flops and peak else None


def psnr(a: str, b: str) -> float | None:
    import numpy as np
    from PIL import Image

    if not (Path(a).is_file() and Path(b).is_file()):
        return None
    x, y = (np.asarray(Image.open(p).convert("RGB"), dtype=np.float64) for p in (a, b))
    mse = float(((x - y) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def best_attention(report: dict) -> dict | None:
    """The fastest uncompiled `llmdit generate` row: sdpa or one of diffusers' torch backends."""
    rows = [
        r
        for r in report.get("rows", [])
        if r.get("ok") and r["name"].startswith("llmdit generate") and not SPEED_ROWS.search(r["name"])
    ]
    return min(rows, key=lambda r: r["median_s"], default=None)


# Rows of other settings than the attention comparison's (compile, issue 24's batch and Base runs).
SPEED_ROWS = re.compile(r"--compile|--batch-size|--num-images|Base settings|--quantize")


def fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def print_report(report: dict) -> None:
    f = report.get("flops", {})
    peaks = report.get("peak_tflops", {})
    print(
        f"\n# gpu_full ({report['mode']}): {report.get('device')}, torch {report.get('torch')}, "
        f"{report['width']}x{report['height']}, {report['steps']} steps, guidance 0, "
        f"median of {report['repeats']} warm images"
    )
    if f:
        print(
            f"DiT forward FLOPs: counted {f['dit_forward_counted']:.4e}, analytic {f['dit_forward_analytic']:.4e}, "
            f"rough 2*P*S+attention {f['dit_forward_crude']:.4e} (S = {f['sequence']} tokens: "
            f"{f['image_tokens']} image + {f['caption_tokens']} caption)"
        )
        print(
            f"per image: {f['steps']} x DiT + text encoder {f['text_encoder']:.3e} + VAE decode "
            f"{f['vae_decode']:.3e} = {f['per_image']:.4e} FLOP; outputs finite: {f['finite']}"
        )
    print(
        f"bf16 peak: datasheet {fmt(peaks.get('datasheet'), '.1f')} TFLOP/s, measured matmul "
        f"{fmt(peaks.get('measured'), '.1f')} TFLOP/s; float8 row-wise matmul "
        f"{fmt(peaks.get('measured_float8'), '.1f')} TFLOP/s; model folder {fmt(report.get('folder_gib'), '.1f')} GiB"
    )
    print("\n| variant | s / image | peak GiB | vs stock | util (datasheet) | util (measured) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in report["rows"]:
        if row.get("ok"):
            print(
                f"| {row['name']} | {row['median_s']:.3f} | {row['peak_gib']:.1f} "
                f"| {fmt(row.get('ratio_to_stock'), '.2f')} | {fmt(row.get('util_datasheet'), '.1%')} "
                f"| {fmt(row.get('util_measured'), '.1%')} |"
            )
        else:
            print(f"| {row['name']} | failed: {row.get('error', '')} | | | | |")
    best = best_attention(report)
    if best:
        print(f"\nfastest attention for llmdit here: {best['name']} ({best['median_s']:.3f} s/image)")
    stock = next((r for r in report["rows"] if r.get("png_s") is not None), None)
    if stock:
        print(f"writing one such image as PNG with PIL: {stock['png_s']:.3f} s", end="")
        if stock.get("pngwrite_s") is not None:
            print(f"; llmdit's encoder (part of every `llmdit generate` row): {stock['pngwrite_s']:.3f} s", end="")
        print()
    cached = next((r for r in report["rows"] if r.get("psnr_vs_uncached") is not None), None)
    if cached:
        print(f"--step-cache first-block vs uncached at Base settings: PSNR {cached['psnr_vs_uncached']:.1f} dB")
    for row in (r for r in report["rows"] if r.get("psnr_vs_bf16") is not None):
        print(f"{row['name']} vs the bf16 `llmdit generate` image: PSNR {row['psnr_vs_bf16']:.1f} dB")
    if report.get("psnr_stock_llmdit_db") is not None:
        print(f"stock vs llmdit image, same seed: PSNR {report['psnr_stock_llmdit_db']:.1f} dB")


def bench(args) -> dict:
    spec = tiny_spec() if args.tiny else full_spec()
    deadline = time.monotonic() + args.budget if args.budget else math.inf
    folder = Path(args.folder) if args.folder else choose_folder(spec)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu_full_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "mode": spec.name,
        "width": spec.width,
        "height": spec.height,
        "steps": spec.steps,
        "repeats": args.repeats,
        "rows": [],
        "roles": {},
    }

    def left(role: str) -> float:
        return min(spec.timeouts[role], deadline - time.monotonic() - 5)

    build = run_role("build", args, work, left("build"), ["--folder", str(folder)])
    report["roles"]["build"] = build.pop("role")
    report.update(build)
    if "flops" in report:
        report["flops"]["steps"] = spec.steps
    if not (folder / "model_index.json").is_file() or "prompt" not in build:
        report["rows"].append({"name": "build", "ok": False, "error": f"no model folder ({report['roles']['build']})"})
    else:
        common = ["--folder", str(folder), "--prompt", build["prompt"]]
        roles = [r for r in args.roles.split(",") if not (r == "compile" and args.skip_compile)]
        for role in roles:
            if left(role) < 20:
                report["rows"].append({"name": role, "ok": False, "error": "skipped: out of time budget"})
                continue
            data = run_role(role, args, work, left(role), common)
            report["roles"][role] = data.get("role")
            report["rows"] += data.get("rows") or [
                {"name": role, "ok": False, "error": f"no result ({data.get('role')})"}
            ]
    finish_rows(report)
    report["psnr_stock_llmdit_db"] = psnr(work / "stock.png", work / "llmdit.png")
    report["work"] = str(work)
    if not args.keep:
        shutil.rmtree(folder.parent if folder.parent.name == "llmdit-gpu-full" else folder, ignore_errors=True)
    return report


# -- role: summary (the device script's last lines) ------------------------------------------------


def summary(args) -> None:
    lines = ["| measurement | result |", "| --- | --- |"]
    if args.result and Path(args.result).is_file():
        report = json.loads(Path(args.result).read_text())
        f, peaks = report.get("flops", {}), report.get("peak_tflops", {})
        if report.get("device"):
            lines.append(
                f"| device | {report.get('device')}, {report.get('width')}x{report.get('height')}, "
                f"{report.get('steps')} steps |"
            )
        if f:
            lines.append(
                f"| FLOPs per image | {f['per_image']:.3e} (DiT forward counted "
                f"{f['dit_forward_counted']:.4e}, formula {f['dit_forward_analytic']:.4e}); bf16 peak "
                f"{fmt(peaks.get('datasheet'), '.0f')} datasheet / {fmt(peaks.get('measured'), '.0f')} "
                f"measured TFLOP/s, float8 {fmt(peaks.get('measured_float8'), '.0f')} measured |"
            )
        for row in report.get("rows", []):
            if row.get("ok"):
                lines.append(
                    f"| {row['name']} | {row['median_s']:.3f} s/image, peak {row['peak_gib']:.1f} GiB, "
                    f"x{fmt(row.get('ratio_to_stock'), '.2f')} stock, util "
                    f"{fmt(row.get('util_datasheet'), '.1%')} of datasheet / "
                    f"{fmt(row.get('util_measured'), '.1%')} of measured |"
                )
            else:
                lines.append(f"| {row['name']} | failed: {row.get('error')} |")
        best = best_attention(report)
        if best:
            lines.append(f"| fastest llmdit attention | {best['name']} |")
        cached = next((r for r in report["rows"] if r.get("psnr_vs_uncached") is not None), None)
        if cached:
            lines.append(f"| --step-cache vs uncached at Base settings | PSNR {cached['psnr_vs_uncached']:.1f} dB |")
        for row in (r for r in report["rows"] if r.get("psnr_vs_bf16") is not None):
            lines.append(f"| {row['name']} vs the bf16 image | PSNR {row['psnr_vs_bf16']:.1f} dB |")
        if report.get("psnr_stock_llmdit_db") is not None:
            lines.append(f"| stock vs llmdit image, same seed | PSNR {report['psnr_stock_llmdit_db']:.1f} dB |")
    else:
        lines.append("| gpu_full | no result file |")
    for path in args.train or []:
        name = Path(path).stem
        if not Path(path).is_file():
            lines.append(f"| {name} | no result file |")
            continue
        t = json.loads(Path(path).read_text())
        if t.get("ok"):
            lines.append(
                f"| {name} | {fmt(t.get('steps_per_s'), '.2f')} steps/s ({t.get('steps')} steps, first "
                f"{fmt(t.get('first_step_s'), '.1f')} s), peak {fmt(t.get('train_peak_gib'), '.1f')} GiB "
                f"while training ({fmt(t.get('peak_gib'), '.1f')} with caching), "
                f"process {t['wall_s']:.0f} s |"
            )
        else:
            lines.append(f"| {name} | failed: {t.get('error')} |")
    if args.check_log and Path(args.check_log).is_file():
        rows = [
            ln
            for ln in Path(args.check_log).read_text().splitlines()
            if ln.startswith("| ") and not ln.startswith(("| check", "| ---"))
        ]
        ok = sum(1 for ln in rows if "| ok |" in ln)
        lines.append(f"| gpu_check.py (demo model) | {ok} ok, {len(rows) - ok} failed of {len(rows)} run |")
    print("\n".join(lines))


# -- entry point -----------------------------------------------------------------------------------


def parse(argv: list[str]):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="tiny models on CPU (the CI check of this script)")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--repeats", type=int, default=2, help="timed images per variant, after one warm-up")
    p.add_argument("--budget", type=float, help="seconds for the whole benchmark; later steps are skipped")
    p.add_argument("--folder", help="where to save the model folder (default: /dev/shm or a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the model folder (for the training probe)")
    p.add_argument("--skip-compile", action="store_true", help="leave out the --compile variants")
    p.add_argument("--roles", default="stock,llmdit,speed,compile", help="the timed steps after the build, in order")
    p.add_argument("--no-backends", action="store_true", help="(llmdit) leave out diffusers' own attention backends")
    p.add_argument("--profile", action="store_true", help="(stock, llmdit) print where one more image's time goes")
    p.add_argument(
        "--role",
        default="bench",
        choices=[
            "bench",
            "build",
            "stock",
            "llmdit",
            "compile",
            "speed",
            "fp8",
            "quantize",
            "train",
            "dataset",
            "summary",
        ],
    )
    p.add_argument("--result", help="(roles) JSON result file; (summary) the benchmark's JSON")
    p.add_argument("--work", help="folder for the images and per-step results (default: a temp dir)")
    p.add_argument("--prompt", help="(roles) the prompt the build step chose")
    p.add_argument("--keep-checkpoint", action="store_true", help="(train) let llmdit save its checkpoint")
    p.add_argument("--dataset", help="(dataset) folder to write")
    p.add_argument("--resolution", type=int, default=1024, help="(dataset) image side")
    p.add_argument("--count", type=int, default=4, help="(dataset) number of images")
    p.add_argument("--train", action="append", help="(summary) a train result JSON; repeat")
    p.add_argument("--check-log", help="(summary) gpu_check.py's log")
    return p.parse_args(argv)


def main() -> None:
    argv = sys.argv[1:]
    train_argv = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parse(argv[: argv.index("--")] if "--" in argv else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    roles = {
        "build": role_build,
        "stock": role_stock,
        "llmdit": role_llmdit,
        "compile": role_llmdit,
        "speed": role_llmdit,
        "fp8": role_llmdit,
        "quantize": role_llmdit,
        "dataset": role_dataset,
    }
    if args.role == "summary":
        summary(args)
    elif args.role == "train":
        result = role_train(args, train_argv)
        print(json.dumps(result, indent=1, default=str))
        if args.result:
            write_json(args.result, result)
        sys.exit(0 if result.get("ok") else 1)
    elif args.role in roles:
        result = roles[args.role](args)
        if args.result:
            write_json(args.result, result)
    else:
        report = bench(args)
        print_report(report)
        if args.out:
            write_json(args.out, report)
        print(f"\nfolder: {report.get('folder')} ({'kept' if args.keep else 'removed'})")


if __name__ == "__main__":
    main()
