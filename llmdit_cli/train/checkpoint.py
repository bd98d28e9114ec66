"""Training checkpoints without pickles: tensors in safetensors files, everything else in JSON.

A checkpoint folder holds

    model.safetensors         the trained weights (a LoRA run: only the adapters)
    optimizer.safetensors     the optimiser's tensors, keyed `STATE_INDEX.NAME`
    optimizer.json            the rest of its state dict (param groups, plain values)
    scheduler.json            the learning-rate schedule's state dict
    rng.RANK.safetensors      each process's torch RNG states (CPU, and CUDA where there is one)
    rng.RANK.json             its Python and NumPy RNG states
    scaler.json               the fp16 gradient scaler's state, when there is one
    trainer.json              step and recipe fingerprint (written by the loop)

Loading reads tensors with safetensors and JSON with `json`: nothing in a checkpoint can run code.
A folder that holds a pickle-based file (Accelerate's `optimizer.bin`, `random_states_0.pkl`, a
`.pt`) is refused in one line, whoever made it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from llmdit_cli.errors import InputError

PICKLE_SUFFIXES = (".pkl", ".pickle", ".bin", ".pt", ".pth", ".ckpt")


def _looks_pickled(path: Path) -> bool:
    """A pickle-based file by its name (any case) or its first bytes: a pickle of protocol 2 or
    later, or the zip that `torch.save` writes (pickles inside), whatever the file is called.
    (Protocols 0 and 1 start with no mark; only their names give them away.)"""
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return True
    if not path.is_file() or path.suffix.lower() in (".safetensors", ".json"):
        return False
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        raise InputError(f"--resume: {path}: cannot read ({exc.strerror or exc})") from None
    return (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == b"PK\x03\x04"


def refuse_pickles(folder: Path) -> None:
    for path in sorted(folder.iterdir()):
        if _looks_pickled(path):
            raise InputError(
                f"--resume: {path} is a pickle-based file, which can run code when loaded; llmdit "
                f"checkpoints are safetensors and JSON only (remove the checkpoint or train afresh)"
            )


def save(folder: Path, acc, model, optimizer, scheduler, trainable_only: bool) -> None:
    """Every process writes its RNG states; the main one writes the rest (all ranks agree)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    rank = acc.process_index
    tensors, plain = _rng_state()
    save_file(tensors, str(folder / f"rng.{rank}.safetensors"))
    _write_json(folder / f"rng.{rank}.json", plain)
    if not acc.is_main_process:
        return
    save_file(_model_state(acc, model, trainable_only), str(folder / "model.safetensors"))
    tensors, rest = _split(optimizer.state_dict())
    save_file(tensors, str(folder / "optimizer.safetensors"))
    _write_json(folder / "optimizer.json", rest)
    _write_json(folder / "scheduler.json", scheduler.state_dict())
    scaler = getattr(acc, "scaler", None)
    if scaler is not None:
        _write_json(folder / "scaler.json", scaler.state_dict())


def load(folder: Path, acc, model, optimizer, scheduler, trainable_only: bool) -> None:
    from safetensors.torch import load_file

    refuse_pickles(folder)
    need = ["model.safetensors", "optimizer.safetensors", "optimizer.json", "scheduler.json"]
    missing = [name for name in need if not (folder / name).is_file()]
    if missing:
        raise InputError(f"--resume: {folder} holds no {missing[0]} (not an llmdit checkpoint of this version)")
    _load_model(folder / "model.safetensors", acc, model, trainable_only)
    state = _join(load_file(str(folder / "optimizer.safetensors")), _read_json(folder / "optimizer.json"))
    optimizer.load_state_dict(state)
    scheduler.load_state_dict(_read_json(folder / "scheduler.json"))
    scaler = getattr(acc, "scaler", None)
    if scaler is not None and (folder / "scaler.json").is_file():
        scaler.load_state_dict(_read_json(folder / "scaler.json"))
    rank = acc.process_index
    if (folder / f"rng.{rank}.safetensors").is_file():
        _set_rng_state(load_file(str(folder / f"rng.{rank}.safetensors")), _read_json(folder / f"rng.{rank}.json"))


# -- the model -------------------------------------------------------------------------------------


def _model_state(acc, model, trainable_only: bool) -> dict:
    unwrapped = acc.unwrap_model(model)
    keep = {n for n, p in unwrapped.named_parameters() if p.requires_grad} if trainable_only else None
    state = unwrapped.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in state.items() if keep is None or k in keep}


def _load_model(path: Path, acc, model, trainable_only: bool) -> None:
    from safetensors.torch import load_file

    unwrapped = acc.unwrap_model(model)
    state = load_file(str(path))
    if trainable_only:
        missing = sorted({n for n, p in unwrapped.named_parameters() if p.requires_grad} - set(state))
        if missing:
            raise InputError(f"--resume: {path} lacks trained weights ({missing[0]}, ...)")
    result = unwrapped.load_state_dict(state, strict=not trainable_only)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise InputError(f"--resume: {path} holds weights this model lacks ({unexpected[0]}, ...)")


# -- the optimiser: tensors apart from the rest ------------------------------------------------------


def _split(state: dict) -> tuple[dict, dict]:
    """An optimiser state dict as {`INDEX.NAME`: tensor} and the JSON-able rest."""
    import torch

    tensors, per_param = {}, {}
    for index, entries in state["state"].items():
        plain = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain[name] = value
        per_param[str(index)] = plain
    return tensors, {"param_groups": state["param_groups"], "state": per_param}


def _join(tensors: dict, rest: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(i): dict(plain) for i, plain in rest["state"].items()}
    for key, value in tensors.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": rest["param_groups"]}


# -- RNG states -------------------------------------------------------------------------------------


def _rng_state() -> tuple[dict, dict]:
    import numpy as np
    import torch

    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    plain = {
        "python": [version, list(state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, plain


def _set_rng_state(tensors: dict, plain: dict) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    version, state, gauss = plain["python"]
    random.setstate((version, tuple(state), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--resume: {path}: not readable JSON ({exc})") from None
