"""Independent references for LoRA tests: what stock diffusers and ComfyUI do with a file, and the
weights a LoRA means, computed without llmdit's own LoRA code."""

from __future__ import annotations

import torch


def linear_weights(transformer) -> dict[str, torch.Tensor]:
    """Every Linear weight by diffusers module name (a LoRA-wrapped module's base weight)."""
    out = {}
    for name, module in transformer.named_modules():
        if hasattr(module, "base_layer"):
            out[name] = module.base_layer.weight.detach().clone()
        elif isinstance(module, torch.nn.Linear) and ".base_layer" not in name and "lora_" not in name:
            out[name] = module.weight.detach().clone()
    return out


def peft_merged(transformer) -> dict[str, torch.Tensor]:
    """Merge every PEFT LoRA layer in place (PEFT's own arithmetic) and return the weights."""
    for module in transformer.modules():
        if hasattr(module, "base_layer") and hasattr(module, "merge"):
            module.merge()
    return linear_weights(transformer)


def diffusers_fused(model_folder, lora) -> dict[str, torch.Tensor]:
    """Stock diffusers: load_lora_weights + fuse_lora (scale 1) on the folder's pipeline."""
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(model_folder, local_files_only=True)
    pipe.load_lora_weights(lora if isinstance(lora, dict) else str(lora))
    pipe.fuse_lora(lora_scale=1.0)
    return linear_weights(pipe.transformer)


def base_weights(model_folder) -> dict[str, torch.Tensor]:
    from diffusers import ZImageTransformer2DModel

    dit = ZImageTransformer2DModel.from_pretrained(model_folder, subfolder="transformer", local_files_only=True)
    return linear_weights(dit)


# -- ComfyUI's rule, restated from comfy/lora.py, comfy/weight_adapter/lora.py and comfy/utils.py
# (z_image_to_diffusers): keys map onto the ORIGINAL checkpoint's modules (fused attention.qkv,
# attention.out, x_embedder, final_layer); diffusers-named keys with the prefixes `diffusion_model.`,
# `transformer.`, `lycoris_` (underscored) or none map onto them, q/k/v as row slices of qkv; and
# `lora_unet_` + the original names with `_` for `.`; scale = alpha tensor / rank, else 1.

_UP_DOWN = [
    (".lora_up.weight", ".lora_down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
]


def _diffusers_to_original(name: str, dim: int):
    """(original module, row slice or None) for a diffusers module name."""
    for i, proj in enumerate(("to_q", "to_k", "to_v")):
        if name.endswith(f".attention.{proj}"):
            return name[: -len(proj)] + "qkv", (i * dim, (i + 1) * dim)
    if name.endswith(".attention.to_out.0"):
        return name[: -len("to_out.0")] + "out", None
    if name == "all_x_embedder.2-1":
        return "x_embedder", None
    if name.startswith("all_final_layer.2-1."):
        return "final_layer." + name[len("all_final_layer.2-1.") :], None
    return name, None


def comfy_key_map(diffusers_modules: list[str], dim: int) -> dict[str, tuple[str, tuple | None]]:
    key_map = {}
    originals = set()
    for name in diffusers_modules:
        target = _diffusers_to_original(name, dim)
        originals.add(target[0])
        for key in (f"diffusion_model.{name}", f"transformer.{name}", "lycoris_" + name.replace(".", "_"), name):
            key_map[key] = target
    for original in originals:  # the generic part: the model's own (original) names
        key_map["lora_unet_" + original.replace(".", "_")] = (original, None)
        key_map[f"diffusion_model.{original}"] = (original, None)
    return key_map


def comfy_patched(base: dict[str, torch.Tensor], lora_sd: dict, dim: int) -> dict[str, torch.Tensor]:
    """The diffusers-named weights after ComfyUI applies `lora_sd` at strength 1."""
    original = {}
    for name, w in base.items():
        target, rows = _diffusers_to_original(name, dim)
        original.setdefault(target, {})[rows] = w
    fused = {
        t: (torch.cat([parts[k] for k in sorted(parts, key=lambda r: r[0])]) if None not in parts else parts[None])
        .clone()
        .double()
        for t, parts in original.items()
    }
    applied = 0
    for key, (target, rows) in comfy_key_map(list(base), dim).items():
        for up_s, down_s in _UP_DOWN:
            if key + up_s in lora_sd:
                up, down = lora_sd[key + up_s].double(), lora_sd[key + down_s].double()
                alpha = lora_sd.get(key + ".alpha")
                scale = float(alpha) / down.shape[0] if alpha is not None else 1.0
                view = fused[target] if rows is None else fused[target][rows[0] : rows[1]]
                view += scale * (up @ down)
                applied += 1
    assert applied, "ComfyUI's rule maps no key of this file"
    out = {}
    for name in base:
        target, rows = _diffusers_to_original(name, dim)
        out[name] = (fused[target] if rows is None else fused[target][rows[0] : rows[1]]).float()
    return out


def assert_weights_close(got: dict, want: dict, base: dict | None = None, rtol: float = 1e-4):
    """Every weight equal within float tolerance, relative to the size of the LoRA's change."""
    assert got.keys() == want.keys(), set(got) ^ set(want)
    worst = 0.0
    for name in want:
        change = (want[name] - base[name]).abs().max().item() if base is not None else 1.0
        err = (got[name].float() - want[name].float()).abs().max().item()
        worst = max(worst, err / max(change, 1e-6))
        assert err <= rtol * max(change, 1e-3) + 1e-6, (name, err, change)
    return worst
