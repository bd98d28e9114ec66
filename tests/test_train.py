"""`llmdit train`: LoRA and full fine-tuning on tiny real models, resume, processes, bad input."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, max_diff
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TARGETS = [
    "--target",
    "to_q",
    "--target",
    "to_k",
    "--target",
    "to_v",
    "--target",
    "to_out.0",
    "--target",
    "w1",
    "--target",
    "w2",
    "--target",
    "w3",
]


@pytest.fixture(scope="module")
def red_data(tmp_path_factory):
    """Eight near-identical red images captioned 'a red square'."""
    folder = tmp_path_factory.mktemp("red")
    rows = []
    for i in range(8):
        Image.new("RGB", (32, 32), (200 + 5 * i, 20, 20)).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "a red square"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def train_args(data, out, *extra):
    return [
        "train",
        "--model",
        "demo",
        "--dataset",
        data,
        "--resolution",
        32,
        "--batch-size",
        4,
        "-o",
        out,
        "-q",
        *extra,
    ]


def latents_of(path):
    from llmdit_cli.artifacts import read_stage

    return read_stage(str(path)).tensors()["latents"]


def cached_latents(data):
    return torch.stack([latents_of(p)[0] for p in (Path(data) / ".llmdit-cache" / "latents").glob("*")])


def test_lora_moves_generation_towards_training_images(cli, red_data):
    r = cli(*train_args(red_data, "run", "--rank", 8, "--alpha", 8, *TARGETS, "--lr", 1e-2, "--max-steps", 300))
    assert r.code == 0, r.stderr
    lora = Path("run/pytorch_lora_weights.safetensors")
    assert r.stdout.strip() == str(lora)
    common = ["a red square", "--model", "demo", "-W", 32, "-H", 32, "--seed", 1, "--steps", 4]
    assert cli("generate", *common, "--lora", lora, "--save-latents", "with.lat", "-o", "with.png").code == 0
    assert cli("generate", *common, "--save-latents", "without.lat", "-o", "without.png").code == 0
    target = cached_latents(red_data).mean(0)
    err_with = (latents_of("with.lat")[0] - target).pow(2).mean()
    err_without = (latents_of("without.lat")[0] - target).pow(2).mean()
    assert err_with < 0.9 * err_without, (err_with, err_without)
    # the file is a diffusers LoRA: stock load_lora_weights gives the same image
    from diffusers import ZImagePipeline
    from helpers import as_array

    from llmdit_cli.models import DEMO_PATH

    pipe = ZImagePipeline.from_pretrained(DEMO_PATH, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora))
    ref = pipe(
        "a red square",
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(1),
    ).images[0]
    assert max_diff("with.png", as_array(ref)) <= 1
    saved = (Path("run") / "recipe.resolved.toml").read_text()
    assert 'method = "lora"' in saved and "rank = 8" in saved


def test_full_training_result_loads_in_stock_and_as_model(cli, red_data):
    r = cli(
        *train_args(
            red_data, "full", "--method", "full", "--lr", 1e-3, "--max-steps", 30, "--validation-prompt", "a red square"
        )
    )
    assert r.code == 0, r.stderr
    model = Path("full/model")
    assert (model / "model_index.json").is_file() and (model / "transformer" / "config.json").is_file()
    assert sorted(p.name for p in Path("full/validation").iterdir()) == ["step-000030_00.png"]
    from diffusers import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    ref = pipe(
        "a red square",
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(2),
    ).images[0]
    from helpers import as_array

    # --model accepts the run folder itself
    assert (
        cli(
            "generate", "a red square", "--model", "full", "-W", 32, "-H", 32, "--seed", 2, "--steps", 4, "-o", "a.png"
        ).code
        == 0
    )
    assert max_diff("a.png", as_array(ref)) <= 1
    assert cli("generate", "a red square", "--model", "demo", "-W", 32, "-H", 32, "--seed", 2, "-o", "b.png").code == 0
    assert max_diff("a.png", "b.png") > 1  # training changed the model


def test_resume_is_exact(cli, red_data):
    common = ["--method", "full", "--lr", 1e-3, "--max-steps", 8, "--checkpoint-every", 100]
    assert cli(*train_args(red_data, "straight", *common)).code == 0
    r = cli(*train_args(red_data, "split", *common, "--stop-at", 3))
    assert r.code == 0, r.stderr
    assert [p.name for p in Path("split/checkpoints").iterdir()] == ["step-000003"]
    assert not Path("split/model").exists()
    again = cli(*train_args(red_data, "split", *common))
    assert_one_line_error(again, "already holds a run", "--resume")
    r = cli(*train_args(red_data, "split", *common, "--resume"))
    assert r.code == 0, r.stderr
    losses = [
        [json.loads(line) for line in Path(f"{run}/losses.jsonl").read_text().splitlines()]
        for run in ("straight", "split")
    ]
    assert losses[0] == losses[1]
    from safetensors.torch import load_file

    a = load_file("straight/model/transformer/diffusion_pytorch_model.safetensors")
    b = load_file("split/model/transformer/diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_checkpoints_hold_the_adapter_and_resume_exactly(cli, red_data):
    from safetensors import safe_open
    from safetensors.torch import load_file

    common = ["--method", "lora", "--lr", 1e-3, "--max-steps", 6, "--checkpoint-every", 100]
    assert cli(*train_args(red_data, "straight", *common)).code == 0
    r = cli(*train_args(red_data, "split", *common, "--stop-at", 3))
    assert r.code == 0, r.stderr
    with safe_open("split/checkpoints/step-000003/model.safetensors", "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)  # not the frozen base
    r = cli(*train_args(red_data, "split", *common, "--resume"))
    assert r.code == 0, r.stderr
    losses = [Path(f"{run}/losses.jsonl").read_text() for run in ("straight", "split")]
    assert losses[0] == losses[1]
    from llmdit_cli.train.loop import LORA_FILE

    a, b = (load_file(str(Path(run) / LORA_FILE)) for run in ("straight", "split"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_auto_is_one_command_line_for_every_start(cli, red_data):
    """A requeued job runs the same command each time: on an empty folder it starts, after a
    stop it continues, and the result is the straight run's (issue 26, item 2)."""
    from safetensors.torch import load_file

    common = ["--method", "lora", "--lr", 1e-3, "--max-steps", 6, "--checkpoint-every", 100]
    assert cli(*train_args(red_data, "straight", *common)).code == 0
    for stop in (3, 6):
        r = cli(*train_args(red_data, "requeued", *common, "--stop-at", stop, "--resume", "auto"))
        assert r.code == 0, r.stderr
    from llmdit_cli.train.loop import LORA_FILE

    a, b = (load_file(str(Path(run) / LORA_FILE)) for run in ("straight", "requeued"))
    assert a.keys() == b.keys() and max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_checkpoints_hold_no_pickles_and_refuse_one(cli, red_data):
    """Issue 26, item 4: safetensors and JSON only; a pickle in a checkpoint is refused, not loaded."""
    common = ["--method", "full", "--lr", 1e-3, "--max-steps", 4, "--checkpoint-every", 100]
    r = cli(*train_args(red_data, "ck", *common, "--stop-at", 2))
    assert r.code == 0, r.stderr
    folder = Path("ck/checkpoints/step-000002")
    suffixes = {p.suffix for p in folder.iterdir()}
    assert suffixes <= {".safetensors", ".json", ".toml"}, suffixes
    (folder / "random_states_0.pkl").write_bytes(b"\x80\x04N.")
    r = cli(*train_args(red_data, "ck", *common, "--resume"))
    assert_one_line_error(r, "random_states_0.pkl", "pickle")
    (folder / "random_states_0.pkl").unlink()
    for name, data in (("EVIL.PKL", b"not a pickle header"), ("state", b"\x80\x04N."), ("blob", b"PK\x03\x04zip")):
        (folder / name).write_bytes(data)  # by its name in any case, or by its first bytes
        r = cli(*train_args(red_data, "ck", *common, "--resume"))
        assert_one_line_error(r, name, "pickle")
        (folder / name).unlink()


def test_resume_takes_auto_or_nothing():
    from llmdit_cli.cli.train import _resume_mode
    from llmdit_cli.errors import UsageError

    assert _resume_mode(False, ["r.toml"]) == (False, "r.toml")
    assert _resume_mode(True, ["r.toml"]) == (True, "r.toml")
    assert _resume_mode(True, ["auto"]) == ("auto", None)
    assert _resume_mode(True, ["r.toml", "auto"]) == ("auto", "r.toml")
    assert _resume_mode(True, ["auto", "r.toml"]) == ("auto", "r.toml")  # `--resume auto r.toml`
    with pytest.raises(UsageError, match="--resume auto"):
        _resume_mode(False, ["auto"])
    with pytest.raises(UsageError, match="one recipe"):
        _resume_mode(True, ["a.toml", "b.toml"])


def test_loss_weighting_and_checkpoint_offload_flags(cli, red_data):
    common = ["--method", "lora", "--lr", 1e-3, "--max-steps", 3, "--checkpoint-every", 100]
    runs = {
        "plain": ["--gradient-checkpointing"],
        "offload": ["--gradient-checkpointing-offload"],
        "gauss": ["--loss-weighting", "gaussian", "--weighting-center", 0.2, "--weighting-width", 0.1],
    }
    for name, flags in runs.items():
        r = cli(*train_args(red_data, name, *common, *flags))
        assert r.code == 0, r.stderr
    losses = {name: Path(f"{name}/losses.jsonl").read_text() for name in runs}
    assert losses["offload"] == losses["plain"]  # activations in CPU memory: the same arithmetic
    assert losses["gauss"] != losses["plain"]
    saved = next(Path("gauss").rglob("recipe*.toml")).read_text()
    assert 'loss_weighting = "gaussian"' in saved and "weighting_center = 0.2" in saved


def test_resume_from_another_recipe(cli, red_data):
    assert cli(*train_args(red_data, "run", "--max-steps", 4, "--stop-at", 2)).code == 0
    r = cli(*train_args(red_data, "run", "--max-steps", 4, "--lr", 0.5, "--resume"))
    assert_one_line_error(r, "--resume", "another recipe")
    r = cli(*train_args(red_data, "empty", "--max-steps", 4, "--resume"))
    assert_one_line_error(r, "--resume", "no checkpoint")


def test_cache_only_fills_the_cache_and_reuses_it(cli, red_data, tmp_path):
    r = cli(*train_args(red_data, "c", "--cache-dir", "cache", "--cache-only"))
    assert r.code == 0, r.stderr
    files = sorted(p.name for p in Path("cache").rglob("*.safetensors"))
    assert len([f for f in files if f.endswith(".latents.safetensors")]) == 8
    assert len([f for f in files if f.endswith(".embeds.safetensors")]) == 2  # the caption and ""
    mtimes = {p: p.stat().st_mtime_ns for p in Path("cache").rglob("*.safetensors")}
    assert cli(*train_args(red_data, "c", "--cache-dir", "cache", "--cache-only")).code == 0
    assert {p: p.stat().st_mtime_ns for p in Path("cache").rglob("*.safetensors")} == mtimes
    # another resolution is another cache entry, not a stale reuse
    assert cli(*train_args(red_data, "c", "--cache-dir", "cache", "--cache-only", "--resolution", 48)).code == 0
    assert len(list(Path("cache").rglob("*.latents.safetensors"))) == 16
    from llmdit_cli.artifacts import read_stage

    some = next(Path("cache").rglob("*.embeds.safetensors"))
    assert read_stage(str(some), expect="embeds").kind == "embeds"


def test_two_processes_end_identical(red_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29517",
        "-m",
        "llmdit_cli",
        "train",
        "--model",
        "demo",
        "--dataset",
        str(red_data),
        "--resolution",
        "32",
        "--batch-size",
        "2",
        "--method",
        "full",
        "--max-steps",
        "4",
        "--lr",
        "1e-3",
        "-o",
        str(tmp_path / "ddp"),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--json",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    # Only rank 0 reports: one progress line per step, one JSON record (the result).
    assert r.stderr.count("step 4/4") == 1, r.stderr[-3000:]
    assert [json.loads(line)["kind"] for line in r.stdout.splitlines()] == ["model"], r.stdout
    sums = json.loads((tmp_path / "ddp" / "ranks.json").read_text())
    assert len(sums) == 2 and sums["0"] == sums["1"]
    from diffusers import ZImagePipeline

    ZImagePipeline.from_pretrained(tmp_path / "ddp" / "model", local_files_only=True)


def test_two_processes_keep_the_lora_weights_in_checkpoints_and_resume(red_data, tmp_path):
    """With two processes the LoRA checkpoint holds every adapter weight (and only those), and a
    two-process run resumes from it."""
    from safetensors import safe_open

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29519"]
    cmd += ["-m", "llmdit_cli", *[str(a) for a in train_args(red_data, tmp_path / "ddp", "--max-steps", 4)]]
    cmd += ["--batch-size", "2", "--cache-dir", str(tmp_path / "cache")]
    r = subprocess.run([*cmd, "--stop-at", "2"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    with safe_open(str(tmp_path / "ddp" / "checkpoints" / "step-000002" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys), keys[:3]
    r = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len((tmp_path / "ddp" / "losses.jsonl").read_text().splitlines()) == 4


def test_sigterm_saves_a_checkpoint(red_data, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "llmdit_cli",
        "train",
        "--model",
        "demo",
        "--dataset",
        str(red_data),
        "--resolution",
        "32",
        "--batch-size",
        "2",
        "--max-steps",
        "100000",
        "--checkpoint-every",
        "100000",
        "-o",
        str(tmp_path / "run"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    losses = tmp_path / "run" / "losses.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (losses.is_file() and losses.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "checkpoint saved" in err and "--resume" in err
    assert list((tmp_path / "run" / "checkpoints").glob("step-*"))


def test_the_batch_script_passes_the_limit_signal_on_and_waits(red_data, tmp_path):
    """docs/training.md's SLURM script, its last lines run by bash with a local command in place
    of `srun accelerate launch ...`: SIGTERM to the script (SLURM's `B:TERM@120`) reaches the
    training, and the script ends only after the checkpoint is written."""
    import re
    import shlex

    doc = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    script = re.search(r"#SBATCH --job-name=llmdit-train.*?```", doc, flags=re.S).group(0)
    tail = script[script.index("training=$!") :].removesuffix("```")
    command = [sys.executable, "-m", "llmdit_cli", *[str(a) for a in train_args(red_data, tmp_path / "run")]]
    command += ["--max-steps", "100000", "--checkpoint-every", "100000", "--resume", "auto"]
    (tmp_path / "job.sh").write_text(f"{shlex.join(command)} 2> {tmp_path / 'train.log'} &\n{tail}")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(["bash", str(tmp_path / "job.sh")], env=env, cwd=tmp_path)
    losses = tmp_path / "run" / "losses.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (losses.is_file() and losses.stat().st_size > 0):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    log = (tmp_path / "train.log").read_text()
    assert proc.returncode in (130, 143) and "checkpoint saved" in log, log[-2000:]  # 143: bash's own wait, signalled
    assert list((tmp_path / "run" / "checkpoints").glob("step-*")), "the script ended before the checkpoint"


# -- bad input -------------------------------------------------------------------------------------


def write_meta(folder, rows):
    folder.mkdir(exist_ok=True)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_missing_image(cli, tmp_path):
    data = write_meta(tmp_path / "d", [{"file_name": "nope.png", "text": "x"}])
    assert_one_line_error(cli(*train_args(data, "o")), "metadata.jsonl:1", "nope.png not found")


def test_missing_caption(cli, tmp_path):
    data = write_meta(tmp_path / "d", [{"file_name": "a.png"}])
    Image.new("RGB", (32, 32)).save(data / "a.png")
    assert_one_line_error(cli(*train_args(data, "o")), "metadata.jsonl:1", "caption missing")


def test_not_an_image(cli, tmp_path):
    data = write_meta(tmp_path / "d", [{"file_name": "a.png", "text": "x"}])
    (data / "a.png").write_text("text, not pixels")
    assert_one_line_error(cli(*train_args(data, "o")), "a.png is not an image")


def test_no_metadata(cli, tmp_path):
    (tmp_path / "d").mkdir()
    assert_one_line_error(cli(*train_args(tmp_path / "d", "o")), "no metadata.jsonl")


def test_recipe_unknown_key(cli, tmp_path):
    (tmp_path / "r.toml").write_text("[train]\nbatch_size = 2\nlearning_rate = 1\n")
    assert_one_line_error(cli("train", "r.toml"), "r.toml", "unknown key 'train.learning_rate'")
    (tmp_path / "s.toml").write_text("[optim]\nlr = 'fast'\n")
    assert_one_line_error(cli("train", "s.toml"), "s.toml", "optim.lr")
    (tmp_path / "t.toml").write_text("[train\n")
    assert_one_line_error(cli("train", "t.toml"), "t.toml", "not valid TOML")


def test_lora_targets_matching_nothing(cli, red_data):
    r = cli(*train_args(red_data, "o", "--target", "no_such_module", "--max-steps", 2))
    assert_one_line_error(r, "targets", "match no module")
    # the final layer's `adaLN_modulation.0` is its SiLU, not a Linear
    r = cli(*train_args(red_data, "o", "--target", "adaLN_modulation.0", "--max-steps", 2))
    assert_one_line_error(r, "targets", "LoRA cannot adapt", "SiLU")


def test_csv_and_json_metadata(cli, tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 48), (i * 60, 0, 0)).save(d / f"{i}.png")
    (d / "data.csv").write_text("file_name,text\n" + "".join(f"{i}.png,shade {i}\n" for i in range(4)))
    (d / "data.json").write_text(json.dumps([{"file_name": f"{i}.png", "text": f"shade {i}"} for i in range(4)]))
    from llmdit_cli.train.data import load_items

    for table in ("data.csv", "data.json"):
        items = load_items(str(d / table))
        assert [i.caption for i in items] == [f"shade {i}" for i in range(4)]
    r = cli(*train_args(d / "data.csv", "o", "--max-steps", 2, "--resolution", 32))
    assert r.code == 0, r.stderr


def test_buckets_are_multiples_of_16_near_the_area():
    from llmdit_cli.train.data import bucket_sizes, pick_bucket

    sizes = bucket_sizes(512)
    assert all(w % 16 == 0 and h % 16 == 0 for w, h in sizes)
    assert all(0.8 * 512 * 512 <= w * h <= 1.2 * 512 * 512 for w, h in sizes)
    assert pick_bucket(1920, 1080, 512, True)[0] > pick_bucket(1920, 1080, 512, True)[1]
    assert pick_bucket(1920, 1080, 512, False) == (512, 512)


def test_assistant_lora_is_merged_for_training_and_left_out_of_the_result(cli, red_data, tmp_path):
    from helpers import make_lora
    from safetensors.torch import load_file

    from llmdit_cli.models import DEMO_PATH

    adapter = make_lora(DEMO_PATH, tmp_path / "assistant.safetensors", "kohya", seed=3)
    common = ["--method", "full", "--lr", 0.0, "--max-steps", 3]
    assert cli(*train_args(red_data, "plain", *common)).code == 0
    r = cli(*train_args(red_data, "assisted", *common, "--assistant-lora", adapter))
    assert r.code == 0, r.stderr
    losses = [Path(f"{run}/losses.jsonl").read_text() for run in ("plain", "assisted")]
    assert losses[0] != losses[1]  # the adapter took part in training
    base = load_file(str(DEMO_PATH / "transformer" / "diffusion_pytorch_model.safetensors"))
    saved = load_file("assisted/model/transformer/diffusion_pytorch_model.safetensors")
    assert all(torch.allclose(saved[k].float(), base[k].float(), atol=1e-6) for k in base)  # lr 0: adapter removed
    bad = cli(*train_args(red_data, "bad", *common, "--assistant-lora", tmp_path / "missing.safetensors"))
    assert_one_line_error(bad, "--assistant-lora")


def test_datasets_dataset_and_tensorboard(cli, tmp_path):
    datasets = pytest.importorskip("datasets")
    pytest.importorskip("tensorboard")
    images = [Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(4)]
    ds = datasets.Dataset.from_dict(
        {"image": images, "text": [f"shade {i}" for i in range(4)]},
        features=datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")}),
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    from llmdit_cli.train.data import load_items

    items = load_items(f"hf:{tmp_path / 'ds'}")
    assert [i.caption for i in items] == [f"shade {i}" for i in range(4)]
    r = cli(*train_args(f"hf:{tmp_path / 'ds'}", "tb", "--max-steps", 2, "--cache-dir", "cache", "--tensorboard"))
    assert r.code == 0, r.stderr
    assert list(Path("tb").rglob("events.out.tfevents.*"))
    with pytest.raises(Exception, match="no column 'caption'"):
        load_items(f"hf:{tmp_path / 'ds'}", caption_column="caption")


def test_a_recipe_without_a_resolution_trains_at_the_models_image_size(cli, red_data):
    """The demo makes 32 px images: without --resolution it trains at 32, not 1024 (which took the
    demo minutes just to encode its data); --resolution still chooses."""
    import tomllib

    args = ["train", "--model", "demo", "--dataset", red_data, "--batch-size", 4, "--rank", 4, "--max-steps", 1]
    sides = {}
    for name, extra in (("own", []), ("given", ["--resolution", 64])):
        r = cli(*args, *extra, "--cache-dir", f"cache-{name}", "-o", f"run-{name}")
        assert r.code == 0, r.stderr
        sides[name] = tomllib.loads((Path(f"run-{name}") / "recipe.resolved.toml").read_text())["data"]["resolution"]
        shapes = {tuple(latents_of(p).shape[-2:]) for p in (Path(f"cache-{name}") / "latents").glob("*")}
        sides[name + " latents"] = shapes.pop()
        assert not shapes
    assert sides["own"] == 32 and sides["given"] == 64
    assert [2 * n for n in sides["own latents"]] == list(sides["given latents"])  # trained at that size
