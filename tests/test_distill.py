"""`llmdit train --objective distill`: guidance distillation on the demo, from prompts alone."""

import json
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error
from PIL import Image

PROMPTS = ["a red circle on a blue background", "a green square on a white background"]
GUIDANCE = 4.0


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n\n")  # a blank line is no prompt
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One training cache for the module's runs: trajectories are sampled once."""
    return tmp_path_factory.mktemp("distill-cache")


def distill_args(data, out, cache, *extra):
    return [
        "train", "--model", "demo", "--objective", "distill", "--dataset", data, "--resolution", 32,
        "--teacher-guidance-scale", GUIDANCE, "--trajectories", 2, "--batch-size", 4,
        "--cache-dir", cache, "-o", out, "-q", *extra,
    ]  # fmt: skip


def latents_of(path):
    from llmdit_cli.artifacts import read_stage

    return read_stage(str(path)).tensors()["latents"]


def trajectory_files(cache) -> list[Path]:
    return sorted((Path(cache) / "trajectories").glob("*.safetensors"))


def test_trajectories_are_the_teachers_own_sampling(cli, prompts, cache):
    """Each cached trajectory is `generate` at the teacher's guidance, step for step: its states
    follow from its guided predictions by the scheduler's Euler steps, and the last step lands on
    the latents `generate --guidance-scale 4` makes for the trajectory's seed."""
    from safetensors.torch import load_file

    from llmdit_cli.train.distill import trajectory_seed

    r = cli(*distill_args(prompts, "c", cache, "--cache-only"))
    assert r.code == 0, r.stderr
    files = trajectory_files(cache)
    assert len(files) == len(PROMPTS) * 2
    seed = trajectory_seed(0, PROMPTS[0], 1)
    gen = ["generate", PROMPTS[0], "--model", "demo", "--seed", seed, "--guidance-scale", GUIDANCE]
    assert cli(*gen, "--save-latents", "teacher.lat", "-o", "teacher.png").code == 0
    final = latents_of("teacher.lat")[0]
    matches = []
    for f in files:
        t = load_file(str(f))
        x, sigmas, v = t["states"], 1 - t["timesteps"], t["targets"]
        assert x.shape[0] == 2  # the demo's default steps
        nxt = torch.cat([sigmas[1:], torch.zeros(1)])
        stepped = x + (nxt - sigmas).view(-1, 1, 1, 1) * -v
        assert torch.allclose(stepped[:-1], x[1:], atol=1e-5)
        matches.append(float((stepped[-1] - final).abs().max()))
    assert min(matches) < 1e-4 and sorted(matches)[1] > 1e-2, matches
    # a second run samples nothing again
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert cli(*distill_args(prompts, "c", cache, "--cache-only")).code == 0
    assert [f.stat().st_mtime_ns for f in trajectory_files(cache)] == mtimes


def test_distilled_student_at_guidance_0_is_closer_to_the_teacher(cli, prompts, cache):
    extra = ["--rank", 8, "--lr", 3e-3, "--max-steps", 60, "--validation-prompt", PROMPTS[0]]
    r = cli(*distill_args(prompts, "run", cache, *extra))
    assert r.code == 0, r.stderr
    lora = Path("run/pytorch_lora_weights.safetensors")
    common = [PROMPTS[1], "--model", "demo", "--seed", 7]  # a seed no trajectory used
    assert cli("generate", *common, "--guidance-scale", GUIDANCE, "--save-latents", "t.lat", "-o", "t.png").code == 0
    assert cli("generate", *common, "--save-latents", "b.lat", "-o", "b.png").code == 0
    assert cli("generate", *common, "--lora", lora, "--save-latents", "s.lat", "-o", "s.png").code == 0
    teacher, base, student = (latents_of(f"{n}.lat")[0] for n in "tbs")
    before, after = (base - teacher).pow(2).mean(), (student - teacher).pow(2).mean()
    assert after < 0.7 * before, (before, after)
    # validation: the teacher (left) and the student at guidance 0 (right), side by side
    shot = Image.open("run/validation/step-000060_00.png")
    assert shot.size == (64, 32)
    saved = Path("run/recipe.resolved.toml").read_text()
    assert 'objective = "distill"' in saved and "guidance_scale = 4.0" in saved
    losses = [json.loads(line)["loss"] for line in Path("run/losses.jsonl").read_text().splitlines()]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_distillation_resumes_exactly(cli, prompts, cache):
    common = ["--method", "full", "--lr", 1e-3, "--max-steps", 6, "--checkpoint-every", 100]
    assert cli(*distill_args(prompts, "straight", cache, *common)).code == 0
    assert cli(*distill_args(prompts, "split", cache, *common, "--stop-at", 3)).code == 0
    r = cli(*distill_args(prompts, "split", cache, *common, "--resume"))
    assert r.code == 0, r.stderr
    losses = [Path(f"{run}/losses.jsonl").read_text() for run in ("straight", "split")]
    assert losses[0] == losses[1] and len(losses[0].splitlines()) == 6


def test_another_teacher_folder(cli, prompts, cache, tiny_model):
    """`--teacher` names the teacher; the demo's own folder gives the default teacher's
    trajectories. A teacher that reads other embeddings is refused before anything samples."""
    from safetensors.torch import load_file

    from llmdit_cli.models import DEMO_PATH

    assert cli(*distill_args(prompts, "own", cache, "--cache-only")).code == 0
    before = set(trajectory_files(cache))
    r = cli(*distill_args(prompts, "other", cache, "--cache-only", "--teacher", DEMO_PATH))
    assert r.code == 0, r.stderr
    new = sorted(set(trajectory_files(cache)) - before)
    assert len(new) == len(PROMPTS) * 2  # another teacher is another cache entry
    own = {tuple(load_file(str(f))["states"].flatten()[:4].tolist()): load_file(str(f)) for f in before}
    for f in new:
        t = load_file(str(f))
        ref = own[tuple(t["states"].flatten()[:4].tolist())]
        assert torch.equal(t["targets"], ref["targets"])
    r = cli(*distill_args(prompts, "bad", cache, "--teacher", tiny_model))
    assert_one_line_error(r, f"--teacher {tiny_model}", "text encoder differs")
    assert not Path("bad/checkpoints").exists()


def test_prompts_only_data(tmp_path):
    from llmdit_cli.errors import InputError
    from llmdit_cli.train.data import load_prompts

    (tmp_path / "p.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "a"}\n')
    assert load_prompts(str(tmp_path / "p.jsonl")) == ["a", "b"]
    (tmp_path / "p.csv").write_text("text,other\nx,1\ny,2\n")
    assert load_prompts(str(tmp_path / "p.csv")) == ["x", "y"]
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "metadata.jsonl").write_text('{"file_name": "gone.png", "text": "z"}\n')
    assert load_prompts(str(folder)) == ["z"]  # images are not read, nor needed
    (tmp_path / "list.json").write_text('["a cat", "a dog"]')
    assert load_prompts(str(tmp_path / "list.json")) == ["a cat", "a dog"]
    for name, body, message in [
        ("e.txt", "\n \n", "holds no prompts"),
        ("n.jsonl", '{"caption": "a"}\n', "no 'text' column"),
        ("s.json", '"a cat"', "not a list of rows"),
    ]:
        (tmp_path / name).write_text(body)
        with pytest.raises(InputError, match=message):
            load_prompts(str(tmp_path / name))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--teacher-guidance-scale", 0], "--teacher-guidance-scale 0.0: must be greater than 0"),
        (["--trajectories", 0], "--trajectories 0: must be greater than or equal to 1"),
        (["--objective", "teach"], "--objective teach: Input should be 'sft' or 'distill'"),
    ],
)
def test_bad_distillation_settings(cli, prompts, extra, message):
    r = cli(*distill_args(prompts, "bad", "cache", *extra))
    assert_one_line_error(r, message)


def test_distillation_settings_without_distillation_and_prompts_without_it(cli, prompts):
    base = ["train", "--model", "demo", "--dataset", prompts, "-o", "bad", "-q"]
    assert_one_line_error(cli(*base, "--teacher", "demo"), "[distill]", "--objective distill")
    assert_one_line_error(cli(*base), "prompts.txt", "for --objective distill")
    assert not Path("bad").exists()


def test_missing_prompts_file(cli):
    r = cli(*distill_args("nowhere.txt", "bad", "cache"))
    assert_one_line_error(r, "nowhere.txt", "no such prompts file")


def test_a_missing_teacher_is_named_as_the_teacher(cli, prompts):
    r = cli(*distill_args(prompts, "bad", "cache", "--teacher", "no/such-folder-here"))
    assert_one_line_error(r, "--teacher no/such-folder-here")
    assert "--model" not in r.stderr
    assert not Path("bad").exists()  # nothing written, not even the output folder


def test_a_resolution_off_the_size_grid_distils_at_the_grid_below(cli, prompts, tmp_path):
    """As a square bucket does: 40 px samples (and validates) at 32, the demo's grid being 16."""
    extra = ["--resolution", 40, "--max-steps", 1, "--validation-prompt", PROMPTS[0]]
    r = cli(*distill_args(prompts, "grid", tmp_path / "own-cache", *extra))
    assert r.code == 0, r.stderr
    from safetensors.torch import load_file

    shapes = {tuple(load_file(str(f))["states"].shape) for f in trajectory_files(tmp_path / "own-cache")}
    assert shapes == {(2, 16, 16, 16)}  # 32 px: the demo's latents are half the side
    assert Image.open("grid/validation/step-000001_00.png").size == (64, 32)


def test_the_demo_distillation_recipe_runs_shortened(prompts, tmp_path):
    """recipes/demo-distill.toml as shipped (its LoRA targets included), for two steps."""
    from contextlib import contextmanager

    from llmdit_cli.train.loop import Run, train
    from llmdit_cli.train.recipe import load_recipe

    @contextmanager
    def no_progress(description, total):
        yield lambda step, loss=None, lr=None: None

    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo-distill.toml"
    overrides = {
        "data.path": str(prompts),
        "data.cache_dir": str(tmp_path / "cache"),
        "distill.trajectories": 1,
        "train.max_steps": 2,
        "train.batch_size": 2,
        "validation.prompts": [],
    }
    r = load_recipe(str(recipe), overrides)
    assert r.train.objective == "distill" and r.method == "lora"
    result = train(Run(r, tmp_path / "run", lambda m: None, no_progress))
    assert result == tmp_path / "run" / "pytorch_lora_weights.safetensors" and result.is_file()


def test_two_processes_distil_once_and_end_identical(prompts, tmp_path):
    """Under torchrun the first rank samples the trajectories and the second reads them; only the
    first reports; both end with the same weights."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29527"]
    args = distill_args(prompts, tmp_path / "ddp", tmp_path / "cache", "--max-steps", 3, "--json")
    args = [str(a) for a in args if a != "-q"]
    r = subprocess.run([*launch, "-m", "llmdit_cli", *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("sampling 4 teacher trajectories") == 1, r.stderr[-3000:]
    assert len(trajectory_files(tmp_path / "cache")) == len(PROMPTS) * 2
    assert [json.loads(line)["kind"] for line in r.stdout.splitlines()] == ["lora"], r.stdout
    sums = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert len(sums) == 2 and sums["0"] == sums["1"]
