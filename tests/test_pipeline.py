"""Stages hand each other files; piping them gives exactly what one command gives."""

import json
import subprocess
import sys

import pytest
from helpers import max_diff, pixels
from PIL import Image

PROMPT = "a red circle on a blue background"


def sh(cmd: str, cwd) -> subprocess.CompletedProcess:
    """Run a shell pipeline with `llmdit` meaning this interpreter's package."""
    llmdit = f"{sys.executable} -m llmdit_cli"
    return subprocess.run(cmd.replace("llmdit ", llmdit + " "), shell=True, cwd=cwd, capture_output=True, timeout=300)


def test_shell_pipe_equals_in_process(tmp_path):
    """`encode -o - | generate --from-embeds -` gives exactly `generate PROMPT` (real processes)."""
    r = sh(
        f'llmdit encode "{PROMPT}" --model demo -o - | llmdit generate --from-embeds - --model demo '
        f'--seed 7 -o a.png && llmdit generate "{PROMPT}" --model demo --seed 7 -o b.png',
        tmp_path,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split() == ["a.png", "b.png"]  # stdout carries only the written paths
    assert (pixels(tmp_path / "a.png") == pixels(tmp_path / "b.png")).all()


@pytest.mark.parametrize("guidance", ["0", "2.5"])
def test_embeds_roundtrip_with_cfg(cli, tiny_model, guidance):
    args = ["--model", tiny_model, "--negative-prompt", "ugly"]
    enc = cli("encode", PROMPT, "-o", "p.embeds.safetensors", *args)
    assert enc.code == 0, enc.stderr
    common = ["--seed", 9, "-W", 32, "-H", 48, "--guidance-scale", guidance, "--steps", 3]
    assert cli("generate", "--from-embeds", "p.embeds.safetensors", *common, *args[:2], "-o", "a.png").code == 0
    assert cli("generate", PROMPT, *common, *args, "-o", "b.png").code == 0
    assert (pixels("a.png") == pixels("b.png")).all()


def test_encode_to_stdout_is_binary_stage_file(cli):
    r = cli("encode", PROMPT, "a green square", "--model", "demo", "-o", "-")
    assert r.code == 0, r.stderr
    from llmdit_cli.artifacts import parse_stage

    stage = parse_stage(r.stdout_bytes, "stdout", expect="embeds")
    assert sorted(stage.shapes) == [
        "negative_prompt_embeds.0",
        "negative_prompt_embeds.1",
        "prompt_embeds.0",
        "prompt_embeds.1",
    ]
    assert stage.params["prompts"] == [PROMPT, "a green square"]
    from helpers import demo_config

    assert stage.meta["llmdit.hidden_size"] == str(demo_config("text_encoder")["hidden_size"])
    # ragged: each item keeps its own token count
    assert stage.shapes["prompt_embeds.0"][0] == stage.params["token_counts"][0]
    assert stage.shapes["prompt_embeds.0"][0] != stage.shapes["prompt_embeds.1"][0]


def test_save_latents_then_decode_gives_the_direct_png(cli):
    r = cli(
        "generate",
        PROMPT,
        "--model",
        "demo",
        "--seed",
        3,
        "--save-latents",
        "x.latents.safetensors",
        "-o",
        "direct.png",
    )
    assert r.code == 0, r.stderr
    assert r.stdout.split() == ["x.latents.safetensors", "direct.png"]
    assert cli("decode", "x.latents.safetensors", "-o", "decoded.png").code == 0
    assert (pixels("direct.png") == pixels("decoded.png")).all()
    assert open("direct.png", "rb").read() == open("decoded.png", "rb").read()  # settings too


def test_decode_several_latents_from_stdin(cli):
    r = cli(
        "generate",
        PROMPT,
        "--model",
        "demo",
        "--seed",
        1,
        "--seed",
        2,
        "--save-latents",
        "-",
        "-o",
        "direct_{seed}.png",
    )
    assert r.code == 0, r.stderr
    assert "direct_1.png" in r.stderr  # paths leave stdout to the binary stream
    d = cli("decode", "-", "-o", "dec_{seed}.png", input=r.stdout_bytes)
    assert d.code == 0, d.stderr
    for s in (1, 2):
        assert (pixels(f"direct_{s}.png") == pixels(f"dec_{s}.png")).all()


def test_img2img_from_latents(cli):
    assert (
        cli(
            "generate", PROMPT, "--model", "demo", "--seed", 3, "--save-latents", "x.latents.safetensors", "-o", "a.png"
        ).code
        == 0
    )
    r = cli(
        "img2img",
        "a green square",
        "--from-latents",
        "x.latents.safetensors",
        "--model",
        "demo",
        "--seed",
        4,
        "--strength",
        0.5,
        "-o",
        "b.png",
    )
    assert r.code == 0, r.stderr
    again = cli(
        "img2img",
        "a green square",
        "--from-latents",
        "x.latents.safetensors",
        "--model",
        "demo",
        "--seed",
        4,
        "--strength",
        0.5,
        "-o",
        "c.png",
    )
    assert again.code == 0
    assert (pixels("b.png") == pixels("c.png")).all()  # reproducible
    assert max_diff("a.png", "b.png") > 0


def test_img2img_strength_zero_keeps_the_input(cli):
    assert cli("generate", PROMPT, "--model", "demo", "--seed", 3, "-o", "a.png").code == 0
    r = cli(
        "img2img", "a green square", "--image", "a.png", "--model", "demo", "--strength", 0, "--seed", 1, "-o", "b.png"
    )
    assert r.code == 0, r.stderr
    r = cli(
        "img2img",
        "a green square",
        "--image",
        "a.png",
        "--model",
        "demo",
        "--strength",
        0.9,
        "--seed",
        1,
        "-o",
        "c.png",
    )
    assert r.code == 0, r.stderr
    assert (pixels("a.png") == pixels("b.png")).all()  # the input itself, not its VAE round trip
    assert max_diff("a.png", "c.png") > 0
    r = cli("img2img", "a green square", "--image", "a.png", "--model", "demo", "--strength", 0, "-W", 32, "-H", 48,
            "-o", "d.png")  # fmt: skip
    assert r.code == 0, r.stderr
    assert Image.open("d.png").size == (32, 48)


def test_from_png_regenerates_the_same_image(cli, tiny_model):
    r = cli(
        "generate",
        PROMPT,
        "--model",
        tiny_model,
        "--seed",
        21,
        "-W",
        48,
        "-H",
        32,
        "--steps",
        3,
        "--guidance-scale",
        2,
        "--negative-prompt",
        "dark",
        "--system-prompt",
        "Draw well.",
        "-o",
        "a.png",
    )
    assert r.code == 0, r.stderr
    assert cli("generate", "--from-png", "a.png", "-o", "b.png").code == 0
    assert (pixels("a.png") == pixels("b.png")).all()
    # a flag given with --from-png overrides the stored value
    assert cli("generate", "--from-png", "a.png", "--seed", 22, "-o", "c.png").code == 0
    assert max_diff("a.png", "c.png") > 0


def test_png_carries_settings_and_a1111_parameters(cli):
    from llmdit_cli.families.zimage import VARIANTS as FAMILIES

    assert cli("generate", PROMPT, "--model", "demo", "--seed", 5, "-o", "a.png").code == 0
    from PIL import Image

    text = Image.open("a.png").text
    settings = json.loads(text["llmdit"])
    assert settings["prompt"] == PROMPT and settings["seed"] == 5 and settings["steps"] == FAMILIES["demo"]["steps"]
    assert text["parameters"].startswith(PROMPT + "\n")
    assert "Seed: 5" in text["parameters"] and "Size: 32x32" in text["parameters"]


def test_several_prompts_and_seeds_follow_the_pattern(cli):
    r = cli(
        "generate",
        "a cat",
        "a dog",
        "--model",
        "demo",
        "--seed",
        1,
        "--num-images",
        2,
        "-o",
        "out/{index}_{seed}_{slug}.png",
    )
    assert r.code == 0, r.stderr
    assert r.stdout.split() == ["out/0_1_a-cat.png", "out/1_2_a-cat.png", "out/2_1_a-dog.png", "out/3_2_a-dog.png"]


def test_folder_output(cli, tmp_path):
    (tmp_path / "imgs").mkdir()
    r = cli("generate", "a cat", "--model", "demo", "--seed", 1, "--seed", 2, "-o", "imgs")
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "imgs").iterdir()) == ["000_1_a-cat.png", "001_2_a-cat.png"]


def test_prompts_from_file_and_stdin(cli, tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\na dog\n")
    r = cli("encode", "--file", "p.txt", "-", "--model", "demo", "-o", "e.embeds.safetensors", input="a bird\n")
    assert r.code == 0, r.stderr
    info = cli("inspect", "e.embeds.safetensors", "--json")
    assert json.loads(info.stdout)["params"]["prompts"] == ["a bird", "a cat", "a dog"]


def test_show_format_matches_the_tokenizer_chat_template(cli):
    r = cli("encode", "--show-format", PROMPT, "--model", "demo")
    assert r.code == 0, r.stderr
    from transformers import AutoTokenizer

    from llmdit_cli.models import DEMO_PATH

    tok = AutoTokenizer.from_pretrained(DEMO_PATH / "tokenizer")
    stock = tok.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    assert r.stdout.startswith(stock)
    assert f"[{len(tok(stock).input_ids)} tokens]" in r.stdout


def test_prompt_knobs_change_the_format(cli):
    r = cli(
        "encode",
        "--show-format",
        "x",
        "--model",
        "demo",
        "--system-prompt",
        "S",
        "--no-enable-thinking",
        "--assistant-content",
        "A",
    )
    assert r.stdout.startswith(
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nx<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\nA"
    )
    r = cli("encode", "--show-format", "x", "--model", "demo", "--thinking-content", "T")
    assert "<|im_start|>assistant\n<think>\nT\n</think>\n\n" in r.stdout


def test_hidden_layer_changes_embeddings(cli):
    from llmdit_cli.artifacts import parse_stage

    a = parse_stage(cli("encode", "x", "--model", "demo", "-o", "-").stdout_bytes, "a").tensors()
    b = parse_stage(cli("encode", "x", "--model", "demo", "-o", "-", "--hidden-layer", -1).stdout_bytes, "b").tensors()
    assert not (a["prompt_embeds.0"] == b["prompt_embeds.0"]).all()


def test_hint_when_embeds_come_from_another_text_encoder(cli, tiny_model, tmp_path):
    from llmdit_cli.tiny import build_pipeline, save_pipeline

    other = save_pipeline(build_pipeline(seed=5), tmp_path / "other")  # same shapes, other weights
    assert cli("encode", "a cat", "--model", tiny_model, "-o", "e.embeds.safetensors").code == 0
    r = cli(
        "generate",
        "--from-embeds",
        "e.embeds.safetensors",
        "--model",
        other,
        "--seed",
        1,
        "-W",
        32,
        "-H",
        32,
        "-o",
        "x.png",
    )
    assert r.code == 0, r.stderr
    assert "hint:" in r.stderr and "another text encoder" in r.stderr
    same = cli(
        "generate",
        "--from-embeds",
        "e.embeds.safetensors",
        "--model",
        tiny_model,
        "--seed",
        1,
        "-W",
        32,
        "-H",
        32,
        "-o",
        "y.png",
    )
    assert same.code == 0 and "another text encoder" not in same.stderr
