"""Qwen-Image text-to-image, the third model family: on a tiny folder made from the tiny Qwen parts,
`generate` equals the stock `QwenImagePipeline` (true CFG 4 with the negative prompt " ", and CFG
1), `encode | generate --from-embeds` equals one shot, `--from-png` repeats, a sweep cell equals
`generate`, `serve` makes the same image, and what the family does not offer is refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from helpers import assert_one_line_error, max_diff, pixels

PROMPT = "a red circle on a blue background"
SIZE = ["-W", "64", "-H", "64", "--steps", "2"]


@pytest.fixture(scope="module")
def qwen_t2i(tmp_path_factory):
    """A QwenImagePipeline folder from the tiny Edit-Plus parts (no processor)."""
    from diffusers import QwenImagePipeline

    from llmdit_cli.tiny import build_qwen_image, save_pipeline

    edit = build_qwen_image("edit", seed=5)
    parts = {k: getattr(edit, k) for k in ("scheduler", "vae", "text_encoder", "tokenizer", "transformer")}
    return save_pipeline(QwenImagePipeline(**parts), tmp_path_factory.mktemp("qwen-t2i") / "qwen-image")


def stock_image(folder: Path, cfg: float, seed: int):
    import torch
    from diffusers import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        PROMPT,
        negative_prompt=" ",
        true_cfg_scale=cfg,
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(seed),
    ).images[0]


def generate(cli, folder, out, *extra):
    r = cli("generate", PROMPT, "--model", folder, *SIZE, "--seed", 3, "-o", out, *extra)
    assert r.code == 0, r.stderr
    return r


@pytest.mark.parametrize("cfg", [4.0, 1.0])
def test_generate_equals_the_stock_pipeline(cli, qwen_t2i, tmp_path, cfg):
    import numpy as np

    generate(cli, qwen_t2i, "ours.png", "--guidance-scale", cfg)
    stock = np.asarray(stock_image(qwen_t2i, cfg, 3).convert("RGB")).astype(np.int16)
    assert max_diff(pixels("ours.png"), stock) <= 1


def test_embeddings_equal_the_pipelines_encode_prompt(cli, qwen_t2i):
    """The stock encoding (template, last hidden state, 34 tokens dropped), token for token: the
    images of the tiny model alone would not show one token more or less. Two prompts are encoded
    in one padded batch, so the numbers may differ in the last bits."""
    import torch
    from diffusers import QwenImagePipeline

    from llmdit_cli.artifacts import parse_stage, split_embeds

    r = cli("encode", PROMPT, "a longer prompt about a green square", "--model", qwen_t2i, "-o", "p.embeds.safetensors")
    assert r.code == 0, r.stderr
    cond, uncond = split_embeds(parse_stage(Path("p.embeds.safetensors").read_bytes(), "p", "embeds").tensors())
    pipe = QwenImagePipeline.from_pretrained(qwen_t2i, local_files_only=True)
    for ours, text in zip([*cond, uncond[0]], [PROMPT, "a longer prompt about a green square", " "]):
        stock, mask = pipe.encode_prompt(text, device="cpu")
        assert mask is None and ours.shape == stock[0].shape
        torch.testing.assert_close(ours, stock[0].detach(), rtol=1e-5, atol=1e-5)  # batched with padding


def test_true_cfg_and_the_negative_prompt_change_the_image(cli, qwen_t2i):
    generate(cli, qwen_t2i, "cfg4.png")
    generate(cli, qwen_t2i, "cfg1.png", "--guidance-scale", 1)
    generate(cli, qwen_t2i, "neg.png", "--negative-prompt", "a green square")
    assert max_diff("cfg4.png", "cfg1.png") > 0 and max_diff("cfg4.png", "neg.png") > 0


def test_the_family_defaults_are_the_model_cards(cli, qwen_t2i):
    from llmdit_cli.pngmeta import settings_of

    r = cli("config", "show", "--model", qwen_t2i, "--json")
    assert r.code == 0, r.stderr
    s = {k: v["value"] for k, v in json.loads(r.stdout)["settings"].items()}
    assert (s["generation.steps"], s["generation.guidance_scale"], s["generation.negative_prompt"]) == (50, 4.0, " ")
    assert (s["generation.width"], s["generation.height"], s["encoder.hidden_layer"]) == (1328, 1328, -1)
    generate(cli, qwen_t2i, "a.png")
    record = settings_of(Path("a.png").read_bytes(), "a.png")
    assert (record["guidance_scale"], record["negative_prompt"], record["encoder"]["hidden_layer"]) == (4.0, " ", -1)


def test_encode_then_generate_from_embeds_equals_one_shot(cli, qwen_t2i):
    from llmdit_cli.artifacts import parse_stage

    r = cli("encode", PROMPT, "--model", qwen_t2i, "-o", "p.embeds.safetensors")
    assert r.code == 0, r.stderr
    stage = parse_stage(Path("p.embeds.safetensors").read_bytes(), "p", "embeds")
    assert stage.meta_int("hidden_size") == 32 and len(stage.tensors()) == 2  # the prompt and the negative
    one = generate(cli, qwen_t2i, "one.png")
    assert one.code == 0
    r = cli(
        "generate", "--from-embeds", "p.embeds.safetensors", "--model", qwen_t2i, *SIZE, "--seed", 3, "-o", "two.png"
    )
    assert r.code == 0, r.stderr
    assert max_diff("one.png", "two.png") == 0


def test_from_png_repeats_and_save_latents_decodes(cli, qwen_t2i):
    generate(cli, qwen_t2i, "a.png", "--save-latents", "a.latents.safetensors")
    r = cli("generate", "--from-png", "a.png", "--model", qwen_t2i, "-o", "again.png")
    assert r.code == 0, r.stderr
    assert max_diff("a.png", "again.png") == 0
    r = cli("decode", "a.latents.safetensors", "--model", qwen_t2i, "-o", "decoded.png")
    assert r.code == 0, r.stderr
    assert max_diff("a.png", "decoded.png") == 0


def test_a_sweep_cell_equals_generate(cli, qwen_t2i, tmp_path):
    recipe = tmp_path / "q.toml"
    recipe.write_text(
        f'model = "{qwen_t2i}"\nprompts = ["{PROMPT}"]\nseeds = [3]\n[base]\ngeneration.width = 64\n'
        "generation.height = 64\ngeneration.steps = 2\n[grid]\ngeneration.guidance_scale = [1.0, 4.0]\n"
    )
    r = cli("sweep", recipe, "-o", "runs/q")
    assert r.code == 0, r.stderr
    run = tmp_path / "runs" / "q"
    cells = [json.loads(line) for m in run.glob("manifest*.jsonl") for line in m.read_text().splitlines()]
    assert len(cells) == 2
    for cell in cells:
        generate(cli, qwen_t2i, "g.png", "--guidance-scale", cell["axes"]["generation.guidance_scale"])
        assert max_diff(run / cell["image"], "g.png") == 0


def test_serve_makes_the_same_image(cli, qwen_t2i):
    from helpers import Server

    s = Server("--model", str(qwen_t2i))
    try:
        body = {"prompt": PROMPT, "size": "64x64", "llmdit": {"seed": 3, "steps": 2}}
        status, data = s.json("POST", "/v1/images/generations", body)
    finally:
        s.stop()
    assert status == 200, data
    Path("served.png").write_bytes(base64.b64decode(data["data"][0]["b64_json"]))
    generate(cli, qwen_t2i, "local.png")
    assert max_diff("served.png", "local.png") == 0


@pytest.mark.parametrize(
    "extra,needles",
    [
        (["--slg"], ("--slg", "qwen-image", "skip-layer guidance")),
        (["--slg", "--slg-layers", "70"], ("--slg", "skip-layer guidance")),  # the feature, not the blocks
        (["--dype"], ("--dype", "DyPE")),
        (["--vl-image", "x.png"], ("--vl-image", "vision conditioning")),
    ],
)
def test_what_the_family_lacks_is_refused_in_one_line(cli, qwen_t2i, extra, needles):
    from PIL import Image

    Image.new("RGB", (32, 32)).save("x.png")
    r = cli("generate", PROMPT, "--model", qwen_t2i, *SIZE, "-o", "no.png", *extra)
    assert_one_line_error(r, *needles)
    assert not Path("no.png").exists()


def test_img2img_lora_and_rewrite_are_refused(cli, qwen_t2i, tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 64)).save("in.png")
    r = cli("img2img", PROMPT, "--image", "in.png", "--model", qwen_t2i, "-o", "no.png")
    assert_one_line_error(r, "qwen-image", "img2img")
    (tmp_path / "l.safetensors").write_bytes(b"")
    r = cli("generate", PROMPT, "--model", qwen_t2i, *SIZE, "--lora", tmp_path / "l.safetensors", "-o", "no.png")
    assert r.code != 0 and "Traceback" not in r.stderr
    r = cli("rewrite", "a cat", "--model", qwen_t2i)
    assert_one_line_error(r, "qwen-image", "rewriting")
    assert not Path("no.png").exists()


def test_readme_block_runs_as_written(cli, qwen_t2i, tmp_path):
    """The README's Qwen-Image block, on the tiny folder at 64x64 and 2 steps."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"```bash qwen-image\n(.*?)```", readme, flags=re.S).group(1)
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    assert len(commands) == 4 and all("--model Qwen/Qwen-Image" in c for c in commands)
    for command in commands:
        args = shlex.split(command.replace("Qwen/Qwen-Image", str(qwen_t2i)))[1:]
        extra = [] if args[0] == "encode" else ["-W", "64", "-H", "64", "--steps", "2"]
        r = cli(*args, *extra)
        assert r.code == 0, (command, r.stderr[-2000:])
    assert max_diff("qwen.png", "qwen-again.png") == 0
    assert max_diff("qwen.png", "one-pass.png") > 0


def test_fp8_runs_on_qwen_image_and_stays_close(cli, qwen_t2i):
    """--quantize fp8 on Qwen-Image: the Qwen2.5-VL text encoder's blocks and the transformer's
    (all but the modulation: tests/test_float8.py checks which) in float8, the image close to the
    unquantized one."""
    import re

    from helpers import psnr

    generate(cli, qwen_t2i, "plain.png")
    r = generate(cli, qwen_t2i, "f8.png", "--quantize", "fp8")
    counts = re.search(r"fp8: Linear layers in float8: (\d+) in the text encoder, (\d+) in the transformer", r.stderr)
    assert counts and int(counts[1]) > 0 and int(counts[2]) > 0, r.stderr
    assert 25 < psnr("plain.png", "f8.png") < float("inf")
