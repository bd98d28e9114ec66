"""The LoRA stack of a model: `PATH[:SCALE]` specs checked before loading, then applied."""

from __future__ import annotations

import math
from pathlib import Path

from llmdit_cli.errors import InputError, UsageError, setting
from llmdit_cli.models.refs import first_line

LORA = setting("lora.loras")


def parse_lora_spec(spec: str) -> tuple[str, float]:
    """`PATH[:SCALE]` -> (path, scale)."""
    path, sep, scale = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0


def check_lora_files(specs: list[str]) -> None:
    """Fail early, before any model loads, on a LoRA file that is missing or not safetensors."""
    from llmdit_cli.artifacts import parse_header, read_bytes

    for spec in specs:
        path, scale = parse_lora_spec(spec)
        if not math.isfinite(scale):
            raise UsageError(f"{LORA} {spec}: the scale must be a finite number")
        if Path(path).is_dir():
            raise InputError(f"{LORA} {path}: is a folder; give the LoRA's .safetensors file")
        if not Path(path).is_file():
            head, sep, tail = spec.rpartition(":")
            if sep and Path(head).is_file():
                raise UsageError(f"{LORA} {spec}: the scale {tail!r} is not a number")
            raise InputError(f"{LORA} {path}: no such file")
        try:
            parse_header(read_bytes(path, "a LoRA file")[0], path)
        except InputError:
            raise InputError(f"{LORA} {path}: cannot load (not a safetensors file)") from None


def apply_loras(pipe, specs: list[str], keys) -> None:
    """Load each `PATH[:SCALE]` LoRA into the pipeline and activate them with their scales.

    Files are read by the model family's LoRA reader (`keys`, `families.protocol.LoraKeys`: every
    key style, alpha from tensors or adapter metadata, fused qkv split) and handed to diffusers
    with their strength folded in; layouts it does not convert (LoKr, ...) go to diffusers' own
    loader as they are."""
    from llmdit_cli.errors import UnsupportedLora

    check_lora_files(specs)
    names, scales = [], []
    for i, spec in enumerate(specs):
        path, scale = parse_lora_spec(spec)
        name = f"lora_{i}"
        before = _lora_param_count(pipe.transformer)
        try:
            source = keys.read_lora(path).diffusers_state()
        except UnsupportedLora:
            source = path
        try:
            pipe.load_lora_weights(source, adapter_name=name)
        except Exception as exc:
            if "not found in the base model" in str(exc):
                raise InputError(f"{LORA} {path}: no key matches a module of this model's transformer") from None
            raise InputError(f"{LORA} {path}: cannot load ({first_line(exc)})") from None
        if _lora_param_count(pipe.transformer) == before:
            raise InputError(f"{LORA} {path}: no key matches a module of this model's transformer")
        names.append(name)
        scales.append(scale)
    pipe.set_adapters(names, adapter_weights=scales)


def _lora_param_count(module) -> int:
    return sum(1 for n, _ in module.named_parameters() if "lora_" in n)
