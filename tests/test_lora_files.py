"""LoRA files load at the strength they mean: a trained file in diffusers, under ComfyUI's rule and
through `--lora`; `llmdit lora convert` keeps every weight change; `llmdit lora inspect`."""

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, max_diff, random_lora_model
from lora_refs import assert_weights_close, base_weights, comfy_patched, diffusers_fused, peft_merged
from PIL import Image
from safetensors.torch import load_file, save_file

RANK, ALPHA = 4, 16.0
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "w1"]


def run_cli(*args):
    from typer.testing import CliRunner

    from llmdit_cli.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LoRA trained by `llmdit train` (rank 4, alpha 16) and the weights its run ended with."""
    from diffusers import ZImageTransformer2DModel
    from peft import LoraConfig

    from llmdit_cli.models import DEMO_PATH

    root = tmp_path_factory.mktemp("lora-train")
    data = root / "data"
    data.mkdir()
    rows = []
    for i in range(8):
        Image.new("RGB", (32, 32), (200 + 5 * i, 20, 20)).save(data / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": "a red square"})
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = root / "run"
    targets = [x for t in TARGETS for x in ("--target", t)]
    r = run_cli(
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
        run,
        "-q",
        "--rank",
        RANK,
        "--alpha",
        ALPHA,
        *targets,
        "--lr",
        2e-2,
        "--max-steps",
        6,
    )
    assert r.exit_code == 0, r.output
    ckpt = load_file(str(run / "checkpoints" / "step-000006" / "model.safetensors"))
    dit = ZImageTransformer2DModel.from_pretrained(
        DEMO_PATH, subfolder="transformer", local_files_only=True, dtype=torch.float32
    )
    dit.add_adapter(LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS))
    # A LoRA checkpoint holds the trained weights only: every adapter weight, nothing else.
    result = dit.load_state_dict(ckpt, strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if "lora_" in k]
    return {
        "file": run / "pytorch_lora_weights.safetensors",
        "run": run,
        "merged": peft_merged(dit),
        "base": base_weights(DEMO_PATH),
        "dim": dit.config.dim,
    }


def test_diffusers_fuse_gives_the_trained_weights(trained):
    from llmdit_cli.models import DEMO_PATH

    got = diffusers_fused(DEMO_PATH, trained["file"])
    assert_weights_close(got, trained["merged"], trained["base"])
    # the LoRA is not a no-op, and alpha != rank really matters: at scale 1/4 the check would fail
    changed = max((trained["merged"][k] - trained["base"][k]).abs().max().item() for k in trained["base"])
    assert changed > 1e-3


def test_comfyui_rule_gives_the_trained_weights(trained):
    got = comfy_patched(trained["base"], load_file(str(trained["file"])), trained["dim"])
    assert_weights_close(got, trained["merged"], trained["base"])


def test_generate_lora_equals_the_merged_model(trained, tmp_path, cli):
    from diffusers import ZImageTransformer2DModel

    from llmdit_cli.models import DEMO_PATH

    folder = tmp_path / "merged"
    shutil.copytree(DEMO_PATH, folder)
    dit = ZImageTransformer2DModel.from_pretrained(
        DEMO_PATH, subfolder="transformer", local_files_only=True, dtype=torch.float32
    )
    state = dit.state_dict()
    state.update({f"{name}.weight": w for name, w in trained["merged"].items()})
    dit.load_state_dict(state)
    dit.save_pretrained(folder / "transformer")
    common = ["a red square", "-W", 32, "-H", 32, "--seed", 3, "--steps", 2, "--dtype", "float32"]
    assert cli("generate", *common, "--model", "demo", "--lora", trained["file"], "-o", "lora.png").code == 0
    assert cli("generate", *common, "--model", folder, "-o", "merged.png").code == 0
    assert cli("generate", *common, "--model", "demo", "-o", "plain.png").code == 0
    assert max_diff("lora.png", "merged.png") <= 1
    assert max_diff("lora.png", "plain.png") > 1


def test_trained_file_records_rank_and_alpha(trained, cli):
    r = cli("lora", "inspect", trained["file"], "--json")
    assert r.code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["recorded"]["rank"] == RANK and info["recorded"]["alpha"] == ALPHA
    assert info["recorded"]["folded_scale"] == ALPHA / RANK
    assert info["rank"] == [RANK] and info["scale"] == [1.0]
    assert info["loaders"]["diffusers"]["ratio"] == [1.0] and info["loaders"]["comfyui"]["ratio"] == [1.0]
    assert "alpha = 16.0" in (trained["run"] / "recipe.resolved.toml").read_text()


def test_alpha_defaults_to_the_rank_and_help_says_so(cli):
    from llmdit_cli.train.recipe import load_recipe

    assert load_recipe(None, {"lora.rank": 8}).lora.alpha == 8.0
    assert load_recipe(None, {}).lora.alpha == 32.0  # default rank 32
    assert load_recipe(None, {"lora.rank": 8, "lora.alpha": 2.0}).lora.alpha == 2.0
    assert "default: the rank" in " ".join(cli("train", "--help").stdout.replace("│", " ").split())


# -- files from elsewhere ------------------------------------------------------------------------------


def _peft_lora(model_folder, seed=0):
    """A random PEFT LoRA on the tiny model with alpha != rank and per-module ranks/alphas, and the
    weights it means (merged by PEFT itself)."""
    from peft.utils import get_peft_model_state_dict

    config = dict(
        r=4,
        lora_alpha=12,
        target_modules=["to_q", "to_k", "to_v", "to_out.0", "w2"],
        rank_pattern={"layers.1.attention.to_k": 2},
        alpha_pattern={"layers.2.feed_forward.w2": 3},
    )
    dit = random_lora_model(model_folder, seed, **config)
    state = get_peft_model_state_dict(dit)
    return state, config, peft_merged(copy.deepcopy(dit)), dit


def _alpha_of(module: str, config: dict) -> float:
    return float(next((v for k, v in config["alpha_pattern"].items() if module.endswith(k)), config["lora_alpha"]))


def write_source(kind: str, model_folder, folder: Path):
    """A LoRA file in layout `kind` and the weights it means."""
    from diffusers import ZImagePipeline

    state, config, merged, dit = _peft_lora(model_folder)
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "diffusers-metadata":  # what diffusers itself writes for alpha != rank
        ZImagePipeline.save_lora_weights(
            str(folder),
            transformer_lora_layers=state,
            weight_name="src.safetensors",
            transformer_lora_adapter_metadata=dict(config),
        )
        return folder / "src.safetensors", merged
    if kind == "peft-folder":
        save_file(
            {f"base_model.model.{k}": v.contiguous() for k, v in state.items()},
            str(folder / "adapter_model.safetensors"),
        )
        (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
        return folder, merged
    if kind == "kohya-alpha":  # ComfyUI / ai-toolkit style: diffusion_model. + lora_down/up + alpha
        out = {}
        for key, value in state.items():
            stem = "diffusion_model." + key.split(".lora_")[0]
            module = key.split(".lora_")[0]
            out[stem + (".lora_down.weight" if ".lora_A." in key else ".lora_up.weight")] = value.contiguous()
            out[stem + ".alpha"] = torch.tensor(_alpha_of(module, config))
        save_file(out, str(folder / "src.safetensors"))
        return folder / "src.safetensors", merged
    if kind == "kohya-fused-qkv":  # lora_unet_ + original names: one fused qkv LoRA per block
        return _fused_source(model_folder, folder)
    raise AssertionError(kind)


def _fused_source(model_folder, folder: Path):
    base = base_weights(model_folder)
    dim = base["layers.0.attention.to_q"].shape[0]
    gen = torch.Generator().manual_seed(5)
    out, merged = {}, {k: v.clone() for k, v in base.items()}
    for block in ("layers.0", "layers.2", "noise_refiner.0"):
        rank, alpha = 3, 6.0
        down, up = torch.randn(rank, dim, generator=gen) * 0.3, torch.randn(3 * dim, rank, generator=gen) * 0.3
        stem = "lora_unet_" + f"{block}.attention.qkv".replace(".", "_")
        out.update(
            {f"{stem}.lora_down.weight": down, f"{stem}.lora_up.weight": up, f"{stem}.alpha": torch.tensor(alpha)}
        )
        delta = (alpha / rank) * (up @ down)
        for i, proj in enumerate(("to_q", "to_k", "to_v")):
            merged[f"{block}.attention.{proj}"] += delta[i * dim : (i + 1) * dim]
    save_file(out, str(folder / "src.safetensors"))
    return folder / "src.safetensors", merged


SOURCES = ["diffusers-metadata", "peft-folder", "kohya-alpha", "kohya-fused-qkv"]


@pytest.fixture(scope="module")
def tiny_base(tiny_model):
    return base_weights(tiny_model)


@pytest.mark.parametrize("source", SOURCES)
def test_convert_keeps_every_weight_change(source, tiny_model, tiny_base, tmp_path, cli):
    from llmdit_cli.families.zimage.lora import read_lora

    src, want = write_source(source, tiny_model, tmp_path / "src")
    dim = tiny_base["layers.0.attention.to_q"].shape[0]
    for to in ("diffusers", "comfyui", "kohya"):
        dst = tmp_path / f"out.{to}.safetensors"
        r = cli("lora", "convert", src, dst, "--to", to)
        assert r.code == 0, r.stderr
        assert r.stdout.strip() == str(dst)
        sd = load_file(str(dst))
        assert_weights_close(comfy_patched(tiny_base, sd, dim), want, tiny_base)
        if to != "kohya":  # diffusers does not split a fused qkv in lora_down naming (see `lora inspect`)
            assert_weights_close(diffusers_fused(tiny_model, dst), want, tiny_base)
        # what `llmdit generate --lora` hands to diffusers
        assert_weights_close(diffusers_fused(tiny_model, read_lora(dst).diffusers_state()), want, tiny_base)
        info = json.loads(cli("lora", "inspect", dst, "--json").stdout)
        assert info["loaders"]["comfyui"]["ratio"] == [1.0]
        assert info["layout"] == {"diffusers": "diffusers", "comfyui": "comfyui", "kohya": "kohya"}[to]


def test_generate_reads_a_fused_qkv_kohya_file(tiny_model, tiny_base, tmp_path, cli):
    """diffusers alone cannot load this layout; `--lora` can, at the file's strength."""
    from llmdit_cli.families.zimage.lora import read_lora

    src, want = write_source("kohya-fused-qkv", tiny_model, tmp_path)
    assert_weights_close(diffusers_fused(tiny_model, read_lora(src).diffusers_state()), want, tiny_base)
    common = ["a cat", "--model", tiny_model, "-W", 32, "-H", 32, "--seed", 1, "--steps", 2]
    assert cli("generate", *common, "--lora", src, "-o", "a.png").code == 0
    assert cli("generate", *common, "-o", "b.png").code == 0
    assert max_diff("a.png", "b.png") > 1


def test_inspect_tells_which_loader_is_off(tiny_model, tmp_path, cli):
    src, _ = write_source("diffusers-metadata", tiny_model, tmp_path)
    r = cli("lora", "inspect", src)
    assert r.code == 0, r.stderr
    assert "layout: diffusers" in r.stdout and "rank: 2, 4" in r.stdout and "alpha: 3, 12" in r.stdout
    info = json.loads(cli("lora", "inspect", src, "--json").stdout)
    assert info["loaders"]["diffusers"]["ratio"] == [1.0]
    # ComfyUI ignores the metadata and applies scale 1: 1/3 of 12/4 for most modules, 1/6 of 12/2
    # for the rank-2 module, 4/3 of 3/4 for the alpha_pattern module (the range is shown)
    assert info["loaders"]["comfyui"]["ratio"] == [round(1 / 6, 6), round(4 / 3, 6)]
    hint = " ".join(r.stderr.split())
    assert "hint:" in hint and "llmdit lora convert" in hint
    assert set(info["targets"]) == {
        "attention.to_q",
        "attention.to_k",
        "attention.to_v",
        "attention.to_out.0",
        "feed_forward.w2",
    }


def test_lora_bad_input(cli, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    assert_one_line_error(cli("lora", "inspect", bad), str(bad), "not a safetensors LoRA file")
    assert_one_line_error(cli("lora", "inspect", tmp_path / "none.safetensors"), "no such file")
    empty = tmp_path / "empty.safetensors"
    save_file({"something.weight": torch.zeros(2, 2)}, str(empty))
    assert_one_line_error(cli("lora", "convert", empty, "x.safetensors"), "not a LoRA weight")
    half = tmp_path / "half.safetensors"
    save_file({"transformer.layers.0.attention.to_q.lora_A.weight": torch.zeros(2, 8)}, str(half))
    assert_one_line_error(cli("lora", "convert", half, "x.safetensors"), "no lora_B")
    good = tmp_path / "good.safetensors"
    save_file(
        {
            "transformer.layers.0.attention.to_q.lora_A.weight": torch.zeros(2, 8),
            "transformer.layers.0.attention.to_q.lora_B.weight": torch.zeros(8, 2),
        },
        str(good),
    )
    assert_one_line_error(cli("lora", "convert", good, "x.safetensors", "--to", "a1111"), "--to a1111")
    assert not Path("x.safetensors").exists()


def test_awkward_but_valid_files(tiny_model, tiny_base, tmp_path, cli):
    """`model.diffusion_model.` keys are a prefix, not a `.diff` weight; a fused qkv beside split
    q/k/v keys of the same block is a redundant copy and the split keys win (as in diffusers)."""
    from llmdit_cli.families.zimage.lora import read_lora

    src, want = write_source("kohya-alpha", tiny_model, tmp_path / "a")
    sd = {k.replace("diffusion_model.", "model.diffusion_model.", 1): v for k, v in load_file(str(src)).items()}
    dim = tiny_base["layers.0.attention.to_q"].shape[0]
    sd["model.diffusion_model.layers.0.attention.qkv.lora_down.weight"] = torch.ones(2, dim)
    sd["model.diffusion_model.layers.0.attention.qkv.lora_up.weight"] = torch.ones(3 * dim, 2)
    path = tmp_path / "prefixed.safetensors"
    save_file(sd, str(path))
    assert cli("lora", "inspect", path).code == 0
    assert_weights_close(diffusers_fused(tiny_model, read_lora(path).diffusers_state()), want, tiny_base)


def test_bad_alpha_and_duplicate_modules(tmp_path, cli):
    stem = "diffusion_model.layers.0.attention.to_q"
    bad = {
        f"{stem}.lora_down.weight": torch.zeros(2, 8),
        f"{stem}.lora_up.weight": torch.zeros(8, 2),
        f"{stem}.alpha": torch.ones(2),
    }
    save_file(bad, str(tmp_path / "a.safetensors"))
    assert_one_line_error(cli("lora", "inspect", tmp_path / "a.safetensors"), "alpha holds 2 values")
    twice = {
        f"{stem}.lora_down.weight": torch.zeros(2, 8),
        f"{stem}.lora_up.weight": torch.zeros(8, 2),
        "transformer.layers.0.attention.to_q.lora_A.weight": torch.zeros(2, 8),
        "transformer.layers.0.attention.to_q.lora_B.weight": torch.zeros(8, 2),
    }
    save_file(twice, str(tmp_path / "b.safetensors"))
    assert_one_line_error(
        cli("lora", "convert", tmp_path / "b.safetensors", "x.safetensors"),
        "two LoRAs for module layers.0.attention.to_q",
    )
