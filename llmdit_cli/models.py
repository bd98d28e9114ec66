"""Model references, family defaults, and loading components once per process.

`--model` is a Hub id, a local diffusers folder, or `demo` (the tiny pipeline shipped in the
package). Components load lazily: `encode` never loads the transformer, `generate --from-embeds`
never loads the text encoder.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, ModelError, UsageError

DEMO = "demo"
DEMO_PATH = Path(__file__).parent / "assets" / "demo"

# One source of truth for per-family defaults. `shift: None` keeps the model's own scheduler config.
# `slg_scale` applies once SLG is switched on (--slg); the SLG values are the ones that worked on
# Z-Image in the project this toolkit grew out of.
_Z_IMAGE_SLG = dict(slg_scale=2.5, slg_layers=[7, 8, 9, 10, 11, 12], slg_start=0.05, slg_stop=0.5)
FAMILIES: dict[str, dict[str, Any]] = {
    "z-image-turbo": dict(width=1024, height=1024, steps=8, guidance_scale=0.0, shift=3.0, **_Z_IMAGE_SLG,
                          dype_base_resolution=1024),
    "z-image": dict(width=1024, height=1024, steps=8, guidance_scale=0.0, shift=None, **_Z_IMAGE_SLG,
                    dype_base_resolution=1024),
    # The trained demo (recipes/demo-shapes.toml) makes 32x32 images; 2 steps score best on it, so
    # its SLG window starts at the first step. It has 4 blocks.
    "demo": dict(width=32, height=32, steps=2, guidance_scale=0.0, shift=3.0, slg_scale=2.5, slg_layers=[1, 2],
                 slg_start=0.0, slg_stop=0.5, dype_base_resolution=32),
}
# Our names -> diffusers' attention dispatch backends. Z-Image always passes a padding mask, which
# diffusers' plain flash/flash-3/sage kernels refuse; their varlen forms take it.
ATTENTION_BACKENDS = {"native": "_native_math", "sdpa": "native", "flash": "flash_varlen",
                      "flash_3": "_flash_varlen_3", "sage": "sage_varlen", "xformers": "xformers"}
_CUDA_ONLY_BACKENDS = {"flash", "flash_3", "sage", "xformers"}
COMPONENTS = ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")


def family_of(ref: str) -> str:
    if ref == DEMO:
        return "demo"
    if "z-image-turbo" in ref.lower():
        return "z-image-turbo"
    return "z-image"


def resolve_folder(ref: str) -> tuple[Path, str | None]:
    """The local diffusers folder for `ref`, and the Hub revision it came from (if any)."""
    if ref == DEMO:
        return DEMO_PATH, None
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        if not path.is_dir():
            raise ModelError(f"--model {ref}: no such folder")
        if (path / "model" / "model_index.json").is_file():  # a `llmdit train --method full` run folder
            path = path / "model"
        if not (path / "model_index.json").is_file():
            raise ModelError(f"--model {ref}: not a diffusers folder (no model_index.json)")
        return path, None
    return _hub_snapshot(ref)


def _hub_snapshot(repo_id: str) -> tuple[Path, str | None]:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.jinja", "*.txt", "*.safetensors", "tokenizer/*"]
    try:
        folder = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
            raise ModelError(
                f"--model {repo_id}: not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
                f"run `hf download {repo_id}` on a connected machine or pass a local folder"
            ) from None
        try:
            folder = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as exc:
            raise ModelError(
                f"--model {repo_id}: not cached and cannot be downloaded ({type(exc).__name__}); "
                f"run `hf download {repo_id}` on a connected machine, or pass a local folder or `demo`"
            ) from None
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"--model {repo_id}: the Hub repo is not a diffusers pipeline (no model_index.json)")
    return folder, folder.name


def config_hash(folder: Path, component: str) -> str:
    cfg = folder / component / "config.json"
    data = cfg.read_bytes() if cfg.is_file() else b""
    return hashlib.sha256(data).hexdigest()[:16]


def weights_fingerprint(folder: Path, component: str, span: int = 1 << 20) -> str:
    """A cheap fingerprint of a component's weights: hash of the first MiB of its first weights file."""
    files = sorted((folder / component).glob("*.safetensors"))
    if not files:
        return ""
    with files[0].open("rb") as fh:
        return hashlib.sha256(fh.read(span)).hexdigest()[:16]


def parse_lora(spec: str) -> tuple[str, float]:
    """`PATH[:SCALE]` -> (path, scale)."""
    path, sep, scale = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0


@dataclass
class Placement:
    """How components load and where they run: dtype, devices, offload, quantization, speed-ups."""

    dtype: str = "auto"
    device: str = "auto"
    text_encoder_device: str | None = None
    dit_device: str | None = None
    vae_device: str | None = None
    cpu_offload: str = "none"
    attention_backend: str = "auto"
    compile: bool = False
    vae_tiling: bool = False
    quantize: str = "none"
    transformer_file: str | None = None

    def base_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def torch_dtype(self):
        import torch

        if self.dtype == "auto":
            return torch.bfloat16 if self.base_device().startswith("cuda") else torch.float32
        return getattr(torch, self.dtype)

    def validate(self) -> None:
        """Every device named must parse and exist on this machine."""
        import torch

        for name in ("device", "text_encoder_device", "dit_device", "vae_device"):
            value = getattr(self, name)
            if value in (None, "auto"):
                continue
            flag = "--" + name.replace("_", "-")
            try:
                dev = torch.device(value)
            except (RuntimeError, ValueError):
                raise UsageError(f"{flag} {value}: not a device (use cpu, cuda, cuda:N, mps or auto)") from None
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise UsageError(f"{flag} {value}: no CUDA device is available here (torch {torch.__version__}); "
                                 f"use --device cpu")
            if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
                raise UsageError(f"{flag} {value}: this machine has {torch.cuda.device_count()} CUDA device(s)")
            if dev.type == "mps" and not torch.backends.mps.is_available():
                raise UsageError(f"{flag} {value}: MPS is not available here; use --device cpu")
        self._validate_cuda_features()
        if self.attention_backend != "auto":
            problem = attention_backend_problem(self.attention_backend, self.device_for("transformer"))
            if problem:
                usable = ", ".join(["auto", *(n for n in ATTENTION_BACKENDS
                                               if not attention_backend_problem(n, self.device_for("transformer")))])
                raise UsageError(f"--attention-backend {self.attention_backend}: {problem}; usable here: {usable}")
        if self.compile:
            check_compile(self.device_for("transformer"))
        if self.transformer_file:
            check_transformer_file(self.transformer_file)

    def _validate_cuda_features(self) -> None:
        import importlib.util

        import torch

        cuda = torch.cuda.is_available() and not self.base_device().startswith(("cpu", "mps"))
        if self.cpu_offload != "none" and not cuda:
            raise UsageError(f"--cpu-offload {self.cpu_offload}: needs a CUDA GPU (it moves components between "
                             f"CPU and GPU); none is in use here, so leave it at none")
        if self.quantize != "none":
            if not cuda:
                raise UsageError(f"--quantize {self.quantize}: bitsandbytes quantization needs a CUDA GPU; "
                                 f"none is in use here")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise UsageError(f"--quantize {self.quantize}: needs bitsandbytes (pip install 'llmdit[quant]')")

    def device_for(self, component: str) -> str:
        specific = {"text_encoder": self.text_encoder_device, "transformer": self.dit_device,
                    "vae": self.vae_device}.get(component)
        return specific or self.base_device()


@dataclass
class ModelHandle:
    """A resolved model whose components load on first use and are then kept."""

    ref: str
    placement: Placement = field(default_factory=Placement)
    loras: list[str] = field(default_factory=list)
    _pipe: Any = None
    _loaded: set = field(default_factory=set)

    def __post_init__(self):
        self.placement.validate()
        check_lora_files(self.loras)
        self.folder, self.revision = resolve_folder(self.ref)
        self.family = family_of(self.ref)

    def identity(self, component: str) -> dict[str, Any]:
        return {"model": self.ref, "revision": self.revision,
                f"{component}_config": config_hash(self.folder, component),
                f"{component}_weights": weights_fingerprint(self.folder, component)}

    def component_config(self, component: str) -> dict[str, Any]:
        path = self.folder / component / ("scheduler_config.json" if component == "scheduler" else "config.json")
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"--model {self.ref}: cannot read {component} config ({exc})") from None

    def release(self, *components: str) -> None:
        """Drop loaded components (e.g. the text encoder once training data is cached)."""
        if self._pipe is None:
            return
        for name in components:
            if name in self._loaded:
                setattr(self._pipe, name, None)
                self._loaded.discard(name)
        import gc

        gc.collect()

    @contextmanager
    def using_transformer(self, transformer):
        """Run with `transformer` in place of the model's own (None: no change), e.g. the one a
        training run is updating; the pipeline's own is put back afterwards."""
        if transformer is None:
            yield
            return
        pipe = self.pipeline("vae", "scheduler")
        had, previous = "transformer" in self._loaded, pipe.transformer
        pipe.transformer = transformer
        self._loaded.add("transformer")
        try:
            yield
        finally:
            pipe.transformer = previous
            if not had:
                self._loaded.discard("transformer")

    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.component_config("vae").get("block_out_channels", [0] * 4)) - 1)

    def pipeline(self, *needed: str):
        """The ZImagePipeline with at least `needed` components loaded."""
        missing = [c for c in needed if c not in self._loaded]
        if self._pipe is not None and not missing:
            return self._pipe
        want = self._loaded | set(needed) | {"scheduler"}
        self._pipe = self._load(want)
        self._loaded = want
        return self._pipe

    def _load(self, want: set):
        quiet_libraries()
        from diffusers import ZImagePipeline

        kept = {c: getattr(self._pipe, c) for c in self._loaded if c in want} if self._pipe is not None else {}
        skip = {c: None for c in COMPONENTS if c not in want}
        try:
            pipe = ZImagePipeline.from_pretrained(
                self.folder, dtype=self.placement.torch_dtype(), local_files_only=True, **skip, **kept,
                **self._load_kwargs(want))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"--model {self.ref}: cannot load as a Z-Image pipeline ({_first_line(exc)})") from None
        pipe.set_progress_bar_config(disable=True)
        if "transformer" in want and "transformer" not in self._loaded and self.loras:
            apply_loras(pipe, self.loras)
        self._place(pipe, want - self._loaded)
        return pipe

    def _place(self, pipe, new: set) -> None:
        pl = self.placement
        if "vae" in new and pl.vae_tiling:
            enable_vae_tiling(pipe.vae)
        if "transformer" in new:
            set_attention_backend(pipe.transformer, pl.attention_backend)
        if pl.cpu_offload == "model":
            pipe.enable_model_cpu_offload(device=pl.base_device())
        elif pl.cpu_offload == "sequential":
            pipe.enable_sequential_cpu_offload(device=pl.base_device())
        else:
            for name in ("text_encoder", "transformer", "vae"):
                # A device-only `.to()` also moves bitsandbytes (>= 0.48) and GGUF weights.
                if name in new:
                    getattr(pipe, name).to(pl.device_for(name))
        if "transformer" in new and pl.compile:
            # Regional compilation: the repeated blocks compile once and are reused.
            pipe.transformer.compile_repeated_blocks(fullgraph=False)

    def _load_kwargs(self, want: set) -> dict[str, Any]:
        """Extra from_pretrained arguments: a single-file transformer, quantization."""
        kwargs: dict[str, Any] = {}
        pl = self.placement
        if "transformer" in want and "transformer" not in self._loaded and pl.transformer_file:
            kwargs["transformer"] = load_transformer_file(pl.transformer_file, self.folder, pl.torch_dtype())
        if pl.quantize != "none":
            from diffusers.quantizers import PipelineQuantizationConfig

            backend = {"8bit": "bitsandbytes_8bit", "4bit": "bitsandbytes_4bit"}[pl.quantize]
            quant_kwargs = ({"load_in_8bit": True} if pl.quantize == "8bit" else
                            {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                             "bnb_4bit_compute_dtype": pl.torch_dtype()})
            targets = [c for c in ("transformer", "text_encoder")
                       if c in want and c not in self._loaded and c not in kwargs]
            if targets:
                kwargs["quantization_config"] = PipelineQuantizationConfig(
                    quant_backend=backend, quant_kwargs=quant_kwargs, components_to_quantize=targets)
        return kwargs


MIN_TILE_PX = 256


def enable_vae_tiling(vae) -> None:
    """diffusers' own VAE tiling, with tiles of at least MIN_TILE_PX pixels.

    Each tile's attention and group norms see only that tile, so tiles much smaller than the image
    content show seams (measured on the demo VAE: 32 px tiles 22 dB, 256 px 40 dB PSNR against an
    untiled decode). The Z-Image VAE's own tile is 1024 px and is kept."""
    vae.enable_tiling()
    if getattr(vae, "tile_sample_min_size", MIN_TILE_PX) < MIN_TILE_PX:
        factor = 2 ** (len(vae.config.block_out_channels) - 1)
        vae.tile_sample_min_size, vae.tile_latent_min_size = MIN_TILE_PX, MIN_TILE_PX // factor


def attention_backend_problem(name: str, device: str) -> str | None:
    """Why attention backend `name` cannot run on `device`, or None when it can."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _check_attention_backend_requirements

    if name in _CUDA_ONLY_BACKENDS and not str(device).startswith("cuda"):
        return f"needs a CUDA device (the transformer runs on {device})"
    try:
        _check_attention_backend_requirements(AttentionBackendName(ATTENTION_BACKENDS[name]))
    except RuntimeError:
        package = {"flash": "flash-attn", "flash_3": "flash-attn 3", "sage": "sageattention",
                   "xformers": "xformers"}.get(name, name)
        return f"{package} is not installed (or too old)"
    return None


def set_attention_backend(transformer, name: str) -> None:
    if name != "auto":
        transformer.set_attention_backend(ATTENTION_BACKENDS[name])


def check_compile(device: str) -> None:
    """torch.compile's CPU backend builds C++ kernels; say so up front when no compiler is found."""
    import shutil

    if str(device).startswith("cpu") and not shutil.which(os.environ.get("CXX", "g++")):
        raise UsageError("--compile on CPU needs a C++ compiler (g++ or $CXX) for torch.compile's kernels; "
                         "none was found on PATH")


def check_transformer_file(path: str) -> None:
    import importlib.util

    p = Path(path)
    if not p.is_file():
        raise InputError(f"--transformer-file {path}: no such file")
    if p.suffix not in (".gguf", ".safetensors"):
        raise InputError(f"--transformer-file {path}: expected a .gguf or .safetensors file")
    if p.suffix == ".gguf" and importlib.util.find_spec("gguf") is None:
        raise UsageError(f"--transformer-file {path}: GGUF files need the gguf package (pip install 'llmdit[gguf]')")


def load_transformer_file(path: str, folder: Path, dtype):
    """A single-file transformer (original or diffusers keys; GGUF through diffusers' GGUF support),
    configured by the model folder's transformer/config.json."""
    from diffusers import GGUFQuantizationConfig, ZImageTransformer2DModel

    check_transformer_file(path)
    extra = {"quantization_config": GGUFQuantizationConfig(compute_dtype=dtype)} if path.endswith(".gguf") else {}
    try:
        return ZImageTransformer2DModel.from_single_file(path, config=str(folder), subfolder="transformer",
                                                         torch_dtype=dtype, local_files_only=True, **extra)
    except Exception as exc:
        raise ModelError(f"--transformer-file {path}: cannot load as this model's transformer "
                         f"({_first_line(exc)})") from None


def quiet_libraries() -> None:
    """Library progress bars and info logs would interleave with ours on stderr."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for lib in (dlog, tlog):
        lib.disable_progress_bar()
        # Failures reach the user as our own one-line errors, so even ERROR logs are noise.
        lib.set_verbosity(lib.CRITICAL)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def check_lora_files(specs: list[str]) -> None:
    """Fail early, before any model loads, on a LoRA file that is missing or not safetensors."""
    from llmdit_cli.artifacts import parse_header, read_bytes

    for spec in specs:
        path, _ = parse_lora(spec)
        if not Path(path).is_file():
            raise InputError(f"--lora {path}: no such file")
        try:
            parse_header(read_bytes(path, "a LoRA file")[0], path)
        except InputError:
            raise InputError(f"--lora {path}: cannot load (not a safetensors file)") from None


def apply_loras(pipe, specs: list[str]) -> None:
    """Load each `PATH[:SCALE]` LoRA into the pipeline and activate them with their scales.

    Files are read by `llmdit_cli.lora` (every key style, alpha from tensors or adapter metadata,
    fused qkv split) and handed to diffusers with their strength folded in; layouts it does not
    convert (LoKr, ...) go to diffusers' own loader as they are."""
    from llmdit_cli.lora import UnsupportedLora, read_lora

    check_lora_files(specs)
    names, scales = [], []
    for i, spec in enumerate(specs):
        path, scale = parse_lora(spec)
        name = f"lora_{i}"
        before = _lora_param_count(pipe.transformer)
        try:
            source = read_lora(path).diffusers_state()
        except UnsupportedLora:
            source = path
        try:
            pipe.load_lora_weights(source, adapter_name=name)
        except Exception as exc:
            if "not found in the base model" in str(exc):
                raise InputError(f"--lora {path}: no key matches a module of this model's transformer") from None
            raise InputError(f"--lora {path}: cannot load ({_first_line(exc)})") from None
        if _lora_param_count(pipe.transformer) == before:
            raise InputError(f"--lora {path}: no key matches a module of this model's transformer")
        names.append(name)
        scales.append(scale)
    pipe.set_adapters(names, adapter_weights=scales)


def _lora_param_count(module) -> int:
    return sum(1 for n, _ in module.named_parameters() if "lora_" in n)


def check_size(value: int, label: str, multiple: int = 16) -> None:
    if value < multiple or value % multiple:
        raise UsageError(f"{label} {value}: must be a positive multiple of {multiple}")
