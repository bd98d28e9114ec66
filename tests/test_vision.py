"""Vision conditioning (--vl-*) with the demo's tiny Qwen3-VL, and `rewrite --image`."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from helpers import assert_one_line_error, pixels

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "recipes" / "images" / "vl-reference.png"
PROMPT = "a red circle on a blue background"
MODES = ["linear", "style_only", "graduated", "attention_weighted", "adain"]


def tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def header(cli, path) -> dict:
    r = cli("inspect", path, "--json")
    assert r.code == 0, r.stderr
    return json.loads(r.stdout)


def test_alpha_zero_is_exactly_the_text_only_embeddings(cli):
    assert cli("encode", PROMPT, "--model", "demo", "-o", "text.embeds.safetensors").code == 0
    r = cli(
        "encode", PROMPT, "--model", "demo", "--vl-image", REFERENCE, "--vl-alpha", "0", "-o", "a0.embeds.safetensors"
    )
    assert r.code == 0, r.stderr
    a, b = tensors("text.embeds.safetensors"), tensors("a0.embeds.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    vl = header(cli, "a0.embeds.safetensors")["params"]["vl"]
    assert vl["alpha"] == 0 and vl["model"] == "demo" and len(vl["image_sha256"]) == 64


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_keeps_shape_and_dtype_and_moves_the_embeddings(cli, mode):
    assert cli("encode", PROMPT, "--model", "demo", "-o", "text.embeds.safetensors").code == 0
    out = f"{mode}.embeds.safetensors"
    args = ["--vl-image", REFERENCE, "--vl-model", "demo", "--vl-alpha", "0.5", "--vl-blend-mode", mode]
    r = cli("encode", PROMPT, "--model", "demo", *args, "-o", out)
    assert r.code == 0, r.stderr
    text, blended = tensors("text.embeds.safetensors"), tensors(out)
    for key in text:
        assert blended[key].shape == text[key].shape and blended[key].dtype == text[key].dtype
    assert (blended["negative_prompt_embeds.0"] == text["negative_prompt_embeds.0"]).all()  # negatives stay text
    moved = (blended["prompt_embeds.0"] - text["prompt_embeds.0"]).abs().mean()
    assert moved > 0.01 * text["prompt_embeds.0"].abs().mean(), mode
    assert header(cli, out)["params"]["vl"]["blend_mode"] == mode


def test_blend_keeps_bfloat16_and_a_larger_alpha_moves_further():
    import torch

    from llmdit_cli.vision import blend

    torch.manual_seed(0)
    text, vl = torch.randn(12, 16).to(torch.bfloat16), torch.randn(30, 16)
    for mode in MODES:
        out = blend(text, vl, 0.5, mode)
        assert out.shape == text.shape and out.dtype == torch.bfloat16
        near = (blend(text, vl, 0.2, mode).float() - text.float()).abs().mean()
        far = (blend(text, vl, 0.8, mode).float() - text.float()).abs().mean()
        assert far > near > 0, mode
    assert blend(text, vl, 0.0, "adain") is text


def test_a_blended_file_generates_and_the_image_records_it(cli):
    args = ["--vl-image", REFERENCE, "--vl-alpha", "0.7", "--vl-blend-mode", "attention_weighted"]
    assert cli("encode", PROMPT, "--model", "demo", *args, "-o", "vl.embeds.safetensors").code == 0
    r = cli("generate", "--from-embeds", "vl.embeds.safetensors", "--model", "demo", "--seed", "3", "-o", "file.png")
    assert r.code == 0, r.stderr
    r = cli("generate", PROMPT, "--model", "demo", *args, "--seed", "3", "-o", "direct.png")
    assert r.code == 0, r.stderr
    assert cli("generate", PROMPT, "--model", "demo", "--seed", "3", "-o", "text.png").code == 0
    assert (pixels("file.png") == pixels("direct.png")).all()
    assert (pixels("direct.png") != pixels("text.png")).any()
    stored = header(cli, "direct.png")["settings"]
    assert stored["vl"]["alpha"] == 0.7 and stored["vl"]["blend_mode"] == "attention_weighted"
    r = cli("generate", "--from-png", "direct.png", "--model", "demo", "-o", "again.png")
    assert r.code == 0, r.stderr
    assert (pixels("again.png") == pixels("direct.png")).all()


def test_from_png_refuses_a_vision_image_that_changed(cli, tmp_path):
    import shutil

    from PIL import Image

    ref = shutil.copy(REFERENCE, tmp_path / "ref.png")
    args = ["--model", "demo", "--vl-image", ref, "--vl-alpha", "0.7", "--seed", "3"]
    assert cli("generate", PROMPT, *args, "-o", "made.png").code == 0
    Image.open(ref).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(ref)  # the file changes
    r = cli("generate", "--from-png", "made.png", "--model", "demo", "-o", "again.png")
    assert_one_line_error(r, "--from-png made.png", "differs from the one it was made with", f"--vl-image {ref}")
    assert not (tmp_path / "again.png").exists()
    r = cli("generate", "--from-png", "made.png", "--model", "demo", "--vl-image", ref, "-o", "again.png")
    assert r.code == 0, r.stderr  # named again: the image as it is now


def test_a_sweep_varies_the_vision_settings(cli, tmp_path):
    import shutil

    (tmp_path / "recipes" / "images").mkdir(parents=True)
    shutil.copy(REFERENCE, tmp_path / "recipes" / "images" / "ref.png")
    recipe = tmp_path / "recipes" / "vl.toml"
    recipe.write_text(  # vl.image relative to the recipe
        f'prompts = ["{PROMPT}"]\nseeds = [1]\n[base]\nvl.image = "images/ref.png"\n'
        "[grid]\nvl.alpha = [0.0, 0.8]\nvl.blend_mode = ['linear', 'adain']\n"
    )
    r = cli("sweep", recipe, "--model", "demo", "-o", "runs/vl", "-q")
    assert r.code == 0, r.stderr
    r = cli("compare", "runs/vl", "--rows", "vl.alpha", "--cols", "vl.blend_mode", "-o", "grid.png")
    assert r.code == 0 and "left by another recipe" not in r.stderr, r.stderr  # the run's recipe copy reloads the same
    assert Path("grid.png").is_file()
    images = sorted((tmp_path / "runs" / "vl" / "images").glob("*.png"))
    settings = [header(cli, p)["settings"]["vl"] for p in images]
    by = {(s["alpha"], s["blend_mode"]): p for s, p in zip(settings, images)}
    assert (pixels(by[(0.0, "linear")]) == pixels(by[(0.0, "adain")])).all()
    assert (pixels(by[(0.8, "linear")]) != pixels(by[(0.0, "linear")])).any()
    assert (pixels(by[(0.8, "linear")]) != pixels(by[(0.8, "adain")])).any()  # encodings are not shared across modes


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--vl-image", "missing.png"], "--vl-image missing.png: no such file"),
        (["--vl-image", __file__], "not an image"),
        (["--vl-image", str(REFERENCE), "--vl-blend-mode", "mix"], "--vl-blend-mode"),
        (["--vl-image", str(REFERENCE), "--vl-alpha", "1.5"], "--vl-alpha"),
        (["--vl-image", str(REFERENCE), "--vl-tokens", "pixels"], "--vl-tokens"),
        (["--vl-image", str(REFERENCE), "--vl-hidden-layer", "9"], "--vl-hidden-layer 9"),
        (["--vl-image", str(REFERENCE), "--vl-model", "./no/such/vl"], "--vl-model ./no/such/vl"),
        (["--vl-image", str(REFERENCE), "--api-url", "http://127.0.0.1:9/v1"], "--vl-image"),
    ],
)
def test_bad_vision_input_is_one_line(cli, args, needle):
    r = cli("encode", PROMPT, "--model", "demo", *args, "-o", "x.embeds.safetensors")
    assert_one_line_error(r, needle)
    assert not Path("x.embeds.safetensors").exists()


def test_a_vl_model_of_another_hidden_size_is_one_line(cli, tmp_path):
    from llmdit_cli.tiny import save_qwen3_vl

    folder = save_qwen3_vl(tmp_path / "vl32", hidden_size=32)
    r = cli(
        "encode", PROMPT, "--model", "demo", "--vl-image", REFERENCE, "--vl-model", folder, "-o", "x.embeds.safetensors"
    )
    assert_one_line_error(r, "--vl-model", "hidden size 32", "64")


def test_rewrite_from_an_image_with_the_local_vl_model(cli):
    args = ["--image", REFERENCE, "--model", "demo", "--template", "describe-an-image", "--seed", "5"]
    a = cli("rewrite", *args, "--max-new-tokens", "8")
    b = cli("rewrite", *args, "--max-new-tokens", "8")
    assert a.code == 0, a.stderr
    assert a.stdout == b.stdout and len(a.stdout.splitlines()) == 1  # seeded, one line
    r = cli("rewrite", "a cat", "--image", "missing.png", "--model", "demo")
    assert_one_line_error(r, "--image missing.png: no such file")


def test_rewrite_sends_the_image_to_a_chat_server_as_a_data_url(cli):
    seen = []

    class Chat(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            body = json.dumps({"choices": [{"message": {"role": "assistant", "content": "a yellow disc"}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Chat)
    thread = threading.Thread(target=server.handle_request, daemon=True)  # exactly one request
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/v1"
    r = cli("rewrite", "--image", REFERENCE, "--api-url", url, "--api-model", "qwen3-vl", "--seed", "1")
    thread.join(30)
    server.server_close()
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == "a yellow disc"
    content = seen[0]["messages"][1]["content"]
    assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1] == {"type": "text", "text": "Describe this image."}


def test_vision_flags_with_an_embeds_file_are_refused(cli):
    assert cli("encode", PROMPT, "--model", "demo", "-o", "t.embeds.safetensors").code == 0
    r = cli(
        "generate", "--from-embeds", "t.embeds.safetensors", "--model", "demo", "--vl-image", REFERENCE, "-o", "x.png"
    )
    assert_one_line_error(r, "--from-embeds", "encode")


def test_text_tokens_are_the_prompt_s_own():
    """--vl-tokens text keeps exactly the prompt's tokens: not the chat's role words or markup."""
    import torch

    from llmdit_cli import vision
    from llmdit_cli.pngmeta import image_from_bytes

    model = vision.load("demo", "cpu", torch.float32)
    image = image_from_bytes(REFERENCE.read_bytes(), "ref").convert("RGB")
    inputs = model.chat_inputs(image, PROMPT)
    ids = inputs["input_ids"][0].tolist()
    prompt_ids = model.tokenizer(PROMPT).input_ids
    tail = model.tokenizer(vision.CHAT_TAIL).input_ids
    assert ids[len(ids) - len(tail) - len(prompt_ids) :] == prompt_ids + tail  # the text tokenizes alone
    every = model.states(image, PROMPT, -2, "all")
    text = model.states(image, PROMPT, -2, "text")
    assert text.shape[0] == len(prompt_ids)
    end = len(ids) - len(tail)
    assert torch.equal(text, every[end - len(prompt_ids) : end])
    image_states = model.states(image, PROMPT, -2, "image")
    assert image_states.shape[0] == sum(i == model.model.config.image_token_id for i in ids)


def test_an_offloaded_vl_model_waits_on_the_cpu_and_gives_the_same_states(monkeypatch):
    """With the main model's --cpu-offload the VL model is kept apart (its own cache entry), loaded
    on the CPU, moved to its device only while it runs, and its states are the same."""
    import torch

    from llmdit_cli import vision
    from llmdit_cli.pngmeta import image_from_bytes

    image = image_from_bytes(REFERENCE.read_bytes(), "ref").convert("RGB")
    whole = vision.load("demo", "cpu", torch.float32)
    offloaded = vision.load("demo", "cpu", torch.float32, offload=True)
    assert offloaded is not whole and offloaded.offload and not whole.offload
    moves: list[str] = []
    real_to = offloaded.model.to
    monkeypatch.setattr(offloaded.model, "to", lambda device: moves.append(str(device)) or real_to(device))
    states = offloaded.states(image, PROMPT, -2, "all")
    assert moves == ["cpu", "cpu"]  # to its device for the forward pass, back to the CPU after it
    assert torch.equal(states, whole.states(image, PROMPT, -2, "all"))
    assert {p.device.type for p in offloaded.model.parameters()} == {"cpu"}


def test_vl_device_places_qwen3_vl_and_is_not_recorded(cli):
    args = ["--model", "demo", "--vl-image", REFERENCE, "--vl-alpha", "0.6", "--seed", 4]
    assert cli("generate", PROMPT, *args, "--vl-device", "cpu", "-o", "a.png").code == 0
    assert cli("generate", PROMPT, *args, "-o", "b.png").code == 0
    assert (pixels("a.png") == pixels("b.png")).all()
    assert "device" not in header(cli, "a.png")["settings"]["vl"]
    assert_one_line_error(cli("generate", PROMPT, *args, "--vl-device", "gpu7", "-o", "c.png"), "--vl-device gpu7")
