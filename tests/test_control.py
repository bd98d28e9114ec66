"""Z-Image ControlNet and inpainting against diffusers' stock pipelines on the demo model and the
demo ControlNet (`--controlnet demo`, built by `tiny.save_controlnet`): `generate --controlnet` =
ZImageControlNetPipeline, `img2img --mask` = ZImageInpaintPipeline, both = ZImageControlNet-
InpaintPipeline; `--from-png` repeats a ControlNet image; bad input is one line before any load."""

import json
import shutil

import numpy as np
import pytest
from helpers import assert_one_line_error, pixels
from PIL import Image, ImageDraw

PROMPT = "a red circle on a blue background"
W, H = 64, 48


@pytest.fixture(scope="module")
def stock(tmp_path_factory):
    """The stock pipelines over the demo's components and the demo ControlNet; the inputs."""
    from diffusers import (
        ZImageControlNetInpaintPipeline,
        ZImageControlNetModel,
        ZImageControlNetPipeline,
        ZImageInpaintPipeline,
        ZImagePipeline,
    )

    from llmdit_cli.families.zimage.control import DEMO_CONTROLNET
    from llmdit_cli.models import DEMO_PATH

    root = tmp_path_factory.mktemp("control-inputs")
    edges = Image.new("RGB", (W, H), "black")
    ImageDraw.Draw(edges).ellipse((10, 8, 50, 40), outline="white", width=3)
    edges.save(root / "edges.png")
    mask = Image.new("L", (W, H), 0)
    ImageDraw.Draw(mask).rectangle((16, 8, 48, 40), fill=255)
    mask.save(root / "mask.png")
    init = Image.new("RGB", (W, H), (30, 60, 200))
    ImageDraw.Draw(init).rectangle((4, 4, 30, 30), fill=(240, 240, 20))
    init.save(root / "init.png")
    base = ZImagePipeline.from_pretrained(DEMO_PATH)
    parts = {k: getattr(base, k) for k in ("scheduler", "vae", "text_encoder", "tokenizer", "transformer")}
    net = ZImageControlNetModel.from_pretrained(DEMO_CONTROLNET)
    return {
        "root": root,
        "control": ZImageControlNetPipeline(**parts, controlnet=net),
        "inpaint": ZImageInpaintPipeline(**parts),
        "control_inpaint": ZImageControlNetInpaintPipeline(**parts, controlnet=net),
    }


def generator(seed):
    import torch

    return torch.Generator().manual_seed(seed)


def max_diff(stock_image, path) -> int:
    return int(np.abs(np.asarray(stock_image).astype(int) - pixels(path)).max())


def test_generate_with_a_controlnet_equals_the_stock_pipeline(stock, cli):
    root = stock["root"]
    args = ["--controlnet", "demo", "--control-image", root / "edges.png", "--control-scale", "0.9"]
    r = cli("generate", PROMPT, "--model", "demo", *args, "--seed", 3, "--steps", 3, "--guidance-scale", 1.5,
            "-W", W, "-H", H, "-o", "cn.png")  # fmt: skip
    assert r.code == 0, r.stderr
    want = stock["control"](
        PROMPT, control_image=Image.open(root / "edges.png"), controlnet_conditioning_scale=0.9, height=H, width=W,
        num_inference_steps=3, guidance_scale=1.5, generator=generator(3),
    ).images[0]  # fmt: skip
    assert max_diff(want, "cn.png") <= 1
    r = cli("generate", PROMPT, "--model", "demo", "--seed", 3, "--steps", 3, "--guidance-scale", 1.5,
            "-W", W, "-H", H, "-o", "plain.png")  # fmt: skip
    assert np.abs(pixels("plain.png") - pixels("cn.png")).max() > 10  # the ControlNet steered
    record = json.loads(cli("inspect", "cn.png", "--json").stdout)["settings"]
    assert record["control_model"] == "demo" and record["control_scale"] == 0.9
    assert len(record["control_image_sha256"]) == 64


def test_img2img_with_a_mask_equals_the_inpaint_pipeline(stock, cli):
    root = stock["root"]
    r = cli("img2img", PROMPT, "--image", root / "init.png", "--mask", root / "mask.png", "--model", "demo",
            "--seed", 4, "--steps", 4, "--strength", 0.8, "-o", "inpaint.png")  # fmt: skip
    assert r.code == 0, r.stderr
    want = stock["inpaint"](
        PROMPT, image=Image.open(root / "init.png"), mask_image=Image.open(root / "mask.png"), strength=0.8,
        num_inference_steps=4, guidance_scale=0.0, generator=generator(4),
    ).images[0]  # fmt: skip
    assert max_diff(want, "inpaint.png") <= 1
    outside = np.asarray(Image.open(root / "mask.png")) < 128
    r = cli("img2img", PROMPT, "--image", root / "init.png", "--model", "demo", "--seed", 4, "--steps", 4,
            "--strength", 0.8, "-o", "whole.png")  # fmt: skip
    kept = np.abs(pixels("inpaint.png") - pixels(root / "init.png"))[outside].mean()
    changed = np.abs(pixels("whole.png") - pixels(root / "init.png"))[outside].mean()
    assert kept < changed  # the mask kept the input outside it (up to the VAE's round trip)


def test_a_mask_with_a_controlnet_equals_the_controlnet_inpaint_pipeline(stock, cli):
    root = stock["root"]
    r = cli("img2img", PROMPT, "--image", root / "init.png", "--mask", root / "mask.png", "--controlnet", "demo",
            "--control-image", root / "edges.png", "--model", "demo", "--seed", 5, "--steps", 3,
            "-o", "cn-inpaint.png")  # fmt: skip
    assert r.code == 0, r.stderr
    want = stock["control_inpaint"](
        PROMPT, image=Image.open(root / "init.png"), mask_image=Image.open(root / "mask.png"),
        control_image=Image.open(root / "edges.png"), height=H, width=W, num_inference_steps=3, guidance_scale=0.0,
        generator=generator(5),
    ).images[0]  # fmt: skip
    assert max_diff(want, "cn-inpaint.png") <= 1


def test_from_png_repeats_a_controlnet_image_and_checks_its_control_image(stock, cli, tmp_path):
    edges = shutil.copy(stock["root"] / "edges.png", tmp_path / "edges.png")
    args = ["--controlnet", "demo", "--control-image", edges, "--seed", 8, "--steps", 2, "-W", W, "-H", H]
    assert cli("generate", PROMPT, "--model", "demo", *args, "-o", "made.png").code == 0
    r = cli("generate", "--from-png", "made.png", "--model", "demo", "-o", "again.png")
    assert r.code == 0, r.stderr
    assert (pixels("made.png") == pixels("again.png")).all()
    Image.open(edges).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edges)
    r = cli("generate", "--from-png", "made.png", "--model", "demo", "-o", "changed.png")
    assert_one_line_error(r, "--from-png made.png", "control image", "differs", f"--control-image {edges}")


def test_from_png_finds_a_relative_control_image_beside_the_png(cli, tmp_path, monkeypatch):
    made = tmp_path / "made"
    made.mkdir()
    monkeypatch.chdir(made)
    Image.new("RGB", (W, H), "white").save("edges.png")
    args = ["--controlnet", "demo", "--control-image", "edges.png", "--seed", 8, "--steps", 2, "-W", W, "-H", H]
    assert cli("generate", PROMPT, "--model", "demo", *args, "-o", "made.png").code == 0
    monkeypatch.chdir(tmp_path)  # elsewhere: edges.png is not here, but beside the PNG
    r = cli("generate", "--from-png", "made/made.png", "--model", "demo", "-o", "again.png")
    assert r.code == 0, r.stderr
    assert "its control image edges.png is not found from the current folder; using made/edges.png" in " ".join(
        r.stderr.split()
    )
    Image.new("RGB", (W, H), "black").save("other.png")
    r = cli("generate", "--from-png", "made/made.png", "--model", "demo", "--control-image", "other.png", "-o", "o.png")
    assert r.code == 0 and "not found from the current folder" not in " ".join(r.stderr.split())
    assert (pixels("made/made.png") == pixels("again.png")).all()


def test_a_controlnet_folder_that_does_not_fit_is_refused_naming_both(cli, tmp_path):
    from llmdit_cli.tiny import TRANSFORMER, save_controlnet

    other = save_controlnet(tmp_path / "cn", dict(TRANSFORMER), seed=1)  # the tiny test transformer's, not the demo's
    (tmp_path / "edges.png").write_bytes(b"")
    Image.new("RGB", (W, H)).save(tmp_path / "edges.png")
    r = cli("generate", PROMPT, "--model", "demo", "--controlnet", other, "--control-image", tmp_path / "edges.png")
    assert_one_line_error(r, f"--controlnet {other}", "does not fit", "--model demo", "dim")


def test_a_mask_with_a_controlnet_that_cannot_inpaint_is_refused_before_loading(cli, tmp_path, monkeypatch):
    import json

    from llmdit_cli.models import loading
    from llmdit_cli.models.refs import DEMO_PATH
    from llmdit_cli.tiny import save_controlnet

    config = json.loads((DEMO_PATH / "transformer" / "config.json").read_text())
    canny_only = save_controlnet(tmp_path / "cn16", config, control_in_dim=16)  # as the first Union model
    Image.new("RGB", (W, H)).save("init.png")
    Image.new("L", (W, H), 255).save("mask.png")
    monkeypatch.setattr(loading.ModelHandle, "pipeline", lambda *a: pytest.fail("a model loaded"))
    r = cli("img2img", PROMPT, "--image", "init.png", "--mask", "mask.png", "--controlnet", canny_only,
            "--control-image", "init.png", "--model", "demo", "-o", "x.png")  # fmt: skip
    assert_one_line_error(r, f"--controlnet {canny_only} takes 16 control channels; --mask needs 33 (an inpainting")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--control-image", "edges.png"], ["--control-image needs --controlnet"]),
        (["--controlnet", "demo", "--control-image", "missing.png"], ["--control-image missing.png", "no such file"]),
        (["--controlnet", "demo", "--control-image", "notes.txt"], ["--control-image notes.txt", "not an image"]),
        (["--controlnet", "no/such/folder", "--control-image", "edges.png"], ["--controlnet no/such/folder"]),
    ],
)
def test_bad_control_input_is_one_line(cli, args, needles):
    Image.new("RGB", (W, H)).save("edges.png")
    with open("notes.txt", "w") as fh:
        fh.write("not an image")
    assert_one_line_error(cli("generate", PROMPT, "--model", "demo", *args, "-o", "x.png"), *needles)


def test_bad_masks_are_one_line_and_a_size_mismatch_is_a_hint(cli, tmp_path):
    Image.new("RGB", (W, H), "blue").save("init.png")
    Image.new("L", (32, 32), 255).save("small-mask.png")
    r = cli("img2img", PROMPT, "--image", "init.png", "--mask", "missing.png", "--model", "demo", "-o", "x.png")
    assert_one_line_error(r, "--mask missing.png", "no such file")
    (tmp_path / "config.toml").write_text('[default.generation]\nmask = "small-mask.png"\n')
    r = cli("generate", PROMPT, "--model", "demo", "--config", tmp_path / "config.toml", "-o", "x.png")
    assert_one_line_error(r, "mask", "is for img2img")
    r = cli("img2img", PROMPT, "--image", "init.png", "--mask", "small-mask.png", "--model", "demo", "--steps", 2,
            "-o", "hinted.png")  # fmt: skip
    assert r.code == 0, r.stderr
    assert "--mask is 32x32, the image 64x48: the mask is resized to it" in r.stderr


def test_a_sweep_varies_the_control_scale_and_image(cli, tmp_path):
    images = tmp_path / "recipes" / "images"
    images.mkdir(parents=True)
    for name, box in (("ring.png", (10, 8, 50, 40)), ("dot.png", (28, 20, 36, 28))):
        edges = Image.new("RGB", (W, H), "black")
        ImageDraw.Draw(edges).ellipse(box, outline="white", width=3)
        edges.save(images / name)
    recipe = tmp_path / "recipes" / "control.toml"
    recipe.write_text(  # control.image relative to the recipe
        f'prompts = ["{PROMPT}"]\nseeds = [1]\n[base]\ncontrol.model = "demo"\ngeneration.width = {W}\n'
        f"generation.height = {H}\n[grid]\ncontrol.scale = [0.0, 1.5]\n"
        'control.image = ["images/ring.png", "images/dot.png"]\n'
    )
    r = cli("sweep", recipe, "--model", "demo", "-o", "runs/cn", "-q")
    assert r.code == 0, r.stderr
    made = sorted((tmp_path / "runs" / "cn" / "images").glob("*.png"))
    assert len(made) == 4
    by = {}
    for path in made:
        s = json.loads(cli("inspect", path, "--json").stdout)["settings"]
        by[(s["control_scale"], s["control_image"].rsplit("/", 1)[1])] = pixels(path)
    assert (by[(0.0, "ring.png")] == by[(0.0, "dot.png")]).all()  # scale 0: the image does not matter
    assert (by[(1.5, "ring.png")] != by[(1.5, "dot.png")]).any()
    assert (by[(1.5, "ring.png")] != by[(0.0, "ring.png")]).any()


def test_the_server_takes_a_control_image_and_a_mask(stock, cli, tmp_path):
    import base64

    from helpers import Server
    from openai import OpenAI

    root = stock["root"]
    server = Server("--model", "demo", "--controlnet", "demo", "--data-dir", str(tmp_path / "data"), token="cn")
    try:
        edges = "data:image/png;base64," + base64.b64encode((root / "edges.png").read_bytes()).decode()
        body = {"prompt": PROMPT, "size": f"{W}x{H}", "llmdit": {"seed": 6, "steps": 3, "control_image": edges}}
        status, reply = server.json("POST", "/v1/images/generations", body)
        assert status == 200, reply
        (tmp_path / "api.png").write_bytes(base64.b64decode(reply["data"][0]["b64_json"]))
        assert reply["data"][0]["llmdit"]["settings"]["control_image"].startswith("upload:")
        status, reply = server.json("POST", "/v1/images/generations", {**body, "llmdit": {"control_model": "x"}})
        assert status == 400 and reply["error"]["param"] == "llmdit.control_model"  # the server's choice
        # OpenAI's edits: the mask marks what to repaint by transparency
        rgba = Image.new("RGBA", (W, H), (0, 0, 0, 255))
        ImageDraw.Draw(rgba).rectangle((16, 8, 48, 40), fill=(0, 0, 0, 0))
        rgba.save(tmp_path / "openai-mask.png")
        client = OpenAI(base_url=server.url + "/v1", api_key="cn", max_retries=0, timeout=120)
        with open(root / "init.png", "rb") as image, open(tmp_path / "openai-mask.png", "rb") as mask:
            edited = client.images.edit(
                image=image, mask=mask, prompt=PROMPT, response_format="b64_json",
                extra_body={"llmdit": json.dumps({"seed": 7, "steps": 4, "strength": 0.8})},
            )  # fmt: skip
        (tmp_path / "edit.png").write_bytes(base64.b64decode(edited.data[0].b64_json))
    finally:
        server.stop()
    r = cli("generate", PROMPT, "--model", "demo", "--controlnet", "demo", "--control-image", root / "edges.png",
            "--seed", 6, "--steps", 3, "-W", W, "-H", H, "-o", tmp_path / "cli.png")  # fmt: skip
    assert r.code == 0, r.stderr
    assert (pixels(tmp_path / "api.png") == pixels(tmp_path / "cli.png")).all()
    r = cli("img2img", PROMPT, "--image", root / "init.png", "--mask", root / "mask.png", "--model", "demo",
            "--seed", 7, "--steps", 4, "--strength", 0.8, "-o", tmp_path / "cli-edit.png")  # fmt: skip
    assert r.code == 0, r.stderr
    assert (pixels(tmp_path / "edit.png") == pixels(tmp_path / "cli-edit.png")).all()


def test_a_controlnet_without_a_control_image_stays_out_with_a_hint(cli):
    r = cli("generate", PROMPT, "--model", "demo", "--controlnet", "demo", "--seed", 2, "--steps", 2, "-o", "a.png")
    assert r.code == 0 and "--controlnet is not used without --control-image" in r.stderr, r.stderr
    assert cli("generate", PROMPT, "--model", "demo", "--seed", 2, "--steps", 2, "-o", "b.png").code == 0
    assert (pixels("a.png") == pixels("b.png")).all()


def test_a_single_file_controlnet_without_a_config_offline_says_what_to_put_beside_it(stock, cli, tmp_path):
    """The released checkpoints hold no config; offline, diffusers cannot fetch its default."""
    from llmdit_cli.families.zimage.control import DEMO_CONTROLNET

    shutil.copy(DEMO_CONTROLNET / "diffusion_pytorch_model.safetensors", tmp_path / "union.safetensors")
    r = cli("generate", PROMPT, "--model", "demo", "--controlnet", tmp_path / "union.safetensors",
            "--control-image", stock["root"] / "edges.png", "--steps", 2, "-o", tmp_path / "x.png")  # fmt: skip
    assert_one_line_error(r, "no config.json beside the file", "put the checkpoint's config.json next to it")
    assert not (tmp_path / "x.png").exists()


def test_a_single_file_controlnet_with_its_config_beside_it_equals_the_folder(stock, cli, tmp_path):
    from llmdit_cli.families.zimage.control import DEMO_CONTROLNET

    shutil.copy(DEMO_CONTROLNET / "diffusion_pytorch_model.safetensors", tmp_path / "union.safetensors")
    shutil.copy(DEMO_CONTROLNET / "config.json", tmp_path / "config.json")
    common = ["--control-image", stock["root"] / "edges.png", "--seed", 2, "--steps", 2, "-W", W, "-H", H]
    r = cli(
        "generate", PROMPT, "--model", "demo", "--controlnet", tmp_path / "union.safetensors", *common, "-o", "f.png"
    )
    assert r.code == 0, r.stderr
    assert cli("generate", PROMPT, "--model", "demo", "--controlnet", "demo", *common, "-o", "d.png").code == 0
    assert (pixels("f.png") == pixels("d.png")).all()
