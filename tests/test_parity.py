"""llmdit's output equals stock diffusers' on the same folder and settings."""

import pytest
import torch
from diffusers import ZImageImg2ImgPipeline, ZImagePipeline
from helpers import as_array, max_diff
from PIL import Image

PROMPT = "a red circle on a blue background"


def stock(folder, cls=ZImagePipeline):
    pipe = cls.from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("guidance", [0.0, 3.5])
def test_generate_matches_stock_pipeline(cli, tiny_model, guidance):
    r = cli(
        "generate",
        PROMPT,
        "--model",
        tiny_model,
        "--seed",
        11,
        "--width",
        64,
        "--height",
        48,
        "--steps",
        3,
        "--guidance-scale",
        guidance,
        "--negative-prompt",
        "blurry",
        "-o",
        "ours.png",
    )
    assert r.code == 0, r.stderr
    ref = stock(tiny_model)(
        PROMPT,
        negative_prompt="blurry",
        height=48,
        width=64,
        num_inference_steps=3,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(11),
    ).images[0]
    assert max_diff("ours.png", as_array(ref)) <= 1


def test_cfg_normalization_and_truncation_match_stock(cli, tiny_model):
    r = cli(
        "generate",
        PROMPT,
        "--model",
        tiny_model,
        "--seed",
        5,
        "--width",
        32,
        "--height",
        32,
        "--steps",
        4,
        "--guidance-scale",
        4,
        "--cfg-normalization",
        1.05,
        "--cfg-truncation",
        0.5,
        "-o",
        "o.png",
    )
    assert r.code == 0, r.stderr
    ref = stock(tiny_model)(
        PROMPT,
        height=32,
        width=32,
        num_inference_steps=4,
        guidance_scale=4.0,
        cfg_normalization=1.05,
        cfg_truncation=0.5,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    assert max_diff("o.png", as_array(ref)) <= 1


def test_img2img_matches_stock_pipeline(cli, tiny_model, tmp_path):
    src = Image.effect_mandelbrot((64, 48), (-2, -1.2, 1, 1.2), 50).convert("RGB")
    src.save("in.png")
    r = cli(
        "img2img",
        PROMPT,
        "--image",
        "in.png",
        "--strength",
        0.7,
        "--model",
        tiny_model,
        "--seed",
        3,
        "--steps",
        5,
        "-o",
        "ours.png",
    )
    assert r.code == 0, r.stderr
    ref = stock(tiny_model, ZImageImg2ImgPipeline)(
        PROMPT,
        image=src,
        strength=0.7,
        num_inference_steps=5,
        guidance_scale=0.0,
        generator=torch.Generator().manual_seed(3),
    ).images[0]
    assert max_diff("ours.png", as_array(ref)) <= 1


def test_stock_comparison_can_fail(cli, tiny_model):
    """Guard: a different seed gives visibly different pixels, so the parity checks have teeth."""
    assert cli("generate", PROMPT, "--model", tiny_model, "--seed", 1, "-W", 32, "-H", 32, "-o", "a.png").code == 0
    assert cli("generate", PROMPT, "--model", tiny_model, "--seed", 2, "-W", 32, "-H", 32, "-o", "b.png").code == 0
    assert max_diff("a.png", "b.png") > 1
