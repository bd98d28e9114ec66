"""`llmdit sweep`: recipes, execution through the engine, resume after kills, shards, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import assert_one_line_error, max_diff, pixels

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """
model = "demo"
prompts = ["a red circle on a blue background"]
seeds = [1, 2]
[base]
generation.width = 32
generation.height = 32
[grid]
scheduler.shift = [1.0, 3.0]
generation.steps = [1, 2]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def records(run: Path) -> list[dict]:
    """Every whole manifest record (a line cut short by a kill is left out)."""
    out = []
    for m in sorted(run.glob("manifest*.jsonl")):
        for line in m.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def done_cells(run: Path) -> list[str]:
    return [r["cell"] for r in records(run) if r["status"] == "done"]


def test_minimal_recipe_runs_as_written_and_resumes(cli, tmp_path):
    recipe = write(tmp_path / "mini.toml", MINIMAL)
    r = cli("sweep", recipe, "-q")
    assert r.code == 0, r.stderr
    run = tmp_path / "runs" / "mini"
    assert sorted(p.name for p in run.iterdir()) == ["claims", "images", "manifest.jsonl", "recipe.toml", "run.json"]
    done = records(run)
    assert len(done) == 8 and {d["status"] for d in done} == {"done"}
    assert {(d["axes"]["scheduler.shift"], d["axes"]["generation.steps"], d["seed"]) for d in done} == {
        (s, n, seed) for s in (1.0, 3.0) for n in (1, 2) for seed in (1, 2)
    }
    for d in done:
        assert d["settings"]["shift"] == d["axes"]["scheduler.shift"] and d["settings"]["width"] == 32
    assert len(list((run / "images").iterdir())) == 8
    again = cli("sweep", recipe, "--json")
    assert again.code == 0 and again.stdout == "", again.stderr  # nothing left to do, nothing written
    assert len(records(run)) == 8


def test_each_image_regenerates_from_its_png(cli, tmp_path):
    recipe = write(tmp_path / "mini.toml", MINIMAL)
    assert cli("sweep", recipe, "--limit", 3, "-q").code == 0
    for rec in records(tmp_path / "runs" / "mini"):
        image = tmp_path / "runs" / "mini" / rec["image"]
        r = cli("generate", "--from-png", image, "-o", "again.png", "-q")
        assert r.code == 0, r.stderr
        assert max_diff(pixels(image), pixels("again.png")) == 0


def test_cells_that_share_an_encoding_encode_once(cli, tmp_path, monkeypatch):
    from llmdit_cli.engine import Engine

    calls = []
    original = Engine.encode
    monkeypatch.setattr(
        Engine, "encode", lambda self, req, report=None: calls.append(req) or original(self, req, report)
    )
    recipe = write(tmp_path / "mini.toml", MINIMAL + "encoder.hidden_layer = [-2, -1]\n")
    assert cli("sweep", recipe, "-q").code == 0
    assert len(records(tmp_path / "runs" / "mini")) == 16
    assert sorted(c.settings.settings.encoder.hidden_layer for c in calls) == [-2, -1]


def test_model_axis_loads_each_model_once(cli, tmp_path, tiny_model, monkeypatch):
    from llmdit_cli import workflows

    opened = []
    original = workflows.open_model
    monkeypatch.setattr(workflows, "open_model", lambda r: opened.append(r["model"]) or original(r))
    text = MINIMAL.replace('model = "demo"\n', "").replace("[grid]\n", f'[grid]\nmodel = ["demo", "{tiny_model}"]\n')
    assert cli("sweep", write(tmp_path / "two.toml", text), "-q").code == 0
    assert sorted(opened) == sorted(["demo", str(tiny_model)])
    assert len(done_cells(tmp_path / "runs" / "two")) == 16


def test_shards_are_disjoint_and_complete(cli, tmp_path):
    from llmdit_cli.sweep import recipe as recipes
    from llmdit_cli.sweep.run import Shard

    r = recipes.load(str(write(tmp_path / "mini.toml", MINIMAL + "generation.cfg_truncation = [1.0, 0.5, 0.9]\n")))
    every = [c.id for c in recipes.cells(r)]
    assert len(every) == len(set(every)) == 24
    for n in (1, 2, 3, 5):
        parts = [[c.id for c in recipes.cells(r) if Shard(k, n).takes(c)] for k in range(n)]
        assert sorted(sum(parts, [])) == sorted(every)
    recipe = tmp_path / "mini.toml"
    for k in range(3):
        assert cli("sweep", recipe, "--shard", f"{k}/3", "-q").code == 0
    run = tmp_path / "runs" / "mini"
    assert sorted(p.name for p in run.glob("manifest*")) == [f"manifest.{k}-of-3.jsonl" for k in range(3)]
    assert sorted(done_cells(run)) == sorted(every)
    r = cli("sweep", recipe, "--dry-run")
    assert r.stdout.count(" done ") == 24 and " todo " not in r.stdout


def test_slurm_array_and_torchrun_pick_the_shard():
    from llmdit_cli.sweep.run import Shard, shard_from_env

    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (Shard(3, 4), None)
    assert shard_from_env({"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "5"})[
        0
    ] == Shard(1, 4)
    step = {"SLURM_ARRAY_TASK_ID": "6", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_STEP": "2"}
    assert shard_from_env(step)[0] == Shard(3, 4)  # --array=0-6:2
    from llmdit_cli.errors import UsageError

    for bad in ({**step, "SLURM_ARRAY_TASK_ID": "5"}, {**step, "SLURM_ARRAY_TASK_ID": "x"}):
        with pytest.raises(UsageError):
            shard_from_env(bad)
    assert shard_from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == (Shard(1, 2), "cuda:1")
    assert shard_from_env({}) == (Shard(), None)


def test_kill_at_any_moment_loses_and_duplicates_nothing(tmp_path):
    """A real sweep process killed (SIGKILL) at several points, then rerun to the end: every cell
    is in the manifests exactly once and every PNG is whole."""
    recipe = write(
        tmp_path / "k.toml",
        MINIMAL.replace("[1, 2]\n[base]", "[1, 2, 3]\n[base]") + "generation.cfg_truncation = [1.0, 0.9, 0.8]\n",
    )
    run = tmp_path / "runs" / "k"
    cmd = [sys.executable, "-m", "llmdit_cli", "sweep", str(recipe), "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    counts = []
    for kill_after in (0, 3, 9, 20):  # cells finished (in the manifest) when the kill comes
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (run / "run.json").is_file() and len(done_cells(run)) >= kill_after:
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        counts.append(len(done_cells(run)))
    # each kill cut a run short, the later ones with images already written
    assert counts[-1] < 36 and counts[1] >= 3 and counts == sorted(counts), counts
    final = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    cells = done_cells(run)
    assert len(cells) == len(set(cells)) == 36
    images = sorted((run / "images").iterdir())
    assert len(images) == 36 and not [p for p in images if p.name.startswith(".")]
    from llmdit_cli.pngmeta import settings_of

    for image in images:
        assert settings_of(image.read_bytes(), image.name)["seed"] in (1, 2, 3)


def test_a_corrupt_manifest_line_is_skipped_and_its_cell_redone(cli, tmp_path):
    recipe = write(tmp_path / "mini.toml", MINIMAL)
    assert cli("sweep", recipe, "--limit", 2, "-q").code == 0
    run = tmp_path / "runs" / "mini"
    manifest = run / "manifest.jsonl"
    first, second = manifest.read_text().splitlines()
    manifest.write_text(first + "\n" + second[: len(second) // 2])  # a line cut short by a kill
    r = cli("sweep", recipe, "--limit", 2)
    assert r.code == 0, r.stderr
    assert "manifest.jsonl line 2: not a manifest record; its cell is redone" in r.stderr
    cells = done_cells(run)
    assert sorted(cells) == sorted(
        {json.loads(first)["cell"], json.loads(manifest.read_text().splitlines()[-1])["cell"]}
    )
    assert len(cells) == 2 and len(manifest.read_text().splitlines()) == 3


def test_a_failing_cell_is_recorded_and_the_sweep_goes_on(cli, tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file(
        {"nothing.here.lora_A.weight": torch.zeros(2, 2), "nothing.here.lora_B.weight": torch.zeros(2, 2)},
        tmp_path / "stray.safetensors",
    )
    text = MINIMAL.replace("generation.steps = [1, 2]", 'lora.loras = [[], ["stray.safetensors"]]')
    r = cli("sweep", write(tmp_path / "f.toml", text))
    assert r.code == 1
    recs = records(tmp_path / "runs" / "f")
    assert sorted(rec["status"] for rec in recs) == ["done"] * 4 + ["failed"] * 4
    assert all("stray.safetensors" in rec["error"] for rec in recs if rec["status"] == "failed")
    assert "failed" in r.stderr and "unexpected" not in r.stderr  # the table says it; no error line on top


BAD = [
    ("[grid]\ngeneration.stepz = [1]\n", "unknown key 'generation.stepz' (known in [generation]: width, height, steps"),
    ("[grid]\ngeneration.steps = ['many']\n", "bad value for 'generation.steps' ('many')"),
    ("[grid]\ndype.method = ['spline']\n", "'vision_yarn'"),
    ("[grid]\ngeneration.steps = []\n", "axis 'generation.steps' is empty"),
    (
        "[zip]\ngeneration.steps = [1, 2]\nscheduler.shift = [1.0]\n",
        "need equal lengths (generation.steps has 2, scheduler.shift has 1)",
    ),
    ("[grid]\ngeneration.steps = [0, 1]\n", "[grid] generation.steps: bad value for 'generation.steps' (0)"),
    ("size_factor = 0\n", "bad value for 'size_factor'"),
]


@pytest.mark.parametrize("body,needle", BAD)
def test_bad_recipes_are_one_line_before_any_model_loads(cli, tmp_path, body, needle):
    recipe = write(tmp_path / "bad.toml", 'model = "demo"\nprompts = ["x"]\nseeds = [1]\n' + body)
    r = cli("sweep", recipe)
    assert_one_line_error(r, needle)
    assert not (tmp_path / "runs").exists()  # nothing written


def test_bad_command_lines_and_folders(cli, tmp_path):
    recipe = write(tmp_path / "mini.toml", MINIMAL)
    missing = write(tmp_path / "p.toml", 'model = "demo"\nprompts_file = "nope.txt"\n')
    assert_one_line_error(cli("sweep", missing), "prompts_file", "nope.txt: cannot read")
    assert_one_line_error(cli("sweep", recipe, "--shard", "3/2"), "--shard 3/2: K must be in 0..N-1")
    assert_one_line_error(cli("sweep", recipe, "--shard", "x"), "--shard x: expected K/N")
    assert_one_line_error(cli("sweep", tmp_path / "none.toml"), "none.toml: recipe not found")
    assert cli("sweep", recipe, "--limit", 1, "-q").code == 0
    other = write(tmp_path / "other.toml", MINIMAL.replace("seeds = [1, 2]", "seeds = [5]"))
    r = cli("sweep", other, "-o", "runs/mini")
    assert_one_line_error(r, "runs/mini: holds a run of another recipe", "--force")
    r = cli("sweep", other, "-o", "runs/mini", "--force", "-q")
    assert r.code == 0, r.stderr
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    assert_one_line_error(cli("sweep", recipe, "-o", "plain"), "plain: exists and is not a sweep run folder")


def test_shipped_recipes_run_on_the_demo(cli, tmp_path):
    # demo-*.toml are the recipes that train the demo itself, not sweeps
    recipes = sorted(p for p in (ROOT / "recipes").glob("*.toml") if not p.name.startswith("demo-"))
    assert {p.stem for p in recipes} >= {"dype", "hidden-layers", "hidden-layer-cfg", "shift-steps", "slg"}
    for path in recipes:
        r = cli("sweep", path, "--model", "demo", "--limit", 2, "-o", f"runs/{path.stem}", "-q")
        assert r.code == 0, (path.name, r.stderr)
        assert len(done_cells(tmp_path / "runs" / path.stem)) == 2, path.name
    dype = records(tmp_path / "runs" / "dype")[0]["settings"]
    assert (dype["width"], dype["height"]) == (64, 64)  # 2 x the demo's 32 px


def test_cells_beyond_the_model_are_left_out_with_one_warning(cli, tmp_path):
    r = cli("sweep", ROOT / "recipes" / "hidden-layers.toml", "--model", "demo", "-o", "runs/h")
    assert r.code == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "beyond model demo" in line]
    assert len(warnings) == 1 and "-21, -16, -12, -8, -6" in warnings[0], r.stderr
    assert {rec["axes"]["encoder.hidden_layer"] for rec in records(tmp_path / "runs" / "h")} == {-2}
    r = cli("sweep", ROOT / "recipes" / "hidden-layers.toml", "--model", "demo", "-o", "runs/h2", "--dry-run")
    listed = r.stdout.splitlines()
    assert listed and all(
        (" todo " in line) == ("encoder.hidden_layer=-2 " in line) and (" left-out " in line) != (" todo " in line)
        for line in listed
    ), r.stdout
    assert "sweep hidden-layers: " in r.stderr and not (tmp_path / "runs" / "h2").exists()
    # A model that is not on this machine is not fetched for a dry run: its cells stay todo
    r = cli("sweep", ROOT / "recipes" / "hidden-layer-cfg-quick.toml", "-o", "runs/q", "--dry-run")
    assert r.code == 0 and r.stdout.count(" todo ") == 6, r.stdout + r.stderr
    assert "Tongyi-MAI/Z-Image-Turbo is not on this machine" in " ".join(r.stderr.split())


def test_several_recipes_and_quick_smoke_runs(cli, tmp_path):
    """`llmdit sweep A.toml B.toml --quick`: each recipe's first prompt and seed, every axis, at
    most 2 steps, into RUN-quick; -o with several recipes is refused."""
    a = write(
        tmp_path / "a.toml", MINIMAL.replace('prompts = ["a red circle on a blue background"]', 'prompts = ["x", "y"]')
    )
    b = write(tmp_path / "b.toml", MINIMAL.replace("generation.steps = [1, 2]\n", ""))
    r = cli("sweep", a, b, "--quick", "-q")
    assert r.code == 0, r.stderr
    quick_a, quick_b = records(tmp_path / "runs" / "a-quick"), records(tmp_path / "runs" / "b-quick")
    assert len(quick_a) == 4 and {x["prompt"] for x in quick_a} == {"x"} and {x["seed"] for x in quick_a} == {1}
    assert len(quick_b) == 2 and {x["settings"]["steps"] for x in quick_b} == {2}  # steps: no axis, at most 2
    assert not (tmp_path / "runs" / "a").exists()
    # Rerunning a quick run from the recipe it saved finds the same folder (not a-quick-quick).
    again = cli("sweep", tmp_path / "runs" / "a-quick" / "recipe.toml", "--quick", "-q")
    assert again.code == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["a-quick", "b-quick"]
    assert len(records(tmp_path / "runs" / "a-quick")) == 4
    assert_one_line_error(cli("sweep", a, b, "-o", "one"), "-o names one run folder")
    assert_one_line_error(cli("sweep", a, tmp_path / "missing.toml"), "missing.toml")
    assert not (tmp_path / "runs" / "a").exists()  # every recipe is read before anything runs
