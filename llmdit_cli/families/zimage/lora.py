"""LoRA files: read the common Z-Image LoRA layouts into one form, write the layout a consumer
needs, and tell which strength each loader applies to a file.

A LoRA adds `scale · up @ down` to a Linear weight (`down` = lora_A, `up` = lora_B), with
`scale = alpha / rank` (rsLoRA: `alpha / sqrt(rank)`). The loaders keep alpha in different places:

| loader          | reads alpha from                                         | without it   |
| --------------- | -------------------------------------------------------- | ------------ |
| diffusers 0.42  | `lora_adapter_metadata` (safetensors metadata); `.alpha` | alpha = rank |
|                 | tensors only in non-diffusers key styles                 |              |
| ComfyUI         | `<key>.alpha` tensors only                               | scale 1      |

So a file that states its alpha in one place only is applied at another strength by the other
loader. The portable form folds `scale` into `up` and states alpha = rank wherever alpha is
stated: every loader then applies exactly the intended strength. `llmdit train` writes that form.

Module names here are those of diffusers' `ZImageTransformer2DModel` (`layers.0.attention.to_q`).
The original checkpoint's names (fused `attention.qkv`, `attention.out`, `x_embedder`,
`final_layer`), which ComfyUI and Kohya-style trainers use, are mapped onto them exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError, UnsupportedLora, UsageError

FORMATS = ("diffusers", "comfyui", "kohya")
LLMDIT_KEY = "llmdit.lora"  # our own metadata: JSON with the trained rank/alpha and what was folded
DIFFUSERS_KEY = "lora_adapter_metadata"
PEFT_WEIGHTS, PEFT_CONFIG = "adapter_model.safetensors", "adapter_config.json"

# (suffix, role), longest first so `.lora_A.default.weight` is not taken for `.weight`.
_SUFFIXES = [
    (".lora_A.default.weight", "down"),
    (".lora_B.default.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".alpha", "alpha"),
]
_PREFIXES = ("base_model.model.", "transformer.", "model.diffusion_model.", "diffusion_model.")
_UNDERSCORED_PREFIXES = ("lora_unet_", "lycoris_")
_UNSUPPORTED = [
    (re.compile(r"\.lokr_"), "LoKr"),
    (re.compile(r"\.hada_"), "LoHa"),
    (re.compile(r"dora_scale"), "DoRA"),
    (re.compile(r"lora_magnitude_vector"), "DoRA"),
    (re.compile(r"\.diff(_b)?$"), "full-weight difference"),
    (re.compile(r"\.oft_"), "OFT"),
]

# Underscored (Kohya / LyCORIS) names -> dotted ones, for every Linear of the Z-Image transformer in
# both naming schemes. Underscores inside module names make a plain `_` -> `.` swap ambiguous.
_BLOCK_PARTS = {
    "attention_to_q": "attention.to_q",
    "attention_to_k": "attention.to_k",
    "attention_to_v": "attention.to_v",
    "attention_to_out_0": "attention.to_out.0",
    "attention_qkv": "attention.qkv",
    "attention_out": "attention.out",
    "feed_forward_w1": "feed_forward.w1",
    "feed_forward_w2": "feed_forward.w2",
    "feed_forward_w3": "feed_forward.w3",
    "adaLN_modulation_0": "adaLN_modulation.0",
}
_TOP_LEVEL = {
    "all_x_embedder_2-1": "all_x_embedder.2-1",
    "x_embedder": "x_embedder",
    "all_final_layer_2-1_linear": "all_final_layer.2-1.linear",
    "all_final_layer_2-1_adaLN_modulation_1": "all_final_layer.2-1.adaLN_modulation.1",
    "final_layer_linear": "final_layer.linear",
    "final_layer_adaLN_modulation_1": "final_layer.adaLN_modulation.1",
    "t_embedder_mlp_0": "t_embedder.mlp.0",
    "t_embedder_mlp_2": "t_embedder.mlp.2",
    "cap_embedder_1": "cap_embedder.1",
}
_BLOCK = re.compile(r"^(layers|noise_refiner|context_refiner)_(\d+)_(.+)$")
# original checkpoint name -> diffusers name (the fused qkv is split separately)
_NATIVE = [
    (r"^x_embedder$", "all_x_embedder.2-1"),
    (r"^final_layer\.", "all_final_layer.2-1."),
    (r"\.attention\.out$", ".attention.to_out.0"),
    (r"\.attention\.to\.([qkv])$", r".attention.to_\1"),
]
_QKV = ("to_q", "to_k", "to_v")


@dataclass
class Pair:
    """One module's LoRA: the weight change is `scale * up @ down`."""

    down: Any  # [rank, in]
    up: Any  # [out, rank]
    scale: float = 1.0

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])

    def delta(self):
        return self.scale * (self.up.float() @ self.down.float())

    def folded_up(self):
        return (self.up.float() * self.scale).to(self.up.dtype)


@dataclass
class Lora:
    """A transformer LoRA in diffusers module names, with the strength it is meant to have."""

    pairs: dict[str, Pair]
    layout: str = "diffusers"
    info: dict[str, Any] = field(default_factory=dict)  # what the file records (llmdit metadata, alpha source)

    def ranks(self) -> list[int]:
        return sorted({p.rank for p in self.pairs.values()})

    def scales(self) -> list[float]:
        return sorted({round(p.scale, 6) for p in self.pairs.values()})

    def diffusers_state(self) -> dict:
        """`transformer.` keys with the scale folded into lora_B: loads at scale 1 anywhere."""
        state = {}
        for name, p in self.pairs.items():
            state[f"transformer.{name}.lora_A.weight"] = p.down.contiguous()
            state[f"transformer.{name}.lora_B.weight"] = p.folded_up().contiguous()
        return state


# -- reading -----------------------------------------------------------------------------------------


def load_tensors(path: str | Path) -> tuple[dict, dict[str, str], dict | None, str]:
    """Tensors, safetensors metadata, a PEFT adapter config (or None), and a layout hint."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    config = None
    hint = ""
    if p.is_dir():
        if not (p / PEFT_WEIGHTS).is_file():
            raise InputError(f"{path}: a folder without {PEFT_WEIGHTS} (not a PEFT adapter folder)")
        config = _read_peft_config(p / PEFT_CONFIG)
        p, hint = p / PEFT_WEIGHTS, "peft"
    elif not p.is_file():
        raise InputError(f"{path}: no such file")
    elif p.name == PEFT_WEIGHTS and (p.parent / PEFT_CONFIG).is_file():
        config, hint = _read_peft_config(p.parent / PEFT_CONFIG), "peft"
    try:
        tensors = load_file(str(p))
        from safetensors import safe_open

        with safe_open(str(p), "pt") as fh:
            meta = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: not a safetensors LoRA file ({detail})") from None
    return tensors, meta, config, hint


def _read_peft_config(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object (a PEFT adapter config)")
    return data


def read_lora(path: str | Path) -> Lora:
    """Any supported layout -> Lora. Raises InputError naming the file and what is wrong."""
    tensors, meta, peft_config, hint = load_tensors(path)
    return lora_from_tensors(tensors, meta, peft_config, str(path), hint)


def lora_from_tensors(tensors: dict, meta: dict[str, str], peft_config: dict | None, name: str, hint: str = "") -> Lora:
    groups = _group_keys(tensors, name)
    if not groups:
        raise InputError(f"{name}: holds no LoRA weights (no lora_A/lora_B or lora_down/lora_up keys)")
    alpha_config = peft_config or _diffusers_metadata(meta, name)
    pairs: dict[str, Pair] = {}
    # A fused qkv beside split q/k/v keys of the same block is a redundant copy (some trainers
    # write both); the split keys win, as in diffusers. So fused groups are read last.
    for raw, parts in sorted(groups.items(), key=lambda item: _is_fused(item[0])):
        if "down" not in parts or "up" not in parts:
            raise InputError(
                f"{name}: {raw} has {' and '.join(sorted(parts))} but no "
                f"{'lora_B/lora_up' if 'down' in parts else 'lora_A/lora_down'}"
            )
        down, up = parts["down"], parts["up"]
        if down.ndim != 2 or up.ndim != 2 or up.shape[1] != down.shape[0]:
            raise InputError(
                f"{name}: {raw}: shapes {list(down.shape)} and {list(up.shape)} do not form a LoRA "
                f"(expected [rank, in] and [out, rank])"
            )
        module = _diffusers_name(raw, name)
        scale = _scale(module, down.shape[0], parts.get("alpha"), alpha_config)
        for target, pair in _split_fused(module, Pair(down, up, scale)):
            if target in pairs:
                if _is_fused(raw):
                    continue
                raise InputError(f"{name}: two LoRAs for module {target} (one of them is {raw})")
            pairs[target] = pair
    layout = hint or _layout_of(list(tensors))
    return Lora(pairs, layout, _recorded(meta, alpha_config, any("alpha" in g for g in groups.values())))


def _group_keys(tensors: dict, name: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        for marker, what in _UNSUPPORTED:
            if marker.search(key):
                raise UnsupportedLora(f"{name}: holds {what} weights ({key}); only plain LoRA files are supported")
        if key.startswith(("lora_te", "text_encoder.", "te.")):
            raise UnsupportedLora(f"{name}: holds text-encoder weights ({key}); llmdit applies transformer LoRAs only")
        for suffix, role in _SUFFIXES:
            if key.endswith(suffix):
                groups.setdefault(key[: -len(suffix)], {})[role] = value
                break
        else:
            raise UnsupportedLora(
                f"{name}: key {key} is not a LoRA weight (expected lora_A/lora_B, lora_down/lora_up or alpha)"
            )
    return {k: v for k, v in groups.items() if set(v) != {"alpha"} or _raise_lonely_alpha(name, k)}


def _raise_lonely_alpha(name: str, key: str) -> bool:
    raise InputError(f"{name}: {key}.alpha has no LoRA weights beside it")


def _is_fused(raw: str) -> bool:
    return bool(re.search(r"[._]qkv$", raw))


def _diffusers_name(raw: str, file: str) -> str:
    name = raw
    for prefix in _PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    for prefix in _UNDERSCORED_PREFIXES:
        if name.startswith(prefix):
            name = _undot(name[len(prefix) :], raw, file)
            break
    for pattern, repl in _NATIVE:
        name = re.sub(pattern, repl, name)
    return name


def _undot(underscored: str, raw: str, file: str) -> str:
    if underscored in _TOP_LEVEL:
        return _TOP_LEVEL[underscored]
    m = _BLOCK.match(underscored)
    if m and m.group(3) in _BLOCK_PARTS:
        return f"{m.group(1)}.{m.group(2)}.{_BLOCK_PARTS[m.group(3)]}"
    raise UnsupportedLora(f"{file}: {raw} names no module of the Z-Image transformer")


def _split_fused(module: str, pair: Pair) -> list[tuple[str, Pair]]:
    """A fused `attention.qkv` LoRA is three LoRAs sharing `down`, one row block of `up` each (exact)."""
    if not module.endswith(".attention.qkv"):
        return [(module, pair)]
    if pair.up.shape[0] % 3:
        raise InputError(f"{module}: a fused qkv LoRA needs an output size divisible by 3, got {pair.up.shape[0]}")
    stem = module[: -len("qkv")]
    return [
        (stem + proj, Pair(pair.down.clone(), chunk.contiguous(), pair.scale))
        for proj, chunk in zip(_QKV, pair.up.chunk(3, dim=0))
    ]


def _diffusers_metadata(meta: dict[str, str], name: str) -> dict | None:
    raw = meta.get(DIFFUSERS_KEY)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise InputError(f"{name}: its {DIFFUSERS_KEY} metadata is not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError(f"{name}: its {DIFFUSERS_KEY} metadata is not a JSON object")
    if any(k.startswith("transformer.") for k in data):
        data = {k.removeprefix("transformer."): v for k, v in data.items() if k.startswith("transformer.")}
    return data


def _scale(module: str, rank: int, alpha_tensor, config: dict | None) -> float:
    """The strength the file's author meant: an alpha tensor first, then the adapter config."""
    if alpha_tensor is not None:
        if alpha_tensor.numel() != 1:
            raise InputError(f"{module}: its alpha holds {alpha_tensor.numel()} values, not one")
        return float(alpha_tensor) / rank
    if not config:
        return 1.0
    alpha = _pattern_value(module, config.get("alpha_pattern") or {}, config.get("lora_alpha", rank))
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"LoRA alpha {alpha!r} for {module} is not a number") from None
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


def _pattern_value(module: str, patterns: dict, default):
    """PEFT's rule: a pattern key matches a module whose name ends with it (as a regex)."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _layout_of(keys: list[str]) -> str:
    if any(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    if any(k.startswith("lycoris_") for k in keys):
        return "lycoris"
    if any(k.startswith(("diffusion_model.", "model.diffusion_model.")) for k in keys):
        return "comfyui"
    if any(k.startswith("base_model.model.") for k in keys):
        return "peft"
    if all(k.startswith("transformer.") for k in keys):
        return "diffusers"
    return "bare"


def _recorded(meta: dict[str, str], config: dict | None, alpha_tensors: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "alpha_source": "alpha tensors" if alpha_tensors else "adapter metadata" if config else "none (scale 1)"
    }
    raw = meta.get(LLMDIT_KEY)
    if raw:
        try:
            recorded = json.loads(raw)
        except json.JSONDecodeError:
            recorded = None
        if isinstance(recorded, dict):
            info["llmdit"] = recorded
    return info


# -- what each loader does with a file ----------------------------------------------------------------


def loader_scales(tensors: dict, meta: dict[str, str], peft_config: dict | None, lora: Lora) -> dict[str, dict]:
    """Per loader: the scale it applies to each module relative to the strength the file means
    (1.0 = exactly as intended), or why it does not load the file."""
    keys = list(tensors)
    return {
        "llmdit": {"ratio": [1.0], "loads": True, "note": "llmdit generate --lora"},
        "diffusers": _diffusers_view(keys, meta, peft_config, tensors, lora),
        "comfyui": _comfy_view(keys, tensors, lora),
    }


def _diffusers_view(keys, meta, peft_config, tensors, lora: Lora) -> dict:
    if peft_config is not None or any(k.startswith("base_model.model.") for k in keys):
        return {"loads": False, "note": "a PEFT adapter: load_lora_weights does not read it; convert --to diffusers"}
    converted = (
        any(k.endswith(".alpha") for k in keys)
        or any(k.startswith(("lora_unet_", "diffusion_model.")) for k in keys)
        or any("default." in k for k in keys)
    )
    if converted and any(k.startswith("transformer.") for k in keys):
        return {"loads": False, "note": "alpha tensors beside transformer.* keys: NoMatchingPeftModuleError"}
    if any(k.startswith("lycoris_") for k in keys):
        return {"loads": False, "note": "lycoris_ key names are not read by diffusers"}
    if converted and any(re.search(r"[._]qkv\.lora_(down|A)\.weight$", k) for k in keys):
        return {"loads": False, "note": "fused qkv in lora_down/lora_A naming is not split by diffusers"}
    if not converted and not any(k.startswith("transformer.") for k in keys):
        return {"loads": False, "note": "no transformer.* keys: nothing would load"}
    config = None if converted else _diffusers_metadata(meta, "")
    ratios = []
    for raw, module, rank in _modules_with_rank(tensors):
        alpha = tensors.get(raw + ".alpha")
        ratios.append(_ratio(_scale(module, rank, alpha if converted else None, config), lora.pairs[module].scale))
    dropped = [k for k in keys if re.match(r"lora_unet_(x_embedder|final_layer)_?", k)]
    note = (
        f"load_lora_weights; it drops {len(dropped)} key(s) it cannot name, e.g. {dropped[0]}"
        if dropped
        else "load_lora_weights"
    )
    return {"loads": True, "ratio": _spread(ratios), "note": note}


def _ratio(applied: float, meant: float) -> float:
    if meant == 0:
        return 1.0 if applied == 0 else float("inf")
    return applied / meant


def _comfy_view(keys, tensors, lora: Lora) -> dict:
    ratios, ignored = [], []
    for raw, module, rank in _modules_with_rank(tensors):
        if raw.startswith("base_model.model.") or (
            raw.startswith("lora_unet_") and re.search(r"attention_(to_[qkv]|to_out_0)$|all_", raw)
        ):
            ignored.append(raw)
            continue
        alpha = tensors.get(raw + ".alpha")
        ratios.append(_ratio(float(alpha) / rank if alpha is not None else 1.0, lora.pairs[module].scale))
    if not ratios:
        return {"loads": False, "note": f"no key name ComfyUI maps (e.g. {ignored[0]})" if ignored else "nothing"}
    note = f"{len(ignored)} module(s) not mapped, e.g. {ignored[0]}" if ignored else "LoraLoaderModelOnly"
    return {"loads": True, "ratio": _spread(ratios), "note": note}


def _modules_with_rank(tensors: dict):
    """(raw key stem, diffusers module, rank) per LoRA pair; a fused qkv stands for its three parts."""
    for key, value in tensors.items():
        for suffix in (".lora_A.weight", ".lora_down.weight", ".lora.down.weight", ".lora_A.default.weight"):
            if key.endswith(suffix):
                raw = key[: -len(suffix)]
                module = _diffusers_name(raw, "")
                targets = [module[: -len("qkv")] + p for p in _QKV] if module.endswith(".attention.qkv") else [module]
                for target in targets:
                    yield raw, target, int(value.shape[0])


def _spread(values: list[float]) -> list[float]:
    rounded = sorted({round(v, 6) for v in values})
    return [rounded[0], rounded[-1]] if len(rounded) > 1 else rounded


# -- writing ------------------------------------------------------------------------------------------


def lora_bytes(lora: Lora, to: str, record: dict[str, Any] | None = None) -> bytes:
    """The safetensors bytes of `lora` in layout `to`; `record` goes into the llmdit metadata."""
    from safetensors.torch import save

    check_format(to)
    tensors = {"diffusers": Lora.diffusers_state, "comfyui": _comfy_tensors, "kohya": _kohya_tensors}[to](lora)
    meta = {"format": "pt", LLMDIT_KEY: json.dumps({"layout": to, **(record or {})}, sort_keys=True)}
    if to == "diffusers":
        meta[DIFFUSERS_KEY] = json.dumps(_adapter_metadata(lora), sort_keys=True)
    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)


def check_format(to: str) -> None:
    if to not in FORMATS:
        raise UsageError(f"--to {to}: expected one of {', '.join(FORMATS)}")


def write_lora(lora: Lora, path: str | Path, to: str, record: dict[str, Any] | None = None) -> None:
    from llmdit_cli.artifacts import write_bytes_atomic

    write_bytes_atomic(str(path), lora_bytes(lora, to, record))


def _adapter_metadata(lora: Lora) -> dict[str, Any]:
    """diffusers' LoraConfig for the folded file: alpha = rank for every module (scale 1)."""
    ranks = {name: p.rank for name, p in lora.pairs.items()}
    common = Counter(ranks.values()).most_common(1)[0][0]
    pattern = {name: r for name, r in ranks.items() if r != common}
    return {
        "transformer.r": common,
        "transformer.lora_alpha": common,
        "transformer.rank_pattern": pattern,
        "transformer.alpha_pattern": dict(pattern),
        "transformer.target_modules": sorted(ranks),
        "transformer.use_rslora": False,
    }


def _alpha_tensor(pair: Pair):
    import torch

    return torch.tensor(pair.scale * pair.rank, dtype=torch.float32)


def _comfy_tensors(lora: Lora) -> dict:
    """ai-toolkit style: `diffusion_model.` + diffusers names, lora_A/lora_B, alpha = scale · rank."""
    out = {}
    for name, p in lora.pairs.items():
        stem = f"diffusion_model.{name}"
        out[f"{stem}.lora_A.weight"] = p.down
        out[f"{stem}.lora_B.weight"] = p.up
        out[f"{stem}.alpha"] = _alpha_tensor(p)
    return out


def _kohya_tensors(lora: Lora) -> dict:
    """`lora_unet_` + the original checkpoint's names (fused qkv), lora_down/lora_up/alpha."""
    out = {}
    for native, p in _native_pairs(lora).items():
        stem = "lora_unet_" + native.replace(".", "_")
        out[f"{stem}.lora_down.weight"] = p.down
        out[f"{stem}.lora_up.weight"] = p.up
        out[f"{stem}.alpha"] = _alpha_tensor(p)
    return out


def _native_pairs(lora: Lora) -> dict[str, Pair]:
    """Diffusers names -> the original checkpoint's; q/k/v of one block fuse into one qkv LoRA of
    rank r_q + r_k + r_v: `down` stacks theirs, `up` is block-diagonal (each block pre-scaled)."""
    out: dict[str, Pair] = {}
    fused: dict[str, dict[str, Pair]] = {}
    for name, p in lora.pairs.items():
        stem, _, proj = name.rpartition(".")
        if proj in _QKV and stem.endswith(".attention"):
            fused.setdefault(stem, {})[proj] = p
            continue
        out[_native_name(name)] = p
    for stem, parts in fused.items():
        out[f"{stem}.qkv"] = _fuse_qkv(parts)
    return out


def _native_name(name: str) -> str:
    name = re.sub(r"^all_x_embedder\.2-1$", "x_embedder", name)
    name = re.sub(r"^all_final_layer\.2-1\.", "final_layer.", name)
    return re.sub(r"\.attention\.to_out\.0$", ".attention.out", name)


def _fuse_qkv(parts: dict[str, Pair]) -> Pair:
    import torch

    first = next(iter(parts.values()))
    out_dim, dtype = first.up.shape[0], first.up.dtype
    if len(parts) == 3 and all(torch.equal(p.down, first.down) for p in parts.values()):
        # one fused LoRA split on reading: rejoin it at its own rank
        return Pair(first.down, torch.cat([parts[p].folded_up() for p in _QKV]), 1.0)
    present = [(i, parts[p]) for i, p in enumerate(_QKV) if p in parts]
    rank = sum(p.rank for _, p in present)
    down = torch.cat([p.down.to(dtype) for _, p in present], dim=0)
    up = torch.zeros(3 * out_dim, rank, dtype=dtype)
    col = 0
    for i, p in present:
        up[i * out_dim : (i + 1) * out_dim, col : col + p.rank] = p.folded_up().to(dtype)
        col += p.rank
    return Pair(down, up, 1.0)


def from_peft_state(state: dict, rank: int, alpha: float) -> Lora:
    """The LoRA a training run holds in memory (PEFT keys, one rank and alpha)."""
    pairs = {}
    for key, down in state.items():
        if key.endswith(".lora_A.weight"):
            name = key.removeprefix("transformer.")[: -len(".lora_A.weight")]
            pairs[name] = Pair(down, state[key.replace(".lora_A.", ".lora_B.")], alpha / rank)
    return Lora(pairs, "peft", {"alpha_source": "training run"})


def summary(path: str | Path) -> dict[str, Any]:
    """What `llmdit lora inspect` shows: layout, ranks, alphas, targets, per-loader strength."""
    tensors, meta, peft_config, hint = load_tensors(path)
    lora = lora_from_tensors(tensors, meta, peft_config, str(path), hint)
    suffixes = sorted({_target_suffix(n) for n in lora.pairs})
    return {
        "file": str(path),
        "layout": lora.layout,
        "modules": len(lora.pairs),
        "targets": suffixes,
        "rank": lora.ranks(),
        "scale": lora.scales(),
        "alpha": sorted({round(p.scale * p.rank, 6) for p in lora.pairs.values()}),
        "alpha_source": lora.info["alpha_source"],
        "recorded": lora.info.get("llmdit"),
        "loaders": loader_scales(tensors, meta, peft_config, lora),
        "dtype": sorted({str(p.down.dtype).removeprefix("torch.") for p in lora.pairs.values()}),
    }


def _target_suffix(module: str) -> str:
    m = re.match(r"^(?:layers|noise_refiner|context_refiner)\.\d+\.(.+)$", module)
    return m.group(1) if m else module
