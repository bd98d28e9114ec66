"""Training recipes: a TOML file validated here; flags override it; the resolved recipe is saved
next to every checkpoint (`recipe.resolved.toml`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from llmdit_cli.config import DEFAULT_MODEL, in_words
from llmdit_cli.errors import ConfigError
from llmdit_cli.tomlfiles import StrictModel, dump_toml, load_toml, validation_error

_Section = StrictModel


class DataConfig(_Section):
    path: str = ""  # folder with metadata.jsonl, a .json/.jsonl/.csv file, or hf:NAME for `datasets`
    image_column: str = "file_name"
    caption_column: str = "text"
    resolution: int = Field(1024, ge=16)  # bucket area is resolution**2; sides are multiples of 16
    buckets: bool = True  # aspect-ratio buckets; False = centre-crop squares
    caption_dropout: float = Field(0.0, ge=0, le=1)  # fraction of steps trained on the empty caption (enables CFG)
    cache_dir: str | None = None  # default: <data folder>/.llmdit-cache
    synthetic: Literal["shapes"] | None = None  # write this generated dataset to `path` if it is missing
    synthetic_size: int = 32
    synthetic_per_combo: int = 24


class LoraConfig(_Section):
    rank: int = Field(32, ge=1)
    alpha: float | None = Field(None, gt=0)  # None: the rank (scale alpha/rank = 1), resolved when the recipe loads
    targets: list[str] = ["to_q", "to_k", "to_v", "to_out.0"]

    @model_validator(mode="after")
    def _alpha_defaults_to_rank(self):
        if self.alpha is None:
            self.alpha = float(self.rank)
        return self


class OptimConfig(_Section):
    optimizer: Literal["adamw", "adamw8bit"] = "adamw"
    lr: float = Field(1e-4, ge=0)
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float = 1.0


class TrainConfig(_Section):
    # sft: flow matching on the data's images; distill: guidance distillation ([distill]).
    objective: Literal["sft", "distill"] = "sft"
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int | None = Field(1000, ge=1)
    epochs: int | None = Field(None, ge=1)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    # Checkpointed blocks' inputs kept in CPU memory until backward (torch's save_on_cpu).
    gradient_checkpointing_offload: bool = False
    seed: int = 0
    timestep_sampling: Literal["uniform", "logit_normal", "shifted"] = "shifted"
    shift: float = Field(3.0, gt=0)
    logit_mean: float = 0.0
    logit_std: float = 1.0
    loss_weighting: Literal["none", "gaussian"] = "none"
    weighting_center: float = 0.5  # gaussian weighting over sigma
    weighting_width: float = 0.3
    ema: float = 0.0  # EMA decay of the trained weights for the saved result; 0 = off (full only)


class DistillConfig(_Section):
    """Guidance distillation: the student learns, in one pass at guidance 0, the teacher's guided
    prediction on the states of the teacher's own sampling trajectories."""

    teacher: str | None = None  # None: the model being trained, as it is before training
    guidance_scale: float = Field(4.0, gt=0)  # the teacher's CFG scale
    steps: int | None = Field(None, ge=1)  # the schedule users will run; None: the family's default
    trajectories: int = Field(4, ge=1)  # teacher trajectories (seeds) per prompt


class OutputConfig(_Section):
    dir: str = "runs/train"
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    tensorboard: bool = False


class ValidationConfig(_Section):
    prompts: list[str] = []
    every: int = 0  # steps; 0 = only at the end (when prompts are given)
    seed: int = 0
    steps: int | None = None
    width: int | None = None
    height: int | None = None
    guidance_scale: float | None = None


class ScratchConfig(_Section):
    """Build the base model from configs (tiny models: the shipped demo) instead of loading one."""

    text_encoder: dict[str, Any] = {}
    transformer: dict[str, Any] = {}
    vae: dict[str, Any] = {}
    tokenizer_corpus: Literal["none", "captions"] = "none"  # "captions": learn BPE merges from the data
    tokenizer_vocab: int = 512
    vae_steps: int = 0  # train the VAE on the dataset's images (reconstruction) before the transformer
    vae_lr: float = 2e-3
    vae_batch_size: int = 64
    vae_kl_weight: float = 1e-7
    seed: int = 0


class Recipe(_Section):
    model: str = DEFAULT_MODEL
    method: Literal["lora", "full"] = "lora"
    assistant_lora: str | None = None  # merged while training, not part of the saved result
    data: DataConfig = DataConfig()
    lora: LoraConfig = LoraConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    distill: DistillConfig = DistillConfig()
    output: OutputConfig = OutputConfig()
    validation: ValidationConfig = ValidationConfig()
    scratch: ScratchConfig | None = None

    @model_validator(mode="after")
    def _distill_settings_need_distillation(self):
        if self.train.objective == "sft" and "distill" in self.model_fields_set:
            raise ValueError(
                '[distill] settings (--teacher, ...) need train.objective = "distill" (--objective distill)'
            )
        return self

    def fingerprint(self) -> str:
        """What must match for `--resume`: everything but the output cadence and step budget."""
        data = self.model_dump(mode="json")
        data["train"].pop("max_steps", None)
        data["train"].pop("epochs", None)
        data.pop("output", None)
        data.pop("validation", None)
        if self.train.objective == "sft":  # as before distillation existed: older runs still resume
            data.pop("distill")
            data["train"].pop("objective")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_toml(self) -> str:
        return dump_toml(self.model_dump(mode="json", exclude_none=True))


def _set(doc: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        doc = doc.setdefault(p, {})
    doc[last] = value


def load_recipe(path: str | None, overrides: dict[str, Any], names: dict[str, str] | None = None) -> Recipe:
    """Read RECIPE.toml (optional) and apply `overrides` ({'optim.lr': 1e-4, ...}; None = not given).
    A bad override is named as `names` says (the CLI's flags), else by its key."""
    doc: dict[str, Any] = {}
    if path:
        if Path(path).is_dir():
            raise ConfigError(f"{path}: is a folder, not a recipe file")
        if not Path(path).is_file():
            raise ConfigError(f"{path}: recipe not found")
        doc = load_toml(Path(path), "recipe")
    given = {key: value for key, value in overrides.items() if value is not None}
    for key, value in given.items():
        _set(doc, key, value)
    try:
        return Recipe.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(x) for x in err["loc"])
        if key in given and err["type"] != "extra_forbidden":
            raise ConfigError(f"{(names or {}).get(key, key)} {given[key]}: {in_words(err)}") from None
        raise validation_error(exc, path or "flags") from None
