from __future__ import annotations

from typing import Annotated, Optional

import typer

from llmdit_cli.cli.errors import handle_errors
from llmdit_cli.cli.options import (
    JsonOpt,
    ModelOpt,
    QuietOpt,
)
from llmdit_cli.cli.output import Output

# The recipe's overrides, by topic (each a panel of `--help`).
PANELS = {
    "Data (overrides the recipe)": "--dataset --resolution --caption-dropout --cache-dir",
    "Method": "--method --rank --alpha --target --assistant-lora",
    "Optimisation": "--optimizer --lr --schedule --warmup-steps --batch-size --grad-accum --max-steps --epochs "
    "--mixed-precision --seed --timestep-sampling --loss-weighting --weighting-center --weighting-width",
    "Memory": "--gradient-checkpointing --gradient-checkpointing-offload",
    "Guidance distillation (--objective distill)": "--objective --teacher --teacher-guidance-scale "
    "--teacher-steps --trajectories",
    "Output and validation": "--output --checkpoint-every --validate-every --validation-prompt --tensorboard",
}
PANEL_OF = {name: panel for panel, names in PANELS.items() for name in names.split()}


def _opt(*names: str, help: str):
    return typer.Option(*names, help=help, rich_help_panel=PANEL_OF[names[0].split("/")[0]])


RecipeArg = Annotated[
    Optional[list[str]],
    typer.Argument(
        help="Recipe TOML (see recipes/); flags override it. 'auto' after --resume: continue if there "
        "is a checkpoint, else start fresh.",
        show_default=False,
        metavar="[RECIPE] [auto]",
    ),
]

# flag name -> recipe key, for every override flag below
OVERRIDES = {
    "model": "model",
    "dataset": "data.path",
    "method": "method",
    "resolution": "data.resolution",
    "caption_dropout": "data.caption_dropout",
    "cache_dir": "data.cache_dir",
    "rank": "lora.rank",
    "alpha": "lora.alpha",
    "targets": "lora.targets",
    "optimizer": "optim.optimizer",
    "lr": "optim.lr",
    "schedule": "optim.schedule",
    "warmup_steps": "optim.warmup_steps",
    "batch_size": "train.batch_size",
    "grad_accum": "train.grad_accum",
    "max_steps": "train.max_steps",
    "epochs": "train.epochs",
    "mixed_precision": "train.mixed_precision",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "gradient_checkpointing_offload": "train.gradient_checkpointing_offload",
    "loss_weighting": "train.loss_weighting",
    "weighting_center": "train.weighting_center",
    "weighting_width": "train.weighting_width",
    "seed": "train.seed",
    "timestep_sampling": "train.timestep_sampling",
    "output": "output.dir",
    "checkpoint_every": "output.checkpoint_every",
    "validate_every": "validation.every",
    "validation_prompt": "validation.prompts",
    "tensorboard": "output.tensorboard",
    "assistant_lora": "assistant_lora",
    "objective": "train.objective",
    "teacher": "distill.teacher",
    "teacher_guidance_scale": "distill.guidance_scale",
    "teacher_steps": "distill.steps",
    "trajectories": "distill.trajectories",
}


def _runs_with_overrides(body):
    """Give the decorated declaration (signature and docstring: the command's --help) a body:
    `body(overrides, **rest)`, where `overrides` are the OVERRIDES flags as recipe keys."""

    def decorate(declaration):
        import functools
        import inspect

        @functools.wraps(declaration)
        def command(*args, **kwargs):
            bound = inspect.signature(declaration).bind(*args, **kwargs)
            bound.apply_defaults()
            values = dict(bound.arguments)
            overrides = {key: values.pop(flag) for flag, key in OVERRIDES.items()}
            return body(overrides, **values)

        return command

    return decorate


def _train(overrides: dict, recipe, resume, cache_only: bool, stop_at, quiet: bool, json_out: bool) -> None:
    from pathlib import Path

    from llmdit_cli.train.loop import Run
    from llmdit_cli.train.loop import train as run_training
    from llmdit_cli.train.recipe import load_recipe

    first = _first_rank()
    out = Output(quiet or not first, json_out and first)
    resume, recipe = _resume_mode(resume, recipe)
    r = load_recipe(recipe, overrides, {key: "--" + flag.replace("_", "-") for flag, key in OVERRIDES.items()})
    run = Run(r, Path(r.output.dir), out.log, _progress(out))
    result = run_training(run, resume=resume, cache_only=cache_only, stop_at=stop_at)
    kind = (
        "lora"
        if result.suffix == ".safetensors"
        else "cache"
        if cache_only
        else "model"
        if (result / "model_index.json").is_file()
        else "checkpoint"
    )
    if first:  # the other ranks of a distributed launch made the same result
        out.wrote(str(result), kind, prompt=None, seed=r.train.seed, settings=r.model_dump(mode="json"))


def _first_rank() -> bool:
    """Whether this is the first process of a distributed launch (RANK 0 under torchrun,
    accelerate launch or srun), or the only one: only it shows progress and logs and reports the
    result; errors show on every rank."""
    import os

    try:
        return int(os.environ.get("RANK", "0") or 0) == 0
    except ValueError:
        return True


def _resume_mode(resume: bool, words: list[str] | None) -> tuple[bool | str, str | None]:
    """The resume mode and the recipe from `--resume` and the positional words: `--resume auto`
    leaves the word `auto` among them (a bool flag takes no value), before or after the recipe."""
    from llmdit_cli.errors import UsageError

    words = list(words or [])
    auto = "auto" in words
    if auto:
        words.remove("auto")
        if not resume:
            raise UsageError("auto: not a recipe; continue-or-start is --resume auto")
    if len(words) > 1:
        raise UsageError(f"{' '.join(words)}: give one recipe")
    return ("auto" if auto else resume), (words[0] if words else None)


@handle_errors
@_runs_with_overrides(_train)
def train(
    recipe: RecipeArg = None,
    model: ModelOpt = None,
    dataset: Annotated[
        Optional[str],
        _opt(
            "--dataset",
            help="Image folder with metadata.jsonl, a .json/.jsonl/.csv file, or hf:NAME; distill: also a .txt of prompts.",
        ),
    ] = None,
    method: Annotated[Optional[str], _opt("--method", help="lora or full (default lora).")] = None,
    resolution: Annotated[
        Optional[int],
        _opt(
            "--resolution",
            help="Training resolution (bucket area = resolution^2; default: the model's image size, 1024 for Z-Image, 32 for the demo).",
        ),
    ] = None,
    caption_dropout: Annotated[
        Optional[float], _opt("--caption-dropout", help="Fraction of examples trained on the empty caption.")
    ] = None,
    cache_dir: Annotated[
        Optional[str], _opt("--cache-dir", help="Folder for cached embeds/latents stage files.")
    ] = None,
    rank: Annotated[Optional[int], _opt("--rank", help="LoRA rank (default 32).")] = None,
    alpha: Annotated[
        Optional[float],
        _opt(
            "--alpha",
            help="LoRA alpha; the update is scaled by alpha/rank while training (default: the rank, i.e. scale 1). The written file has that scale folded in, so every loader applies it.",
        ),
    ] = None,
    targets: Annotated[
        Optional[list[str]], _opt("--target", help="LoRA target module name; repeat (default: attention projections).")
    ] = None,
    optimizer: Annotated[
        Optional[str], _opt("--optimizer", help="adamw or adamw8bit (bitsandbytes; default adamw).")
    ] = None,
    lr: Annotated[Optional[float], _opt("--lr", help="Peak learning rate (default 0.0001).")] = None,
    schedule: Annotated[Optional[str], _opt("--schedule", help="constant, linear or cosine (default cosine).")] = None,
    warmup_steps: Annotated[Optional[int], _opt("--warmup-steps", help="Linear warm-up steps (default 0).")] = None,
    batch_size: Annotated[
        Optional[int], _opt("--batch-size", help="Examples per process per micro-batch (default 4).")
    ] = None,
    grad_accum: Annotated[
        Optional[int], _opt("--grad-accum", help="Micro-batches per optimiser step (default 1).")
    ] = None,
    max_steps: Annotated[Optional[int], _opt("--max-steps", help="Optimiser steps (default 1000).")] = None,
    epochs: Annotated[Optional[int], _opt("--epochs", help="Epochs (when --max-steps is not set).")] = None,
    mixed_precision: Annotated[Optional[str], _opt("--mixed-precision", help="no, fp16 or bf16 (default no).")] = None,
    gradient_checkpointing: Annotated[
        Optional[bool],
        _opt("--gradient-checkpointing/--no-gradient-checkpointing", help="Recompute activations to save memory."),
    ] = None,
    gradient_checkpointing_offload: Annotated[
        Optional[bool],
        _opt(
            "--gradient-checkpointing-offload/--no-gradient-checkpointing-offload",
            help="Checkpointing, with the saved activations in CPU memory until backward (less GPU memory).",
        ),
    ] = None,
    loss_weighting: Annotated[
        Optional[str], _opt("--loss-weighting", help="none, or gaussian: weight each example's loss by its sigma.")
    ] = None,
    weighting_center: Annotated[
        Optional[float],
        _opt("--weighting-center", help="With --loss-weighting gaussian: the sigma weighted most (0.5)."),
    ] = None,
    weighting_width: Annotated[
        Optional[float], _opt("--weighting-width", help="With --loss-weighting gaussian: its width in sigma (0.3).")
    ] = None,
    seed: Annotated[Optional[int], _opt("--seed", help="Seed of data order, noise and timesteps (default 0).")] = None,
    timestep_sampling: Annotated[
        Optional[str], _opt("--timestep-sampling", help="uniform, logit_normal or shifted (default shifted).")
    ] = None,
    output: Annotated[Optional[str], _opt("--output", "-o", help="Run folder (checkpoints, result, logs).")] = None,
    checkpoint_every: Annotated[
        Optional[int], _opt("--checkpoint-every", help="Steps between checkpoints (default 500).")
    ] = None,
    validate_every: Annotated[Optional[int], _opt("--validate-every", help="Steps between validation images.")] = None,
    validation_prompt: Annotated[
        Optional[list[str]], _opt("--validation-prompt", help="Prompt for validation images; repeat.")
    ] = None,
    tensorboard: Annotated[
        Optional[bool], _opt("--tensorboard/--no-tensorboard", help="Log loss and lr to TensorBoard.")
    ] = None,
    assistant_lora: Annotated[
        Optional[str],
        _opt(
            "--assistant-lora",
            help="Training-adapter LoRA merged while training and left out of the result (for distilled models).",
        ),
    ] = None,
    objective: Annotated[
        Optional[str],
        _opt("--objective", help="sft (flow matching on images) or distill (guidance distillation; prompts only)."),
    ] = None,
    teacher: Annotated[
        Optional[str],
        _opt("--teacher", help="Distill: the teacher model (default: the model being trained, before training)."),
    ] = None,
    teacher_guidance_scale: Annotated[
        Optional[float], _opt("--teacher-guidance-scale", help="Distill: the teacher's CFG scale (4).")
    ] = None,
    teacher_steps: Annotated[
        Optional[int],
        _opt("--teacher-steps", help="Distill: the steps the student will run (default: the family's)."),
    ] = None,
    trajectories: Annotated[
        Optional[int], _opt("--trajectories", help="Distill: teacher trajectories (seeds) per prompt (4).")
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the run in --output from its latest checkpoint. --resume auto: continue if "
            "there is one, else start fresh (one command line for a requeued job).",
        ),
    ] = False,
    cache_only: Annotated[bool, typer.Option("--cache-only", help="Fill the embeds/latents cache and stop.")] = False,
    stop_at: Annotated[
        Optional[int],
        typer.Option(
            "--stop-at", help="Save a checkpoint and stop after this step (time-sliced jobs); continue with --resume."
        ),
    ] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
):
    """Fine-tune (LoRA or full) a Z-Image transformer, on 1 CPU ... N GPUs.

    Flow matching on captioned images, or (--objective distill) guidance
    distillation from prompts alone: the student learns to give at guidance 0
    what the teacher gives with CFG. Captions and images are cached as
    embeds/latents stage files first, so training holds only the transformer.

    Several processes: `accelerate launch -m llmdit_cli train RECIPE` or
    `torchrun`. The result is a diffusers LoRA file (`--lora`,
    `load_lora_weights`) or a model folder (`--model RUN/model`); the resolved
    recipe is saved next to every checkpoint.

    Example: llmdit train recipes/demo-shapes.toml --max-steps 50 -o runs/quick
    """


def _progress(out: Output):
    from contextlib import contextmanager

    @contextmanager
    def progress(description: str, total: int):
        import time

        start = {"t": time.perf_counter(), "step": None}
        with out.progress(description, total) as advance:

            def update(step: int, loss: float | None = None, lr: float | None = None):
                if start["step"] is None:
                    start["step"] = step
                    start["t"] = time.perf_counter()
                    advance(step, total)
                    return
                rate = (step - start["step"]) / max(time.perf_counter() - start["t"], 1e-9)
                advance(step, total, f"loss {loss:.4f}  lr {lr:.2e}  {rate:.2f} steps/s")
                if step % max(1, total // 10) == 0:
                    out.log(f"step {step}/{total}  loss {loss:.4f}  lr {lr:.2e}  {rate:.2f} steps/s")

            yield update

    return progress
