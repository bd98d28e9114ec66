"""An assistant (training-adapter) LoRA: merged into the transformer while training so a few-step
distilled model keeps its few-step behaviour, and taken out again before the result is saved.

The file's weights are read with diffusers' own LoRA loader (diffusers/PEFT and Kohya styles);
each pair adds `up @ down` (alpha scaling already folded in by the loader) to its module's weight.
"""

from __future__ import annotations

from llmdit_cli.errors import InputError

_DELTAS = "_llmdit_assistant_deltas"


def _deltas(transformer, path: str) -> dict:
    from diffusers import ZImagePipeline

    try:
        state = ZImagePipeline.lora_state_dict(path)
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad file for the user
        raise InputError(f"--assistant-lora {path}: cannot load ({str(exc).splitlines()[0]})") from None
    state = state[0] if isinstance(state, tuple) else state
    modules = dict(transformer.named_modules())
    deltas = {}
    for key, down in state.items():
        if not key.endswith("lora_A.weight"):
            continue
        name = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
        up = state[key.replace("lora_A", "lora_B")]
        if name not in modules:
            raise InputError(f"--assistant-lora {path}: key {key} matches no module of the transformer")
        deltas[name] = up.float() @ down.float()
    if not deltas:
        raise InputError(f"--assistant-lora {path}: holds no LoRA weights")
    return deltas


def merge_assistant(transformer, path: str) -> None:
    import torch

    deltas = _deltas(transformer, path)
    modules = dict(transformer.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            modules[name].weight.add_(delta.to(modules[name].weight))
    setattr(transformer, _DELTAS, deltas)


def unmerge_assistant(transformer) -> None:
    import torch

    deltas = getattr(transformer, _DELTAS, {})
    modules = dict(transformer.named_modules())
    with torch.no_grad():
        for name, delta in deltas.items():
            layer = modules[name]
            weight = layer.base_layer.weight if hasattr(layer, "base_layer") else layer.weight
            weight.sub_(delta.to(weight))
    setattr(transformer, _DELTAS, {})
