"""The training recipe, top to bottom: base model -> cached data -> transformer (+LoRA) ->
optimiser and schedule -> steps (Accelerate: 1 CPU ... N GPUs) -> checkpoints -> result.

Every random draw of a step comes from a generator seeded by (seed, step, rank, micro-batch) and
the data order from (seed, epoch), so a run stopped at step k and resumed gives the same losses and
weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmdit_cli.errors import InputError, LlmditError, UsageError
from llmdit_cli.train.recipe import Recipe

CHECKPOINTS = "checkpoints"
LORA_FILE = "pytorch_lora_weights.safetensors"


class Interrupted(LlmditError):
    exit_code = 130


@dataclass
class Run:
    recipe: Recipe
    output: Path
    log: Callable[[str], None]
    progress: Callable  # progress(description, total) context manager yielding update(step, **fields)
    parts: tuple = ()  # (transformer, optimizer, lr schedule) once prepared: what checkpoints hold
    teacher_images: list = field(default_factory=list)  # distillation: the validation prompts' teacher images


def train(run: Run, resume: bool | str = False, cache_only: bool = False, stop_at: int | None = None) -> Path:
    """Run the recipe; returns the result path (LoRA file or model folder, or the cache folder).
    `resume` "auto" continues from the latest checkpoint when there is one, else starts fresh.
    A run that fails before writing anything leaves no empty output folder behind."""
    fresh = not run.output.exists()
    try:
        return _train(run, resume, cache_only, stop_at)
    except BaseException:
        if fresh:
            _remove_if_empty(run.output)
        raise


def _resolution_of_model(r, handle, log) -> None:
    """A recipe that names no resolution trains at the model's own image size (Z-Image's 1024, the
    demo's 32), not at 1024 for every model."""
    side = handle.defaults().get("width")
    if "resolution" not in r.data.model_fields_set and side and side != r.data.resolution:
        r.data.resolution = side
        log(f"training at {side} px, the model's image size (--resolution to choose)")


def _remove_if_empty(folder: Path) -> None:
    try:  # another rank may be removing it too
        if not any(folder.iterdir()):
            folder.rmdir()
    except OSError:
        pass


def _train(run: Run, resume: bool | str, cache_only: bool, stop_at: int | None) -> Path:
    import torch
    from accelerate import Accelerator

    r = run.recipe
    if resume == "auto":
        resume = bool(_checkpoints(run.output))
    _check_output(run.output, resume)
    run.output.mkdir(parents=True, exist_ok=True)
    acc = Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=r.train.mixed_precision,
        gradient_accumulation_steps=r.train.grad_accum,
        log_with="tensorboard" if r.output.tensorboard else None,
        project_dir=str(run.output),
    )
    log = run.log if acc.is_main_process else (lambda msg: None)
    torch.manual_seed(r.train.seed)

    handle = _base_model(r, run.output, acc, log)
    _resolution_of_model(r, handle, log)
    prepared = _inputs(run, handle, acc, log, cache_only)
    if prepared is None:
        return Path(_cache_dir(r))
    transformer, examples, extra = prepared
    params = [p for p in transformer.parameters() if p.requires_grad]
    log(
        f"training {sum(p.numel() for p in params):,} parameters ({r.method}) on {acc.num_processes} "
        f"process(es), {acc.device}"
    )
    optimizer = _optimizer(r, params)
    schedule = _Schedule(examples, r.train.batch_size, r.train.grad_accum, acc.num_processes, r.train.seed)
    total = _total_steps(r, schedule, acc.num_processes)
    scheduler = _lr_schedule(r, optimizer, total)
    # The schedule steps once per optimiser step, outside Accelerate (which would step it once per
    # process); it is registered so checkpoints carry its state.
    transformer, optimizer = acc.prepare(transformer, optimizer)
    ema = _Ema(params, r.train.ema) if r.train.ema > 0 else None
    run.parts = (transformer, optimizer, scheduler)  # what a checkpoint holds (train/checkpoint.py)

    start = _resume(run, acc, ema) if resume else 0
    if acc.is_main_process:
        (run.output / "recipe.resolved.toml").write_text(r.to_toml())
    if r.output.tensorboard:
        acc.init_trackers("llmdit", config={"method": r.method, "lr": r.optim.lr})
    stop = _StopFlag()
    end = min(total, stop_at) if stop_at else total
    empty = extra.get("")
    with run.progress("training", total) as update:
        update(start)
        for step in range(start, end):
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            loss = _step(r, acc, transformer, optimizer, scheduler, params, examples, schedule, empty, step)
            if ema is not None:
                ema.update(params)
            if acc.is_main_process:
                with (run.output / "losses.jsonl").open("a") as fh:
                    fh.write(json.dumps({"step": step + 1, "loss": loss, "lr": lr}) + "\n")
                if r.output.tensorboard:
                    acc.log({"loss": loss, "lr": lr}, step=step + 1)
            update(step + 1, loss=loss, lr=lr)
            done = step + 1
            if r.validation.prompts and r.validation.every and done % r.validation.every == 0 and done < total:
                _validation_images(run, acc, transformer, handle, extra, done)
            if stop.check(acc):
                _save_checkpoint(run, acc, done, ema)
                raise Interrupted(
                    f"interrupted at step {done}: checkpoint saved in "
                    f"{run.output / CHECKPOINTS}; continue with --resume"
                )
            if done % r.output.checkpoint_every == 0 or done == end:
                _save_checkpoint(run, acc, done, ema)
    stop.restore()
    if end < total:
        log(f"stopped at step {end} of {total}; continue with --resume")
        return run.output / CHECKPOINTS
    if r.validation.prompts:
        _validation_images(run, acc, transformer, handle, extra, total)
    _check_ranks_in_sync(run, acc, params)
    result = _save_result(run, acc, transformer, handle, ema)
    acc.wait_for_everyone()  # no process ends (and leaves the group) while the first still saves
    acc.end_training()
    return result


# -- base model and data ---------------------------------------------------------------------------


def _check_output(output: Path, resume: bool) -> None:
    ckpts = output / CHECKPOINTS
    if not resume and ckpts.is_dir() and any(ckpts.iterdir()):
        raise UsageError(f"{output}: already holds a run; pass --resume to continue it or choose another --output")


def _synthetic_data(r: Recipe, acc, log) -> None:
    # Only into a folder: a file given as the data (`--dataset prompts.txt`) is the data.
    if r.data.synthetic and not Path(r.data.path).is_file() and not (Path(r.data.path) / "metadata.jsonl").is_file():
        if acc.is_main_process:
            from llmdit_cli.train.shapes import write_dataset

            log(f"writing the synthetic '{r.data.synthetic}' dataset to {r.data.path}")
            write_dataset(r.data.path, r.data.synthetic_size, r.data.synthetic_per_combo, r.train.seed)
        acc.wait_for_everyone()


def _base_model(r: Recipe, output: Path, acc, log):
    from llmdit_cli.families import check_feature
    from llmdit_cli.models import ModelHandle

    _synthetic_data(r, acc, log)
    if r.scratch is None:
        handle = ModelHandle(r.model)
        check_feature(handle.family, "train", "model", handle.ref)
        return handle
    base = output / "base"
    if acc.is_main_process and not (base / "model_index.json").is_file():
        from llmdit_cli.train.scratch import build_base

        build_base(r, base, log)
    acc.wait_for_everyone()
    return ModelHandle(str(base))


def _cache_dir(r: Recipe) -> str:
    if r.data.cache_dir:
        return r.data.cache_dir
    p = Path(r.data.path)
    return str((p if p.is_dir() else p.parent) / ".llmdit-cache")


def _cache(r: Recipe, handle, acc, log, teacher=None):
    """Fill the training cache: the examples and the embeds of the extra captions (the empty one,
    validation prompts). Distillation: the prompts' embeds as the examples, and no images."""
    from llmdit_cli.train import cache
    from llmdit_cli.train.data import load_items, load_prompts

    if teacher is not None:
        prompts = load_prompts(r.data.path, r.data.caption_column)
        extra = [teacher.negative, "", *r.validation.prompts]
        with acc.main_process_first():
            paths = cache.encode_captions(handle, prompts + extra, Path(_cache_dir(r)), log)
        handle.release("text_encoder", "tokenizer")
        return {p: paths[p] for p in prompts}, {c: paths[c] for c in extra}
    items = load_items(r.data.path, r.data.image_column, r.data.caption_column)
    with acc.main_process_first():
        examples, extra = cache.build(handle, items, r.data, Path(_cache_dir(r)), ["", *r.validation.prompts], log)
    handle.release("text_encoder", "tokenizer")
    return examples, extra


def _inputs(run: Run, handle, acc, log, cache_only: bool):
    """The transformer to train, its examples and the extra captions' embeds; None when only the
    cache was to be filled (distillation's holds the teacher's trajectories too)."""
    r = run.recipe
    teacher = None
    if r.train.objective == "distill":
        from llmdit_cli.train.distill import teacher_plan

        teacher = teacher_plan(r, handle)
    examples, extra = _cache(r, handle, acc, log, teacher)
    if cache_only and teacher is None:
        return None
    transformer = _transformer(r, handle)
    if teacher is not None:
        examples = _teach(run, handle, teacher, transformer, examples, extra, acc, cache_only)
    return None if cache_only else (transformer, examples, extra)


def _teach(run: Run, handle, teacher, transformer, prompts: dict, extra: dict, acc, cache_only: bool) -> list:
    """Distillation's examples: the states of the teacher's trajectories (sampled once, cached,
    the processes sharing the work); and the teacher's validation images, made now, before
    training changes the weights. Another teacher (`--teacher`) loads only where it has work."""
    from contextlib import nullcontext

    from llmdit_cli.train import distill

    r = run.recipe
    transformer.to(acc.device)
    loaded: list = []

    def model():
        if teacher.handle is None:
            return transformer
        if not loaded:
            loaded.append(_load_transformer(teacher.handle).to(acc.device))
        return loaded[0]

    own = nullcontext if teacher.handle is not None else (lambda: distill.as_teacher(transformer, r.method))
    log = run.log if acc.is_main_process else (lambda msg: None)
    negative, cache = extra[teacher.negative], Path(_cache_dir(r))
    share = (acc.process_index, acc.num_processes)
    with own():
        states = distill.states(r, handle, teacher, model, prompts, negative, cache, log, share)
    acc.wait_for_everyone()  # every trajectory is written before any process reads one
    if r.validation.prompts and acc.is_main_process and not cache_only:
        with own():
            run.teacher_images = _images(r, handle, model(), extra, r.distill.guidance_scale, teacher.negative)
    return states


def _load_transformer(handle):
    import torch

    return handle.code.transformer_class().from_pretrained(
        handle.folder / "transformer", local_files_only=True, dtype=torch.float32
    )


def _transformer(r: Recipe, handle):
    transformer = _load_transformer(handle)
    if r.assistant_lora:
        from llmdit_cli.train.assistant import merge_assistant

        merge_assistant(transformer, r.assistant_lora)
    if r.method == "lora":
        from peft import LoraConfig

        transformer.requires_grad_(False)
        try:
            transformer.add_adapter(
                LoraConfig(
                    r=r.lora.rank,
                    lora_alpha=r.lora.alpha,
                    target_modules=list(r.lora.targets),
                    init_lora_weights="gaussian",
                )
            )
        except ValueError as exc:
            if "not found in the base model" in str(exc):
                raise UsageError(f"[lora] targets {r.lora.targets}: match no module of the transformer") from None
            if "is not supported" in str(exc):  # e.g. a name that also ends an activation's path
                raise UsageError(
                    f"[lora] targets {r.lora.targets}: one matches a module LoRA cannot adapt "
                    f"({str(exc).split('.')[0]}); name Linear layers"
                ) from None
            raise
    else:
        transformer.requires_grad_(True)
    if r.train.gradient_checkpointing or r.train.gradient_checkpointing_offload:
        transformer.enable_gradient_checkpointing()
    transformer.train()
    return transformer


# -- optimisation ----------------------------------------------------------------------------------


def _optimizer(r: Recipe, params):
    import torch

    o = r.optim
    if o.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise UsageError("--optimizer adamw8bit: needs bitsandbytes (pip install bitsandbytes) and a GPU") from None
        return bnb.optim.AdamW8bit(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)


def _lr_schedule(r: Recipe, optimizer, total: int):
    import torch

    o = r.optim

    def factor(step: int) -> float:
        if step < o.warmup_steps:
            return (step + 1) / o.warmup_steps
        if o.schedule == "constant":
            return 1.0
        progress = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        shape = 1 - progress if o.schedule == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return o.min_lr_ratio + (1 - o.min_lr_ratio) * shape

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _epoch_batches(examples, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Micro-batches of one epoch: same-size examples together, order fixed by (seed, epoch)."""
    rng = random.Random(f"{seed}/{epoch}")
    by_size: dict = {}
    for i, ex in enumerate(examples):
        by_size.setdefault(ex.size, []).append(i)
    batches = []
    for size in sorted(by_size):
        idx = by_size[size]
        rng.shuffle(idx)
        batches += [idx[k : k + batch_size] for k in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


class _Schedule:
    """Which micro-batches each process takes at each step (the epoch's order is built once)."""

    def __init__(self, examples, batch_size: int, grad_accum: int, world: int, seed: int):
        self.examples, self.batch_size, self.seed = examples, batch_size, seed
        self.grad_accum, self.per_step = grad_accum, world * grad_accum
        self.per_epoch = len(_epoch_batches(examples, batch_size, seed, 0)) // self.per_step
        self._epoch = (None, [])

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        epoch, within = divmod(step, self.per_epoch)
        if self._epoch[0] != epoch:
            self._epoch = (epoch, _epoch_batches(self.examples, self.batch_size, self.seed, epoch))
        batches = self._epoch[1][within * self.per_step : (within + 1) * self.per_step]
        return batches[rank * self.grad_accum : (rank + 1) * self.grad_accum]


def _total_steps(r: Recipe, schedule: _Schedule, world: int) -> int:
    if schedule.per_epoch < 1:
        raise UsageError(
            f"dataset of {len(schedule.examples)} examples is too small for batch size "
            f"{r.train.batch_size} x {r.train.grad_accum} accumulation x {world} process(es)"
        )
    if r.train.max_steps:
        return r.train.max_steps
    if r.train.epochs:
        return r.train.epochs * schedule.per_epoch
    raise UsageError("set [train] max_steps or epochs")


def _step(
    r: Recipe, acc, transformer, optimizer, scheduler, params, examples, schedule: _Schedule, empty, step: int
) -> float:
    import torch

    losses = []
    for micro, batch in enumerate(schedule.micro_batches(step, acc.process_index)):
        gen = torch.Generator().manual_seed(hash((r.train.seed, step, acc.process_index, micro)) % 2**63)
        loss_of = _distill_batch if r.train.objective == "distill" else _sft_batch
        loss_fn = loss_of(r, acc, [examples[i] for i in batch], empty, gen)
        with acc.accumulate(transformer), acc.autocast(), _activations_kept(r.train):
            loss = loss_fn(transformer)
            acc.backward(loss)
            if acc.sync_gradients and r.optim.grad_clip > 0:
                acc.clip_grad_norm_(params, r.optim.grad_clip)
            optimizer.step()
            optimizer.zero_grad()
        losses.append(loss.detach())
    scheduler.step()
    mean = torch.stack(losses).mean()
    return float(acc.gather(mean.reshape(1)).mean())


def _sft_batch(r: Recipe, acc, batch: list, empty, gen):
    """The flow-matching loss of a micro-batch, as a function of the transformer; the batch's
    random draws (caption dropout, sigmas, noise) are made now, from `gen`."""
    import torch

    from llmdit_cli.train.cache import load_embeds, load_latents
    from llmdit_cli.train.objective import flow_loss, loss_weights, sample_sigmas

    t = r.train
    x0 = torch.stack([load_latents(ex.latents) for ex in batch]).to(acc.device)
    drop = torch.rand(len(batch), generator=gen) < r.data.caption_dropout
    embeds = [load_embeds(empty if d and empty else ex.embeds).to(acc.device) for ex, d in zip(batch, drop.tolist())]
    sigmas = sample_sigmas(len(batch), t.timestep_sampling, gen, t.shift, t.logit_mean, t.logit_std)
    noise = torch.randn(x0.shape, generator=gen).to(acc.device)
    weights = loss_weights(sigmas, t.loss_weighting, t.weighting_center, t.weighting_width)
    return lambda model: flow_loss(model, x0, embeds, sigmas.to(acc.device), noise, weights)


def _distill_batch(r: Recipe, acc, batch: list, empty, gen):
    """The distillation loss of a micro-batch of trajectory states, as a function of the student."""
    import torch

    from llmdit_cli.train.cache import load_embeds
    from llmdit_cli.train.distill import load_step
    from llmdit_cli.train.objective import loss_weights, prediction_loss

    t = r.train
    x, timesteps, targets = (
        torch.stack(part).to(acc.device) for part in zip(*(load_step(s.file, s.step) for s in batch))
    )
    embeds = [load_embeds(s.embeds).to(acc.device) for s in batch]
    weights = loss_weights(1 - timesteps.cpu(), t.loss_weighting, t.weighting_center, t.weighting_width)
    return lambda model: prediction_loss(model, x, timesteps, embeds, targets, weights)


def _activations_kept(t):
    """Where saved activations wait for backward: on the device, or in CPU memory with
    `gradient_checkpointing_offload` (torch's `save_on_cpu`; with checkpointing, only the blocks'
    inputs are saved)."""
    from contextlib import nullcontext

    import torch

    if not t.gradient_checkpointing_offload:
        return nullcontext()
    return torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available())


class _Ema:
    def __init__(self, params, decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    def update(self, params) -> None:
        import torch

        with torch.no_grad():
            for s, p in zip(self.shadow, params):
                s.lerp_(p.detach(), 1 - self.decay)

    def state(self) -> dict:
        return {str(i): s.contiguous() for i, s in enumerate(self.shadow)}

    def load(self, state: dict) -> None:
        for i, s in enumerate(self.shadow):
            s.copy_(state[str(i)])


class _StopFlag:
    """SIGINT / SIGTERM ask the loop to save a checkpoint and stop after the current step."""

    def __init__(self):
        self.hit = False
        self._old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread
                pass

    def _handler(self, signum, frame) -> None:
        self.hit = True

    def check(self, acc) -> bool:
        if acc.num_processes == 1:
            return self.hit
        import torch

        flag = torch.tensor([1.0 if self.hit else 0.0], device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _check_ranks_in_sync(run: Run, acc, params) -> None:
    """Every process must end with the same weights; `ranks.json` records each one's checksum."""
    import hashlib

    from accelerate.utils import gather_object

    digest = hashlib.sha256()
    for p in params:
        digest.update(p.detach().float().cpu().numpy().tobytes())
    sums = gather_object([(acc.process_index, digest.hexdigest()[:16])])
    if acc.is_main_process:
        (run.output / "ranks.json").write_text(json.dumps(dict((str(i), h) for i, h in sums)))
        if len({h for _, h in sums}) > 1:
            raise LlmditError(f"processes ended with different weights ({run.output / 'ranks.json'})")


# -- checkpoints, validation, result ---------------------------------------------------------------


def _checkpoints(output: Path) -> list[Path]:
    return sorted((output / CHECKPOINTS).glob("step-*"), key=lambda p: int(p.name.split("-")[1]))


def _save_checkpoint(run: Run, acc, step: int, ema) -> None:
    """Weights (a LoRA run: only the adapters, not the frozen base, which would be ~24 GB in
    float32 for Z-Image), optimiser, schedule and RNG states, as safetensors and JSON."""
    from llmdit_cli.train import checkpoint

    path = run.output / CHECKPOINTS / f"step-{step:06d}"
    acc.wait_for_everyone()
    checkpoint.save(path, acc, *run.parts, trainable_only=run.recipe.method == "lora")
    acc.wait_for_everyone()
    if acc.is_main_process:
        from safetensors.torch import save_file

        from llmdit_cli.artifacts import give_usual_modes

        (path / "trainer.json").write_text(json.dumps({"step": step, "fingerprint": run.recipe.fingerprint()}))
        (path / "recipe.resolved.toml").write_text(run.recipe.to_toml())
        if ema is not None:
            save_file(ema.state(), str(path / "ema.safetensors"))
        give_usual_modes(path)
        for old in _checkpoints(run.output)[: -run.recipe.output.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
    acc.wait_for_everyone()


def _resume(run: Run, acc, ema) -> int:
    ckpts = _checkpoints(run.output)
    if not ckpts:
        raise InputError(f"--resume: no checkpoint in {run.output / CHECKPOINTS}")
    latest = ckpts[-1]
    try:
        meta = json.loads((latest / "trainer.json").read_text())
    except (OSError, json.JSONDecodeError):
        raise InputError(f"--resume: {latest} is not a complete checkpoint (no trainer.json)") from None
    if meta.get("fingerprint") != run.recipe.fingerprint():
        raise InputError(
            f"--resume: {latest} was made by another recipe (model, data, method or training "
            f"settings differ); use the same recipe or another --output"
        )
    from llmdit_cli.train import checkpoint

    # LoRA checkpoints hold only the trained weights; they load over the base the run loaded.
    checkpoint.load(latest, acc, *run.parts, trainable_only=run.recipe.method == "lora")
    if ema is not None and (latest / "ema.safetensors").is_file():
        from safetensors.torch import load_file

        ema.load(load_file(str(latest / "ema.safetensors")))
    if acc.is_main_process:
        run.log(f"resuming from {latest} (step {meta['step']})")
    return int(meta["step"])


def _validation_images(run: Run, acc, transformer, handle, extra: dict, step: int) -> None:
    """Validation images of the transformer being trained (distillation: at guidance 0, beside
    the teacher's)."""
    if not acc.is_main_process:
        return
    r = run.recipe
    folder = run.output / "validation"
    folder.mkdir(parents=True, exist_ok=True)
    images = _images(r, handle, acc.unwrap_model(transformer), extra, r.validation.guidance_scale or 0.0, "")
    for i, image in enumerate(images):
        if run.teacher_images:
            image = _side_by_side(run.teacher_images[i], image)
        image.save(folder / f"step-{step:06d}_{i:02d}.png")


def _images(r: Recipe, handle, model, extra: dict, guidance: float, negative: str) -> list:
    """The validation prompts' images by `model`, made by the engine from the cached captions
    (the text encoder was released after caching)."""
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import Engine
    from llmdit_cli.train.data import pick_bucket
    from llmdit_cli.train.distill import evaluating

    v = r.validation
    side, _ = pick_bucket(1, 1, r.data.resolution, False, handle.limits().size_multiple)  # a size it makes
    settings = resolve_defaults(
        {
            "model": handle.ref,
            "steps": v.steps or (r.distill.steps if r.train.objective == "distill" else None),
            "guidance_scale": guidance,
            "height": v.height or side,
            "width": v.width or side,
        }
    )
    engine = Engine()
    engine.adopt(handle, settings)
    device = next(model.parameters()).device
    images = []
    with evaluating(model):
        for prompt in v.prompts:
            images.append(_image(engine, settings, model, extra, prompt, negative, device, v.seed))
    return images


def _image(engine, settings, model, extra: dict, prompt: str, negative: str, device, seed: int):
    from llmdit_cli.engine import GenerateRequest
    from llmdit_cli.train.cache import load_embeds
    from llmdit_cli.workflows import Embeds

    cond, uncond = load_embeds(extra[prompt]).to(device), load_embeds(extra[negative]).to(device)
    meta = {"prompts": [prompt], "negative_prompts": [negative]}
    embeds = Embeds([cond], [uncond], meta, int(cond.shape[-1]), source="training cache")
    request = GenerateRequest(settings, seeds=[seed], embeds=embeds)
    return engine.generate(request, transformer=model)[0].image


def _side_by_side(left, right):
    from PIL import Image

    out = Image.new("RGB", (left.width + right.width, max(left.height, right.height)), "white")
    out.paste(left, (0, 0))
    out.paste(right, (left.width, 0))
    return out


def _save_result(run: Run, acc, transformer, handle, ema) -> Path:
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return run.output
    model = acc.unwrap_model(transformer)
    if ema is not None:
        params = [p for p in model.parameters() if p.requires_grad]
        for p, s in zip(params, ema.shadow):
            p.data.copy_(s)
    if run.recipe.assistant_lora:
        from llmdit_cli.train.assistant import unmerge_assistant

        unmerge_assistant(model)
    if run.recipe.method == "lora":
        result = _save_lora(run, model, handle.family.lora_code())
    else:
        result = _save_pipeline(model, handle.folder, run.output / "model")
    run.log(f"saved {result}")
    return result


def _save_lora(run: Run, model, keys) -> Path:
    """The portable LoRA file: alpha/rank folded into lora_B and alpha = rank stated, so diffusers,
    ComfyUI and `--lora` all apply the trained strength; the trained rank and alpha are recorded."""
    from peft.utils import get_peft_model_state_dict

    lora_cfg = run.recipe.lora
    lora = keys.from_peft_state(get_peft_model_state_dict(model), lora_cfg.rank, lora_cfg.alpha)
    result = run.output / LORA_FILE
    keys.write_lora(
        lora,
        result,
        "diffusers",
        {
            "rank": lora_cfg.rank,
            "alpha": lora_cfg.alpha,
            "folded_scale": lora_cfg.alpha / lora_cfg.rank,
            "targets": list(lora_cfg.targets),
            "trained_by": "llmdit train",
        },
    )
    return result


def _save_pipeline(transformer, base: Path, target: Path, copy_limit: int = 64 << 20) -> Path:
    """A complete diffusers folder: the trained transformer plus the base model's other components
    (copied when small, linked when large so a 6B run does not duplicate its text encoder)."""
    from llmdit_cli.artifacts import give_usual_modes

    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
    shutil.copy(base / "model_index.json", tmp / "model_index.json")
    for comp in base.iterdir():
        if comp.is_dir() and comp.name != "transformer" and not comp.name.startswith("."):
            size = sum(f.stat().st_size for f in comp.rglob("*") if f.is_file())
            if size <= copy_limit:
                shutil.copytree(comp, tmp / comp.name, symlinks=False)
            else:
                (tmp / comp.name).symlink_to(comp.resolve(), target_is_directory=True)
    give_usual_modes(tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
