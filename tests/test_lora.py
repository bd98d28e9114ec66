"""`--lora` equals stock `load_lora_weights` + `set_adapters`, in both key styles."""

import pytest
import torch
from diffusers import ZImagePipeline
from helpers import as_array, assert_one_line_error, make_lora, max_diff
from safetensors.torch import save_file

PROMPT = "a yellow triangle on a black background"


@pytest.mark.parametrize("style", ["diffusers", "kohya"])
def test_lora_matches_stock(cli, tiny_model, tmp_path, style):
    lora = make_lora(tiny_model, tmp_path / f"{style}.safetensors", style)
    r = cli(
        "generate",
        PROMPT,
        "--model",
        tiny_model,
        "--seed",
        4,
        "-W",
        32,
        "-H",
        32,
        "--steps",
        3,
        "--lora",
        f"{lora}:0.8",
        "-o",
        "lora.png",
    )
    assert r.code == 0, r.stderr
    pipe = ZImagePipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(lora), adapter_name="x")
    pipe.set_adapters(["x"], adapter_weights=[0.8])
    ref = pipe(
        PROMPT,
        height=32,
        width=32,
        num_inference_steps=3,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert max_diff("lora.png", as_array(ref)) <= 1
    assert (
        cli(
            "generate", PROMPT, "--model", tiny_model, "--seed", 4, "-W", 32, "-H", 32, "--steps", 3, "-o", "plain.png"
        ).code
        == 0
    )
    assert max_diff("lora.png", "plain.png") > 1  # the LoRA really acts


def test_two_loras_stack(cli, tiny_model, tmp_path):
    a = make_lora(tiny_model, tmp_path / "a.safetensors", seed=1)
    b = make_lora(tiny_model, tmp_path / "b.safetensors", "kohya", seed=2)
    r = cli(
        "generate",
        PROMPT,
        "--model",
        tiny_model,
        "--seed",
        4,
        "-W",
        32,
        "-H",
        32,
        "--steps",
        2,
        "--lora",
        f"{a}:0.5",
        "--lora",
        str(b),
        "-o",
        "two.png",
    )
    assert r.code == 0, r.stderr
    pipe = ZImagePipeline.from_pretrained(tiny_model, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(a), adapter_name="a")
    pipe.load_lora_weights(str(b), adapter_name="b")
    pipe.set_adapters(["a", "b"], adapter_weights=[0.5, 1.0])
    ref = pipe(
        PROMPT,
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert max_diff("two.png", as_array(ref)) <= 1


def test_lora_missing_file(cli, tiny_model):
    r = cli("generate", "x", "--model", tiny_model, "--lora", "nope.safetensors", "-o", "x.png")
    assert_one_line_error(r, "--lora nope.safetensors: no such file")


def test_lora_unreadable(cli, tiny_model, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not safetensors")
    r = cli("generate", "x", "--model", tiny_model, "--lora", bad, "-o", "x.png")
    assert_one_line_error(r, "--lora", "cannot load")


def test_lora_matching_no_module(cli, tiny_model, tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(
        {
            "transformer.nothing_here.lora_A.weight": torch.zeros(4, 32),
            "transformer.nothing_here.lora_B.weight": torch.zeros(32, 4),
        },
        str(path),
    )
    r = cli("generate", "x", "--model", tiny_model, "--lora", path, "-o", "x.png")
    assert_one_line_error(r, "--lora", "no key matches")
    assert not list(tmp_path.glob("x.png"))
