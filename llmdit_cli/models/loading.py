"""A model handle: a resolved reference whose components load on first use and are then kept.

`encode` never loads the transformer, `generate --from-embeds` never loads the text encoder.
The pipeline class and the transformer class come from the folder's model family.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, ModelError, UsageError, setting
from llmdit_cli.models.lora_stack import apply_loras, check_lora_files, parse_lora_spec
from llmdit_cli.models.optimise import (
    bnb4_unsafe_linears,
    enable_vae_tiling,
    quantization_config,
    set_attention_backend,
)
from llmdit_cli.models.placement import Placement
from llmdit_cli.models.refs import MODEL, config_hash, first_line, read_json, resolve_folder, weights_fingerprint

COMPONENTS = ("tokenizer", "text_encoder", "transformer", "vae", "scheduler")
TRANSFORMER_FILE = setting("optimization.transformer_file")


@dataclass
class ModelHandle:
    """A resolved model whose components load on first use and are then kept."""

    ref: str
    placement: Placement = field(default_factory=Placement)
    loras: list[str] = field(default_factory=list)
    key: str = "model"  # the setting that named the model (`layered.model`), for messages
    _pipe: Any = None
    _loaded: set = field(default_factory=set)
    _keys: dict = field(default_factory=dict)
    _limits: Any = None
    _extras: dict = field(default_factory=dict)
    auto_attention: str | None = None  # on a GPU, what `attention_backend auto` chose and why
    float8_layers: dict = field(default_factory=dict)  # `--quantize fp8`: layers converted per component

    def __post_init__(self):
        from llmdit_cli.families import identify

        self.placement.validate()
        check_lora_files(self.loras)
        with self.naming_its_setting():
            self.folder, self.revision = resolve_folder(self.ref)
            self.family, self.variant = identify(self.folder, self.ref)

    @contextmanager
    def naming_its_setting(self):
        """Model errors name the setting that gave the model (`--layered-model`), not `--model`."""
        try:
            yield
        except ModelError as exc:
            if self.key == "model":
                raise
            raise ModelError(str(exc.args[0]).replace(MODEL, setting(self.key), 1)) from None

    @property
    def code(self):
        """The family's runner (`families.protocol`): its classes and stage functions."""
        return self.family.code()

    def limits(self):
        """What the folder can take (`families.protocol.Limits`), read once from its configs."""
        if self._limits is None:
            with self.naming_its_setting():
                self._limits = self.code.limits(self)
        return self._limits

    def defaults(self) -> dict[str, Any]:
        return self.family.defaults(self.variant)

    def identity(self, component: str) -> dict[str, Any]:
        """What a stage file records of the component that made it; read once per handle (it
        hashes a MiB of weights, and a server asks per request)."""
        key = f"identity/{component}"
        if key not in self._keys:
            self._keys[key] = {
                "model": self.ref,
                "revision": self.revision,
                f"{component}_config": config_hash(self.folder, component),
                f"{component}_weights": weights_fingerprint(self.folder, component),
            }
        return dict(self._keys[key])

    def weights_key(self, component: str) -> str:
        """A stricter identity of a component's weights and tokenizer for caches: every weights
        file's name and size, the head of the first, and the tokenizer files' contents. Computed
        once per handle (the tokenizer files of a real model are megabytes)."""
        if component not in self._keys:
            self._keys[component] = _weights_key(self.folder, component)
        return self._keys[component]

    def loaded(self, component: str) -> bool:
        return component in self._loaded

    def tokenizer(self):
        """The text tokenizer: the pipeline's when loaded, else read alone from the folder (no
        model weights load just to count tokens)."""
        if "tokenizer" in self._loaded:
            return self._pipe.tokenizer

        def load():
            from transformers import AutoTokenizer

            with self.naming_its_setting():
                try:
                    return AutoTokenizer.from_pretrained(self.folder / "tokenizer", local_files_only=True)
                except (OSError, ValueError) as exc:
                    raise ModelError(f"{MODEL} {self.ref}: cannot read its tokenizer ({first_line(exc)})") from None

        return self.extra(("tokenizer",), load)

    def rewriter(self):
        """The folder's own chat model for `rewrite` and chat (`rewriter/`: a causal LM with its
        tokenizer), as (model, tokenizer), loaded once; None when the folder has none (the text
        encoder then rewrites). The demo ships one: its text encoder is too small to do both."""
        folder = self.folder / "rewriter"
        if not (folder / "config.json").is_file():
            return None

        def load():
            from transformers import AutoModelForCausalLM, AutoTokenizer

            quiet_libraries()
            with self.naming_its_setting():
                try:
                    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                    lm = AutoModelForCausalLM.from_pretrained(
                        folder, dtype=self.placement.torch_dtype(), local_files_only=True
                    )
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
                    raise ModelError(f"{MODEL} {self.ref}: cannot load its rewriter ({first_line(exc)})") from None
            return lm.to(self.placement.device_for("text_encoder")).eval(), tokenizer

        return self.extra(("rewriter",), load)

    def extra(self, key: tuple, load):
        """A model that works beside the pipeline (a ControlNet), loaded once by `load()` and kept."""
        if key not in self._extras:
            self._extras[key] = load()
        return self._extras[key]

    def component_config(self, component: str) -> dict[str, Any]:
        name = "scheduler_config.json" if component == "scheduler" else "config.json"
        return read_json(self.folder / component / name, self.ref, f"{component} config")

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

    def pipeline(self, *needed: str):
        """The family's pipeline with at least `needed` components loaded."""
        missing = [c for c in needed if c not in self._loaded]
        if self._pipe is not None and not missing:
            return self._pipe
        want = self._loaded | set(needed) | {"scheduler"}
        self._pipe = self._load(want)
        self._loaded = want
        return self._pipe

    def _load(self, want: set):
        with self.naming_its_setting():
            return self._load_pipeline(want)

    def _load_pipeline(self, want: set):
        quiet_libraries()
        self.code.check_loadable(self.folder, self.ref)
        pipeline_class = self.code.pipeline_class()
        kept = {c: getattr(self._pipe, c) for c in self._loaded if c in want} if self._pipe is not None else {}
        skip = {c: None for c in COMPONENTS if c not in want}
        try:
            pipe = pipeline_class.from_pretrained(
                self.folder,
                dtype=self.placement.torch_dtype(),
                local_files_only=True,
                **skip,
                **kept,
                **self._load_kwargs(want),
            )
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelError(
                f"{MODEL} {self.ref}: cannot load as a {self.family.name} pipeline ({first_line(exc)})"
            ) from None
        pipe.set_progress_bar_config(disable=True)
        if "transformer" in want and "transformer" not in self._loaded and self.loras:
            apply_loras(pipe, self.loras, self.family.lora_code())
        self._place(pipe, want - self._loaded)
        return pipe

    def _place(self, pipe, new: set) -> None:
        pl = self.placement
        if pl.quantize == "fp8":
            for name in ("text_encoder", "transformer"):
                if name in new:
                    self._to_float8(name, getattr(pipe, name))
        if "vae" in new and pl.vae_tiling:
            enable_vae_tiling(pipe.vae, self.limits().vae_scale_factor, pl.vae_tile_size, pl.vae_tile_overlap)
        if "transformer" in new:
            self.auto_attention = set_attention_backend(
                pipe.transformer, pl.attention_backend, pl.device_for("transformer"), pl.torch_dtype(), pl.compile
            )
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

    def _to_float8(self, name: str, model) -> None:
        """`--quantize fp8`: the blocks' Linear layers to float8 (`models.float8`), before offload
        hooks wrap them; straight on the GPU when that is the component's home, so its
        full-precision weights never sit there whole."""
        from llmdit_cli.models.float8 import dora_adapters, quantize_float8

        dora = sorted(dora_adapters(model))
        if dora:
            # apply_loras names adapters lora_<index into self.loras>
            spec = self.loras[int(dora[0].rsplit("_", 1)[-1])] if dora[0].startswith("lora_") else dora[0]
            path = parse_lora_spec(spec)[0]
            raise UsageError(
                f"{setting('optimization.quantize')} fp8: {setting('lora.loras')} {path} is a DoRA, which "
                f"reads the transformer's weights as numbers; use it without fp8"
            )
        pl = self.placement
        self.float8_layers[name] = quantize_float8(model, "cpu" if pl.cpu_offload != "none" else pl.device_for(name))

    def _load_kwargs(self, want: set) -> dict[str, Any]:
        """Extra from_pretrained arguments: a single-file transformer, quantization."""
        kwargs: dict[str, Any] = {}
        pl = self.placement
        if "transformer" in want and "transformer" not in self._loaded and pl.transformer_file:
            kwargs["transformer"] = load_transformer_file(
                self.code.transformer_class(), pl.transformer_file, self.folder, pl.torch_dtype()
            )
        targets = [
            c for c in ("transformer", "text_encoder") if c in want and c not in self._loaded and c not in kwargs
        ]
        skip = (
            bnb4_unsafe_linears(self.code.transformer_class(), self.component_config("transformer"))
            if pl.quantize == "4bit" and "transformer" in targets
            else []
        )
        return {**kwargs, **quantization_config(pl.quantize, pl.torch_dtype(), targets, skip)}


def _weights_key(folder: Path, component: str) -> str:
    import hashlib

    h = hashlib.sha256(weights_fingerprint(folder, component).encode())
    for f in sorted((folder / component).glob("*")):
        if f.suffix in (".safetensors", ".bin", ".gguf"):
            h.update(f"{f.name}:{f.stat().st_size}".encode())
    tokenizer = folder / "tokenizer"
    for f in sorted(tokenizer.glob("*")) if tokenizer.is_dir() else []:
        if f.is_file():
            h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def check_transformer_file(path: str) -> None:
    import importlib.util

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{TRANSFORMER_FILE} {path}: no such file")
    if p.suffix not in (".gguf", ".safetensors"):
        raise InputError(f"{TRANSFORMER_FILE} {path}: expected a .gguf or .safetensors file")
    if p.suffix == ".gguf" and importlib.util.find_spec("gguf") is None:
        raise UsageError(f"{TRANSFORMER_FILE} {path}: GGUF files need the gguf package (pip install 'llmdit[gguf]')")


def load_transformer_file(transformer_class, path: str, folder: Path, dtype):
    """A single-file transformer (original or diffusers keys; GGUF through diffusers' GGUF support),
    configured by the model folder's transformer/config.json."""
    from diffusers import GGUFQuantizationConfig

    check_transformer_file(path)
    extra = {"quantization_config": GGUFQuantizationConfig(compute_dtype=dtype)} if path.endswith(".gguf") else {}
    source = path if path.endswith(".gguf") else _scaled_float8(path, dtype) or path
    try:
        return transformer_class.from_single_file(
            source, config=str(folder), subfolder="transformer", torch_dtype=dtype, local_files_only=True, **extra
        )
    except Exception as exc:
        raise ModelError(
            f"{TRANSFORMER_FILE} {path}: cannot load as this model's transformer ({first_line(exc)})"
        ) from None


def _scaled_float8(path: str, dtype) -> dict | None:
    """A float8 file with per-layer scales (ComfyUI's scaled fp8), dequantized; None otherwise.
    Read as it is, its weights would load without their scales: a wrong model, silently."""
    from llmdit_cli.models.float8 import CheckpointError, scaled_checkpoint

    try:
        return scaled_checkpoint(path, dtype)
    except CheckpointError as exc:
        raise InputError(f"{TRANSFORMER_FILE} {path}: {exc}") from None


def quiet_libraries() -> None:
    """Library progress bars and info logs would interleave with ours on stderr."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    # bitsandbytes' 8-bit matmul logs a warning on every call of every layer for bf16 inputs.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    for lib in (dlog, tlog):
        lib.disable_progress_bar()
        # Failures reach the user as our own one-line errors, so even ERROR logs are noise.
        lib.set_verbosity(lib.CRITICAL)
