"""Guidance distillation (`train.objective = "distill"`): the student learns to give, in one pass
at guidance 0, the prediction the teacher gives with classifier-free guidance at
`distill.guidance_scale` (its conditional and unconditional passes combined by the family's own
guiders: negative prompt, CFG truncation and normalisation as `generate` runs them).

It learns where it will be asked: on the states of the teacher's own sampling trajectories, at the
timesteps of the schedule users run (`distill.steps`, the family's default steps). Random sigmas
on noised images would train it on states a sampler never visits at those steps.

Each trajectory (one prompt, one seed) is sampled once, before training, and kept in the training
cache as a safetensors file (states, timesteps, guided predictions), named by everything that
shapes it; a resumed or repeated run reads it back. The teacher is the model being trained as it
is before training (a LoRA run: the base without its adapter), or `distill.teacher`.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from llmdit_cli.errors import UsageError
from llmdit_cli.train.data import cache_key

TEACHER_BATCH = 8  # trajectories sampled per teacher call


@dataclass
class State:
    """One training example: step `step` of the trajectory in `file`, for the prompt `embeds`."""

    file: Path
    step: int
    embeds: Path
    size: tuple[int, int]  # (width, height)


@dataclass
class Teacher:
    settings: object  # the prepared plan the teacher samples with (`config.Resolved`)
    negative: str  # the family's negative prompt, encoded with the captions
    handle: object = None  # `--teacher`'s model (None: the model being trained)

    def identity(self, r, student) -> dict:
        if self.handle is not None:
            return {"model": self.handle.identity("transformer")}
        return {"model": student.identity("transformer"), "assistant": _file_digest(r.assistant_lora)}


def _file_digest(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return path
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def teacher_plan(r, handle):
    """The teacher's generation settings: the family's defaults at the distillation's steps,
    guidance and size, filled as `generate` fills them."""
    from llmdit_cli.config import resolve_defaults
    from llmdit_cli.engine import Engine, GenerateRequest
    from llmdit_cli.train.data import pick_bucket

    # The square side at `resolution`, as without buckets, on the grid the model generates at.
    side, _ = pick_bucket(1, 1, r.data.resolution, False, handle.limits().size_multiple)
    flags = {"model": handle.ref, "guidance_scale": r.distill.guidance_scale, "height": side, "width": side}
    flags["steps"] = r.distill.steps
    settings = resolve_defaults(flags)
    engine = Engine()
    engine.adopt(handle, settings)
    prepared = engine.prepare(GenerateRequest(settings, seeds=[0], prompts=[""])).settings
    other = None
    if r.distill.teacher:
        from llmdit_cli.models import ModelHandle

        other = ModelHandle(r.distill.teacher, key="teacher")  # its errors name --teacher
        check_teacher(handle, other)
    return Teacher(prepared, prepared.generation.negative_prompt or "", other)


def trajectory_seed(seed: int, prompt: str, k: int) -> int:
    return int(hashlib.sha256(f"{seed}/{k}/{prompt}".encode()).hexdigest()[:15], 16)


def states(
    r, handle, teacher: Teacher, model_of, prompts: dict[str, Path], negative: Path, cache: Path, log, share=(0, 1)
):
    """Every state of every teacher trajectory. Those the cache lacks are sampled, this process
    taking its `share` (rank, processes) of them with `model_of()` (loaded only if it has any);
    the caller waits for every process before the states are read."""
    g = teacher.settings.generation
    size = (g.width, g.height)
    key = _teacher_key(r, handle, teacher)
    jobs = [
        (prompt, path, trajectory_seed(r.train.seed, prompt, k))
        for prompt, path in prompts.items()
        for k in range(r.distill.trajectories)
    ]
    files = {job: cache / "trajectories" / f"{cache_key(key, job[1].name, job[2])}.safetensors" for job in jobs}
    todo = [job for job in jobs if not files[job].is_file()]
    if todo:
        log(
            f"sampling {len(todo)} teacher trajectories (guidance {r.distill.guidance_scale:g}, "
            f"{g.steps} steps) into {cache / 'trajectories'}"
        )
    # Shares by place among all the jobs, not among those missing: what is missing changes while
    # the other processes write.
    missing = set(todo)
    mine = [job for job in jobs[share[0] :: share[1]] if job in missing]
    if mine:
        _sample(handle, teacher, model_of(), mine, files, negative)
    return [State(files[job], i, job[1], size) for job in jobs for i in range(g.steps)]


def _teacher_key(r, handle, teacher: Teacher) -> dict:
    """Everything that shapes a trajectory but its prompt and seed."""
    g = teacher.settings
    return {
        "teacher": teacher.identity(r, handle),
        "generation": g.generation.model_dump(mode="json", exclude={"batch_size"}),
        "scheduler": g.scheduler.model_dump(mode="json"),
        # The sampler is the student's scheduler: its config sets the shift where settings leave it.
        "scheduler_config": handle.component_config("scheduler"),
    }


def _sample(handle, teacher: Teacher, model, todo: list, files: dict, negative: Path) -> None:
    from llmdit_cli.artifacts import write_bytes_atomic
    from llmdit_cli.train.cache import load_embeds
    from llmdit_cli.workflows.jobs import generator

    g = teacher.settings.generation
    p = handle.code.denoise_params(teacher.settings.settings, handle.limits())
    device = next(model.parameters()).device
    neg = load_embeds(negative).to(device)
    with handle.using_transformer(model), evaluating(model):
        pipe = handle.pipeline("vae", "scheduler")
        for start in range(0, len(todo), TEACHER_BATCH):
            chunk = todo[start : start + TEACHER_BATCH]
            cond = [load_embeds(path).to(device) for _, path, _ in chunk]
            gens = [generator(seed) for _, _, seed in chunk]
            x, t, v = handle.code.trajectory(pipe, cond, [neg] * len(chunk), p, g.height, g.width, gens)
            for b, job in enumerate(chunk):
                tensors = {"states": x[b].contiguous(), "timesteps": t[b].contiguous(), "targets": v[b].contiguous()}
                write_bytes_atomic(str(files[job]), _safetensors(tensors))


def _safetensors(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"kind": "llmdit-teacher-trajectory"})


@contextmanager
def evaluating(model):
    """`model` in eval mode for the block, back in the mode it was in after (whatever happens)."""
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


@contextmanager
def as_teacher(model, method: str):
    """The model being trained as the default teacher: a LoRA run's adapter switched off."""
    if method != "lora":
        yield model
        return
    model.disable_adapters()
    try:
        yield model
    finally:
        model.enable_adapters()


def check_teacher(handle, teacher):
    """Another teacher must read the same embeddings and make the same latents as the student."""
    if teacher.family.name != handle.family.name:
        raise UsageError(f"--teacher {teacher.ref}: a {teacher.family.name} model; the student is {handle.family.name}")
    for part in ("text_encoder", "vae"):
        mine = {k: v for k, v in handle.identity(part).items() if k.startswith(part)}
        theirs = {k: v for k, v in teacher.identity(part).items() if k.startswith(part)}
        if mine != theirs:
            raise UsageError(
                f"--teacher {teacher.ref}: its {part.replace('_', ' ')} differs from {handle.ref}'s; "
                f"distillation needs the student's embeddings and latents"
            )


@lru_cache(maxsize=1024)
def load_step(path: Path, step: int) -> tuple:
    """One step of a cached trajectory: (state [C, h, w], DiT timestep [], guided prediction
    [C, h, w]), read alone (a file holds every step; at 1024 px each is megabytes)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return tuple(f.get_slice(name)[step : step + 1][0] for name in ("states", "timesteps", "targets"))
